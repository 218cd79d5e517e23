//! The full-screen terminal UI (`-o tui`, the default on a terminal).
//!
//! It consumes only the engine's [`TraceEvent`] stream: every event is folded
//! into a [`TraceState`] (the same pure fold every renderer uses), and each
//! frame is drawn by [`view::draw`] from that state, the UI state ([`App`])
//! and the theme. Probes never touch UI state.
//!
//! The terminal is put back (raw mode off, main screen, cursor shown) when the
//! UI ends, when it fails, and when anything panics while it runs.

pub mod app;
pub mod detail;
pub mod diagram;
pub mod fleet;
pub mod picker;
pub mod teach;
pub mod text;
pub mod theme;
pub mod view;

#[cfg(test)]
mod tests;

pub use app::App;
pub use theme::Theme;

use crate::model::{TraceEvent, TraceReport, TraceState};
use crossterm::event::{self, Event};
use crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::io::{self, IsTerminal, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// How the UI starts.
#[derive(Debug, Clone)]
pub struct TuiOptions {
    /// A built-in theme name (see [`theme::names`]); `NO_COLOR` forces `mono`.
    pub theme: String,
    /// `--theme-file`: slots laid over `theme`, first in the cycle.
    pub theme_file: Option<theme::Overrides>,
    /// Teaching mode: reveal the flow one hop at a time.
    pub teaching: bool,
    /// The recording being replayed, if the events are not live.
    pub replay: Option<String>,
    /// How fast the events arrive relative to when they happened (a replay's
    /// `--speed`; 1 live), so running times show the recorded clock.
    pub speed: f64,
    /// Watch mode: start the next run this long after a run ends.
    pub watch: Option<Duration>,
    /// The running lab, when `b` and `f` may break and fix it.
    pub lab: Option<Arc<crate::lab::session::LabSession>>,
}

impl Default for TuiOptions {
    fn default() -> Self {
        TuiOptions {
            theme: "default".into(),
            theme_file: None,
            teaching: false,
            replay: None,
            speed: 1.0,
            watch: None,
            lab: None,
        }
    }
}

/// Whether the full-screen UI can run here: stdout is a terminal at least
/// [`view::MIN_WIDTH`] x [`view::MIN_HEIGHT`]. Otherwise use the line view.
pub fn usable() -> bool {
    // TERM=dumb: a terminal that cannot move the cursor (Emacs shell, some CI
    // logs); the live line view suits it.
    std::env::var("TERM").map_or(true, |t| t != "dumb")
        && io::stdout().is_terminal()
        && io::stdin().is_terminal()
        && terminal::size().is_ok_and(|(w, h)| w >= view::MIN_WIDTH && h >= view::MIN_HEIGHT)
}

/// Run the UI until the user quits. `rx` is the first run's event stream;
/// `rerun` starts a new run of the engine and returns its stream (`r`).
/// Returns the report of the last run as it stands when the user quits.
pub async fn run_tui<F>(
    rx: UnboundedReceiver<TraceEvent>,
    mut rerun: F,
    opts: TuiOptions,
) -> io::Result<TraceReport>
where
    F: FnMut() -> UnboundedReceiver<TraceEvent>,
{
    let mut app = App::new(
        theme::cycle_with(&opts.theme, opts.theme_file.as_ref(), theme::no_color_env()),
        opts.teaching,
    );
    app.replay = opts.replay.clone();
    app.lab_controls = opts.lab.is_some();
    // A `b` or `f` being carried out on the lab.
    let mut lab_task: Option<tokio::task::JoinHandle<Result<teach::LabDone, String>>> = None;
    let clock_scale = if opts.speed.is_finite() && opts.speed > 0.0 {
        opts.speed
    } else {
        1.0
    };
    let mut st = TraceState::default();
    let mut events = Some(rx);
    let mut run_start = Instant::now();

    // Signals end the UI through the same restore path as `q`, so a killed
    // pane, `timeout` or a dropped ssh session leave a sane terminal.
    let mut signals = Signals::new()?;
    let mut term = TerminalGuard::enter()?;
    let mut input = InputThread::spawn();
    let mut tick = tokio::time::interval(Duration::from_millis(80));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    // Watch mode: when the current run ended, so the next one starts `watch` later.
    let mut ended_at: Option<Instant> = None;
    let mut last_finished: Option<TraceReport> = None;

    loop {
        // A panic anywhere restored the terminal already (the panic hook):
        // drawing on would scribble on the main screen.
        if !ACTIVE.load(Ordering::SeqCst) {
            break;
        }
        if ended_at.is_none() && !app.running(&st) {
            ended_at = Some(Instant::now());
        }
        let next_run = opts.watch.zip(ended_at).map(|(every, at)| at + every);
        app.next_run_in = next_run.map(|due| due.saturating_duration_since(Instant::now()));
        app.now_ms = if st.finished.is_some() {
            st.finished.unwrap_or(0.0)
        } else {
            run_start.elapsed().as_secs_f64() * 1000.0 * clock_scale
        };
        let mut next_run_now = false;
        let mut keep_hop = false;
        let mut info = view::ViewInfo::default();
        term.terminal.draw(|f| info = view::draw(f, &st, &app))?;
        info.apply(&mut app);

        tokio::select! {
            ev = next_event(&mut events) => match ev {
                Some(e) => {
                    st.apply(&e);
                    // Take whatever else is queued before drawing again.
                    if let Some(rx) = events.as_mut() {
                        while let Ok(e) = rx.try_recv() {
                            st.apply(&e);
                        }
                    }
                    app.follow(&st);
                }
                None => {
                    events = None;
                    app.on_stream_closed(&st);
                }
            },
            key = input.events.recv() => match key {
                Some(Ok(Event::Key(k))) => match app.on_key(k, &st) {
                    Some(app::Command::Quit) => break,
                    Some(app::Command::CopyFix(id)) => {
                        let fix = st.result(id).and_then(|r| match &r.finding {
                            Some(f) if !f.commands.is_empty() => Some((
                                f.commands.join("\n"),
                                match f.commands.len() {
                                    1 => "the fix's command".to_string(),
                                    n => format!("the fix's {n} commands"),
                                },
                            )),
                            _ => r.hint.as_deref().map(fix_to_copy),
                        });
                        if let Some((clip, what)) = fix {
                            app.note = Some(copy_and_say(&clip, &what, id));
                        }
                    }
                    Some(app::Command::Rerun) => next_run_now = true,
                    Some(app::Command::Suspend) => term.suspend()?,
                    // Esc with nothing open: Esc never quits (q does).
                    Some(app::Command::Back) => app.note = Some("q quits".into()),
                    Some(c @ (app::Command::Break(_) | app::Command::ApplyFix(_))) => {
                        if let (Some(lab), None) = (&opts.lab, &lab_task) {
                            lab_task = Some(teach::start_lab_task(&mut app, &st, lab.clone(), c, 1));
                        }
                    }
                    None => {}
                },
                Some(Ok(Event::Mouse(m))) => app.on_mouse(m, &st),
                Some(Ok(_)) => {} // resize, focus: just redraw
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("the terminal input thread stopped")),
            },
            _ = tick.tick(), if app.running(&st) || next_run.is_some() => app.tick = app.tick.wrapping_add(1),
            _ = sleep_until_due(next_run) => next_run_now = true,
            done = teach::lab_task_done(&mut lab_task) => {
                lab_task = None;
                keep_hop = teach::on_lab_done(&mut app, done);
                next_run_now = keep_hop;
            }
            sig = signals.recv() => {
                SIGNALLED.store(sig, Ordering::SeqCst);
                break;
            }
        }
        // `r`, or the watch timer: a new run of the engine.
        if next_run_now {
            if st.finished.is_some() {
                last_finished = Some(st.report());
            }
            let note = app.note.take();
            let hop = app.teaching;
            app.start_rerun(&st);
            if keep_hop {
                // After b or f the room stays on the hop it broke or fixed.
                app.teaching = hop;
                if let Some(id) = hop.and_then(app::hop_step) {
                    app.selected = id.index();
                }
                app.note = note;
                app.note_while_running = false;
            }
            st = TraceState::default();
            events = Some(rerun());
            run_start = Instant::now();
            ended_at = None;
        }
    }
    drop(input);
    drop(term);
    // Quitting in the middle of a re-run (or a watch run) reports the last
    // run that finished, not the half of the new one.
    if st.finished.is_none() {
        if let Some(done) = last_finished {
            return Ok(done);
        }
    }
    Ok(st.report())
}

