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
    /// Teaching mode: reveal the flow one hop at a time.
    pub teaching: bool,
    /// The recording being replayed, if the events are not live.
    pub replay: Option<String>,
    /// How fast the events arrive relative to when they happened (a replay's
    /// `--speed`; 1 live), so running times show the recorded clock.
    pub speed: f64,
    /// Watch mode: start the next run this long after a run ends.
    pub watch: Option<Duration>,
}

impl Default for TuiOptions {
    fn default() -> Self {
        TuiOptions {
            theme: "default".into(),
            teaching: false,
            replay: None,
            speed: 1.0,
            watch: None,
        }
    }
}

/// Whether the full-screen UI can run here: stdout is a terminal at least
/// [`view::MIN_WIDTH`] x [`view::MIN_HEIGHT`]. Otherwise use the line view.
pub fn usable() -> bool {
    io::stdout().is_terminal()
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
        theme::cycle(&opts.theme, theme::no_color_env()),
        opts.teaching,
    );
    app.replay = opts.replay.clone();
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
        let mut info = view::ViewInfo::default();
        term.terminal.draw(|f| info = view::draw(f, &st, &app))?;
        app.detail_max_scroll = info.detail_max_scroll;
        app.detail_page = info.detail_page;

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
                            app.note = Some(match copy_to_clipboard(&clip) {
                                Ok(()) => format!("copied {what} for {id} (OSC 52)"),
                                Err(e) => format!("could not copy: {e}"),
                            });
                        }
                    }
                    Some(app::Command::Rerun) => next_run_now = true,
                    None => {}
                },
                Some(Ok(_)) => {} // resize, focus, mouse: just redraw
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("the terminal input thread stopped")),
            },
            _ = tick.tick(), if app.running(&st) || next_run.is_some() => app.tick = app.tick.wrapping_add(1),
            _ = sleep_until_due(next_run) => next_run_now = true,
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
            app.start_rerun(&st);
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

/// Leave the alternate screen and raw mode, show the cursor. Safe to call
/// more than once and from the panic hook.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
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
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let setup = (|| {
            execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
            let mut t = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            t.clear()?;
            Ok(t)
        })();
        match setup {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Reads terminal events on a thread of its own (crossterm's reader blocks)
/// and hands them to the async loop; stops when the loop drops its end.
struct InputThread {
    events: UnboundedReceiver<io::Result<Event>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InputThread {
    fn spawn() -> InputThread {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("meshtrace-input".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) && !tx.is_closed() {
                    match event::poll(Duration::from_millis(50)) {
                        Ok(true) => {
                            if tx.send(event::read()).is_err() {
                                break;
                            }
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                }
            })
            .ok();
        InputThread {
            events: rx,
            stop,
            thread,
        }
    }
}

impl Drop for InputThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // At most one poll interval: no key typed after the UI ends is swallowed.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