/// Resolves at `due`, never when there is none.
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

async fn next_event(rx: &mut Option<UnboundedReceiver<TraceEvent>>) -> Option<TraceEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What `y` copies from a fix: its commands, one per line, ready to paste;
/// the whole fix when it names no command. With a description for the footer.
pub fn fix_to_copy(hint: &str) -> (String, String) {
    let commands: Vec<String> = text::hint_atoms(hint)
        .into_iter()
        .filter_map(|a| match a {
            text::Atom::Command { words, .. } => Some(words.join(" ")),
            text::Atom::Word(_) => None,
        })
        .collect();
    match commands.len() {
        0 => (hint.to_string(), "the fix".into()),
        1 => (commands[0].clone(), "the fix's command".into()),
        n => (commands.join("\n"), format!("the fix's {n} commands")),
    }
}

/// Sends `clip` as OSC 52 and says only what is known: that it was sent,
/// and, in tmux, whether tmux passes it on at all.
pub(crate) fn copy_and_say(clip: &str, what: &str, id: crate::model::StepId) -> String {
    match copy_to_clipboard(clip) {
        Ok(()) => {
            let tmux = std::env::var_os("TMUX")
                .filter(|v| !v.is_empty())
                .map(|_| tmux_set_clipboard());
            clipboard_note(what, id, tmux)
        }
        Err(e) => format!("could not send {what} to the terminal: {e}"),
    }
}

/// tmux's `set-clipboard` option (`on`, `external`, `off`), or why it
/// could not be read.
fn tmux_set_clipboard() -> Result<String, String> {
    let out = std::process::Command::new("tmux")
        .args(["show", "-gv", "set-clipboard"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("tmux show -gv set-clipboard: {e}"))?;
    if !out.status.success() {
        return Err(format!("tmux show -gv set-clipboard: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the footer says after `y`. OSC 52 has no answer: a terminal that
/// ignores it says nothing, so this never says "copied". `tmux`: inside
/// tmux (`$TMUX` set), its `set-clipboard` setting, which decides whether
/// tmux accepts the sequence from a program (only `on` does).
pub fn clipboard_note(
    what: &str,
    id: crate::model::StepId,
    tmux: Option<Result<String, String>>,
) -> String {
    let sent = format!("sent {what} for {id} by OSC 52");
    match tmux {
        None => format!("{sent}; a terminal without OSC 52 ignores it silently"),
        Some(Ok(v)) if v == "on" => format!(
            "{sent}; tmux has set-clipboard on and passes it to your terminal, which may still ignore it"
        ),
        Some(Ok(v)) => format!(
            "{sent}, but tmux ignores it (set-clipboard {v:?}): tmux set -g set-clipboard on"
        ),
        Some(Err(e)) => format!(
            "{sent}; tmux ignores it unless set-clipboard is on, which could not be read ({e})"
        ),
    }
}

/// Puts `text` on the system clipboard through the terminal (OSC 52), which
/// also works over ssh. Terminals may refuse it (tmux: `set -g set-clipboard on`).
fn copy_to_clipboard(text: &str) -> io::Result<()> {
    use base64::Engine;
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text);
    let mut out = io::stdout();
    write!(out, "\x1b]52;c;{b64}\x07")?;
    out.flush()
}

/// The signal that ended the UI (0: none); the CLI exits 128 + it.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

/// The signal (SIGTERM, SIGINT, SIGHUP or SIGQUIT) that ended the last UI run.
pub fn signalled() -> Option<i32> {
    Some(SIGNALLED.load(Ordering::SeqCst)).filter(|s| *s != 0)
}

/// The signals that end the UI. (In raw mode Ctrl-C is a key, not SIGINT;
/// SIGINT comes from `kill` or a parent such as `timeout`.)
struct Signals(Vec<(i32, tokio::signal::unix::Signal)>);

impl Signals {
    fn new() -> io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            (15, SignalKind::terminate()),
            (2, SignalKind::interrupt()),
            (1, SignalKind::hangup()),
            (3, SignalKind::quit()),
        ];
        let mut out = Vec::new();
        for (n, k) in kinds {
            out.push((n, signal(k)?));
        }
        Ok(Signals(out))
    }

    /// The number of the next signal to arrive.
    async fn recv(&mut self) -> i32 {
        let waits = self.0.iter_mut().map(|(n, s)| {
            let n = *n;
            Box::pin(async move {
                s.recv().await;
                n
            })
        });
        futures::future::select_all(waits).await.0
    }
}

/// Whether the terminal is in the UI's modes now; `restore` is a no-op otherwise.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The full-screen UI owns the terminal now: nothing may write to it
/// (a line on stderr would stay on the screen until it is redrawn).
pub fn on_screen() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Leave the alternate screen and raw mode, show the cursor. Safe to call
/// more than once and from the panic hook.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            io::stdout(),
            event::DisableMouseCapture,
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// Restore the terminal before any panic message is printed, then let the
/// previous hook (the default one prints the message) run.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Owns the terminal while the UI runs; dropping it restores the terminal
/// (on quit, on error and while unwinding).
struct TerminalGuard {
    /// Never dropped: ratatui's Drop shows the cursor and, when that fails
    /// (the terminal is gone), `eprintln!`s, which panics on a dead stderr.
    /// `restore` does what it would, with every error ignored.
    terminal: std::mem::ManuallyDrop<Terminal<CrosstermBackend<Stdout>>>,
}

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        install_panic_hook();
        let setup = (|| {
            take_terminal()?;
            let mut t = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            t.clear()?;
            Ok(t)
        })();
        match setup {
            Ok(terminal) => Ok(TerminalGuard {
                terminal: std::mem::ManuallyDrop::new(terminal),
            }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Ctrl-Z: give the terminal back as it was, stop the process group as
    /// the terminal's own Ctrl-Z would (SIGTSTP), and take the terminal
    /// again once the shell continues it (`fg`), redrawing from scratch.
    /// A process group with no job control (orphaned, e.g. the first
    /// process of a tmux pane) does not stop: the UI just comes back.
    fn suspend(&mut self) -> io::Result<()> {
        restore();
        let stopped = rustix::process::kill_current_process_group(rustix::process::Signal::TSTP);
        take_terminal()?;
        self.terminal.clear()?;
        stopped.map_err(|e| io::Error::other(format!("could not suspend: {e}")))
    }
}

/// Raw mode, the alternate screen, mouse reports, no cursor: the UI's modes.
fn take_terminal() -> io::Result<()> {
    terminal::enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    execute!(
        io::stdout(),
        terminal::EnterAlternateScreen,
        event::EnableMouseCapture,
        cursor::Hide
    )
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Reads terminal events on a thread of its own (crossterm's reader blocks)
/// and hands them to the async loop; stops when the loop drops its end, or
/// with an error when the terminal is gone (a closed pane or ssh session
/// that sent no signal must not leave a process spinning).
struct InputThread {
    events: UnboundedReceiver<io::Result<Event>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl InputThread {
    fn spawn() -> InputThread {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("meshtrace-input".into())
            .spawn(move || {
                // The terminal the UI reads: stdin when it is one (as crossterm
                // does), else the controlling terminal.
                let tty: Option<std::os::fd::OwnedFd> = {
                    use std::io::IsTerminal;
                    use std::os::fd::AsFd;
                    let stdin = io::stdin();
                    if stdin.is_terminal() {
                        stdin.as_fd().try_clone_to_owned().ok()
                    } else {
                        std::fs::File::open("/dev/tty").ok().map(Into::into)
                    }
                };
                while !flag.load(Ordering::Relaxed) && !tx.is_closed() {
                    match event::poll(Duration::from_millis(50)) {
                        Ok(true) => {
                            if tx.send(event::read()).is_err() {
                                break;
                            }
                        }
                        Ok(false) => {
                            if let Some(why) = tty.as_ref().and_then(hung_up) {
                                let _ = tx.send(Err(io::Error::other(why)));
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                }
                let _ = done_tx.send(());
            })
            .ok();
        InputThread {
            events: rx,
            stop,
            thread,
            done,
        }
    }
}

/// The UI ended because its terminal went away: a read or write on it
/// gave EIO, or the input thread saw the hang-up.
pub fn is_hang_up(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) || e.to_string() == HUNG_UP
}

const HUNG_UP: &str = "the terminal hung up";

/// Why the terminal is gone (poll says hang-up, error or a closed fd), or
/// None while it is there.
fn hung_up(tty: &std::os::fd::OwnedFd) -> Option<&'static str> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(tty, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).ok()?;
    let r = fds[0].revents();
    (r.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)).then_some(HUNG_UP)
}

impl Drop for InputThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // At most one poll interval: no key typed after the UI ends is
        // swallowed. A thread stuck in the terminal's reader (a terminal
        // that went away mid-read) is left behind: the process is exiting.
        if let Some(t) = self.thread.take() {
            if self.done.recv_timeout(Duration::from_millis(250)).is_ok() {
                let _ = t.join();
            }
        }
    }
}
