//! The fleet screen (`meshtrace --primary CTX` without `--remote`, on a
//! terminal): one row per remote (status glyph, cluster ID, context, first
//! failure, time); Enter opens that remote's whole trace in the single
//! trace's screen ([`super::view::draw`]), Esc comes back; `r` re-runs the
//! fleet, `/` filters the rows. Like the single screen it reads only the
//! engine's events, each remote's folded into its own [`TraceState`].

use super::app::{self, App};
use super::theme::{self, Theme};
use super::{InputThread, Signals, TerminalGuard, copy_and_say, sleep_until_due};
use crate::model::{FleetRemote, Status, TraceEvent, TraceReport, TraceState, Verdict};
use crate::render::fleet::{context_of, outcome_of, remote_name};
use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// What the event loop must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetCommand {
    Quit,
    Rerun,
    /// Copy the fix of this remote's step (the drill-down's `y`).
    CopyFix(usize, crate::model::StepId),
    /// Ctrl-Z: stop until `fg`.
    Suspend,
    /// `b` (a picker choice) or `f` in this remote's screen, on the lab.
    Lab(usize, app::Command),
}

/// The fleet screen's state: no I/O, no trace data but the folded states.
pub struct FleetUi {
    pub remotes: Vec<FleetRemote>,
    pub states: Vec<TraceState>,
    pub themes: Vec<Theme>,
    pub theme_idx: usize,
    /// Selected row, as an index into [`FleetUi::visible`].
    pub selected: usize,
    pub filter: String,
    /// `/` was typed: keys edit the filter until Enter or Esc.
    pub editing: bool,
    /// The remote whose trace is open, with its screen's state.
    pub drill: Option<(usize, App)>,
    pub run: usize,
    pub tick: usize,
    pub note: Option<String>,
    /// When each remote's trace started and ended in this run.
    pub started: Vec<Option<Instant>>,
    pub watch_in: Option<Duration>,
    /// The `?` overlay.
    pub help: bool,
    /// Where the last draw put the table's first row, and the first row
    /// it showed (it scrolls to keep the selection in view): for the mouse.
    pub rows_at: std::cell::Cell<(ratatui::layout::Rect, usize)>,
    /// Whether a remote's screen offers `b` and `f` (a lab the fleet
    /// screen may break and fix).
    pub lab_controls: bool,
}

impl FleetUi {
    pub fn new(remotes: Vec<FleetRemote>, themes: Vec<Theme>) -> FleetUi {
        let n = remotes.len();
        FleetUi {
            remotes,
            states: vec![TraceState::default(); n],
            themes,
            theme_idx: 0,
            selected: 0,
            filter: String::new(),
            editing: false,
            drill: None,
            run: 1,
            tick: 0,
            note: None,
            started: vec![None; n],
            watch_in: None,
            help: false,
            rows_at: Default::default(),
            lab_controls: false,
        }
    }

    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme_idx]
    }

    pub fn apply(&mut self, i: usize, e: &TraceEvent) {
        if let Some(st) = self.states.get_mut(i) {
            if matches!(e, TraceEvent::TraceStarted { .. }) {
                self.started[i] = Some(Instant::now());
            }
            st.apply(e);
        }
        if let Some((d, app)) = &mut self.drill {
            if *d == i {
                app.follow(&self.states[i]);
            }
        }
    }

    /// Every remote's trace has ended.
    pub fn finished(&self) -> bool {
        self.states.iter().all(|s| s.finished.is_some())
    }

    /// The text a row is filtered on: its name, context and outcome.
    fn row_text(&self, i: usize) -> String {
        format!(
            "{} {} {}",
            remote_name(&self.remotes[i]),
            context_of(&self.remotes[i]),
            self.outcome(i)
        )
        .to_lowercase()
    }

    /// The rows the filter lets through, as indexes into `remotes`.
    pub fn visible(&self) -> Vec<usize> {
        let f = self.filter.to_lowercase();
        (0..self.remotes.len())
            .filter(|i| f.is_empty() || self.row_text(*i).contains(&f))
            .collect()
    }

    fn outcome(&self, i: usize) -> String {
        let st = &self.states[i];
        if st.finished.is_some() {
            return outcome_of(&st.report());
        }
        if self.started[i].is_none() {
            return "waiting (--parallel)".into();
        }
        let running: Vec<&str> = st.running.iter().map(|(id, _)| id.as_str()).collect();
        format!(
            "{} of {} steps; running {}",
            st.results.len(),
            crate::model::STEPS.len(),
            running.join(", ")
        )
    }

    /// The status glyph of row `i` and its style.
    fn mark(&self, i: usize) -> (String, ratatui::style::Style) {
        let st = &self.states[i];
        let t = self.theme();
        if st.finished.is_some() {
            let s = match st.report().verdict {
                Verdict::Pass => Status::Pass,
                Verdict::Warn => Status::Warn,
                Verdict::Fail => Status::Fail,
            };
            return (s.glyph().into(), t.status(s));
        }
        if self.started[i].is_some() {
            return (
                app::SPINNER[self.tick % app::SPINNER.len()].into(),
                t.running,
            );
        }
        ("·".into(), t.pending)
    }

    fn time(&self, i: usize) -> String {
        let st = &self.states[i];
        match (st.finished, self.started[i]) {
            (Some(ms), _) => format!("{ms:.0} ms"),
            (None, Some(at)) => format!("{:.0} ms…", at.elapsed().as_secs_f64() * 1000.0),
            (None, None) => String::new(),
        }
    }

    /// The next run starts: the states start over. `remotes` is the list
    /// the primary registers now (None: it could not be read again, the
    /// rows stay); an open remote stays open when it is still registered.
    pub fn start_rerun(&mut self, remotes: Option<Vec<FleetRemote>>, note: Option<String>) {
        self.run += 1;
        // What the open remote showed, so its screen marks what changed.
        let before = self
            .drill
            .as_ref()
            .and_then(|(i, _)| self.states.get(*i).cloned())
            .unwrap_or_default();
        let mut said = vec![format!("run {} started", self.run)];
        if let Some(now) = remotes {
            said.extend(fleet_changes(&self.remotes, &now));
            let open = self
                .drill
                .as_ref()
                .map(|(i, _)| remote_name(&self.remotes[*i]));
            self.remotes = now;
            let still =
                open.and_then(|name| self.remotes.iter().position(|r| remote_name(r) == name));
            match (&mut self.drill, still) {
                (Some((i, _)), Some(j)) => *i = j,
                (Some(_), None) => {
                    self.drill = None;
                    said.push("the open remote is no longer registered".into());
                }
                (None, _) => {}
            }
        }
        said.extend(note);
        self.note = Some(said.join("; "));
        let n = self.remotes.len();
        self.states = vec![TraceState::default(); n];
        self.started = vec![None; n];
        self.selected = self.selected.min(self.visible().len().saturating_sub(1));
        if let Some((_, app)) = &mut self.drill {
            app.start_rerun(&before);
        }
    }

    /// Apply one key. Returns what the event loop must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<FleetCommand> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) {
            match key.code {
                KeyCode::Char('c') | KeyCode::Char('C') => return Some(FleetCommand::Quit),
                KeyCode::Char('z') | KeyCode::Char('Z') => return Some(FleetCommand::Suspend),
                _ => {}
            }
        }
        if let Some((i, app)) = &mut self.drill {
            let i = *i;
            // The remote's own screen, every key as there; its Esc with
            // nothing left to close comes back to the fleet.
            return match app.on_key(key, &self.states[i]) {
                Some(app::Command::Quit) => Some(FleetCommand::Quit),
                Some(app::Command::Back) => {
                    self.drill = None;
                    None
                }
                Some(app::Command::Rerun) => self.rerun(),
                Some(app::Command::CopyFix(id)) => Some(FleetCommand::CopyFix(i, id)),
                Some(app::Command::Suspend) => Some(FleetCommand::Suspend),
                // Offered only when lab_controls is on (a lab's fleet).
                Some(c @ (app::Command::Break(_) | app::Command::ApplyFix(_))) => {
                    Some(FleetCommand::Lab(i, c))
                }
                None => None,
            };
        }
        if self.help {
            // Any key closes the overlay; q still quits.
            self.help = false;
            return (key.code == KeyCode::Char('q')).then_some(FleetCommand::Quit);
        }
        self.note = None;
        if self.editing {
            app::edit_filter_line(key.code, &mut self.filter, &mut self.editing);
            self.selected = self.selected.min(self.visible().len().saturating_sub(1));
            return None;
        }
        let rows = self.visible();
        match key.code {
            KeyCode::Char('q') => return Some(FleetCommand::Quit),
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.selected = 0;
            }
            // Esc never quits: there is nothing to go back to.
            KeyCode::Esc => self.note = Some("q quits".into()),
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Char('r') => return self.rerun(),
            KeyCode::Char('t') => {
                self.theme_idx = (self.theme_idx + 1) % self.themes.len();
                self.note = Some(format!("theme {}", self.theme().name));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(rows.len().saturating_sub(1))
            }
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = rows.len().saturating_sub(1),
            KeyCode::Enter => self.open(),
            _ => {}
        }
        None
    }

    /// Open the selected remote's trace.
    fn open(&mut self) {
        {
            let rows = self.visible();
            {
                if let Some(&i) = rows.get(self.selected) {
                    let mut app = App::new(self.themes.clone(), false);
                    app.lab_controls = self.lab_controls;
                    app.theme_idx = self.theme_idx;
                    app.run = self.run;
                    app.note = Some("Esc: back to the fleet".into());
                    app.follow(&self.states[i]);
                    if self.states[i].finished.is_some() {
                        app.on_stream_closed(&self.states[i]);
                    }
                    self.drill = Some((i, app));
                }
            }
        }
    }

    /// A mouse event: a click selects the remote under it (a click on the
    /// selected one opens it), the wheel moves the selection; in an open
    /// remote, its screen's mouse.
    pub fn on_mouse(&mut self, m: MouseEvent) {
        if let Some((i, app)) = &mut self.drill {
            app.on_mouse(m, &self.states[*i]);
            return;
        }
        if self.help {
            if matches!(m.kind, MouseEventKind::Down(_)) {
                self.help = false;
            }
            return;
        }
        let n = self.visible().len();
        let (rows, offset) = self.rows_at.get();
        match m.kind {
            MouseEventKind::Down(MouseButton::Left)
                if rows.contains(ratatui::layout::Position::new(m.column, m.row)) =>
            {
                let i = offset + (m.row - rows.y) as usize;
                if i < n {
                    if i == self.selected {
                        self.open();
                    } else {
                        self.selected = i;
                    }
                }
            }
            MouseEventKind::ScrollDown => {
                self.selected = (self.selected + 1).min(n.saturating_sub(1))
            }
            MouseEventKind::ScrollUp => self.selected = self.selected.saturating_sub(1),
            _ => {}
        }
    }

    fn rerun(&mut self) -> Option<FleetCommand> {
        if self.finished() {
            Some(FleetCommand::Rerun)
        } else {
            self.note = Some(
                "the fleet is still running; r re-runs it once every remote has finished".into(),
            );
            None
        }
    }

    /// The reports as they stand, in the order of the remotes.
    pub fn reports(&self) -> Vec<TraceReport> {
        self.states.iter().map(TraceState::report).collect()
    }
}

/// Which remotes came and went between two runs' lists, by name
/// ("new: a; no longer registered: b"), or None when the same.
pub fn fleet_changes(before: &[FleetRemote], now: &[FleetRemote]) -> Option<String> {
    let names = |l: &[FleetRemote]| l.iter().map(remote_name).collect::<Vec<_>>();
    let (a, b) = (names(before), names(now));
    let added: Vec<&str> = b
        .iter()
        .filter(|n| !a.contains(n))
        .map(String::as_str)
        .collect();
    let gone: Vec<&str> = a
        .iter()
        .filter(|n| !b.contains(n))
        .map(String::as_str)
        .collect();
    let mut parts = vec![];
    if !added.is_empty() {
        parts.push(format!("new: {}", added.join(", ")));
    }
    if !gone.is_empty() {
        parts.push(format!("no longer registered: {}", gone.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What `r` (or the watch timer) starts: the next run's events, the
/// remotes it traces when they were read again, and what to say.
pub struct NextRun {
    pub events: UnboundedReceiver<(usize, TraceEvent)>,
    pub remotes: Option<Vec<FleetRemote>>,
    pub note: Option<String>,
}

/// Draws the fleet list (or the open remote's screen, whose layout
/// facts it returns).
pub fn draw(f: &mut Frame, ui: &FleetUi) -> super::view::ViewInfo {
    if let Some((i, app)) = &ui.drill {
        return super::view::draw(f, &ui.states[*i], app);
    }
    let t = ui.theme();
    let area = f.area();
    f.render_widget(Block::default().style(t.background), area);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    let done = ui.states.iter().filter(|s| s.finished.is_some()).count();
    let failed = ui
        .states
        .iter()
        .filter(|s| s.finished.is_some() && s.report().verdict == Verdict::Fail)
        .count();
    let primary = ui
        .states
        .iter()
        .find(|s| !s.target.primary.is_empty())
        .map(|s| s.target.primary.clone())
        .unwrap_or_default();
    let title = format!(
        " meshtrace fleet · primary {primary} · {} remotes · {done} done, {failed} failed · run {}",
        ui.remotes.len(),
        ui.run
    );
    f.render_widget(Paragraph::new(Line::styled(title, t.title)), head);

    let rows_idx = ui.visible();
    let rows: Vec<Row> = rows_idx
        .iter()
        .map(|&i| {
            let (g, gs) = ui.mark(i);
            Row::new(vec![
                Line::styled(g, gs),
                Line::styled(remote_name(&ui.remotes[i]), t.text),
                Line::styled(context_of(&ui.remotes[i]), t.muted),
                Line::styled(ui.outcome(i), t.text),
                Line::styled(ui.time(i), t.muted),
            ])
        })
        .collect();
    let w0 = rows_idx
        .iter()
        .map(|&i| remote_name(&ui.remotes[i]).chars().count())
        .max()
        .unwrap_or(10)
        .clamp(10, 30) as u16;
    let w1 = rows_idx
        .iter()
        .map(|&i| context_of(&ui.remotes[i]).chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 30) as u16;
    let table = Table::new(
        rows,
        [
            Constraint::Length(1),
            Constraint::Length(w0),
            Constraint::Length(w1),
            Constraint::Min(20),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(vec!["", "cluster ID", "context", "first failure", "time"]).style(t.label))
    .row_highlight_style(t.selection)
    .block(
        Block::default()
            .borders(Borders::ALL)
            .border_style(t.border),
    );
    let mut state = TableState::default()
        .with_selected(Some(ui.selected))
        .with_offset(ui.rows_at.get().1);
    f.render_stateful_widget(table, body, &mut state);
    // Rows start under the border and the header row.
    let rows_area = ratatui::layout::Rect {
        x: body.x + 1,
        y: body.y + 2,
        width: body.width.saturating_sub(2),
        height: body.height.saturating_sub(3),
    };
    ui.rows_at.set((rows_area, state.offset()));

    let mut spans = vec![];
    if ui.editing || !ui.filter.is_empty() {
        spans.push(Span::styled(format!(" /{}", ui.filter), t.accent));
        if ui.editing {
            spans.push(Span::styled("▏", t.accent));
        }
        spans.push(Span::styled(
            format!("  {} of {}  ", rows_idx.len(), ui.remotes.len()),
            t.muted,
        ));
    }
    let keys = if ui.editing {
        "type to filter · Enter keep · Esc clear".to_string()
    } else {
        let mut k =
            " ↑↓ select · Enter open · r re-run · / filter · t theme · ? help · q quit".to_string();
        if let Some(w) = ui.watch_in {
            k.push_str(&format!(" · next run in {}s", w.as_secs()));
        }
        k
    };
    // A note takes the place of the keys but help and quit (80 columns
    // hold the keys or a note, not both).
    match &ui.note {
        Some(n) if !ui.editing => {
            spans.push(Span::styled(format!(" {n}"), t.accent));
            spans.push(Span::styled(" · ? help · q quit", t.muted));
        }
        _ => spans.push(Span::styled(keys, t.muted)),
    }
    f.render_widget(Paragraph::new(Line::from(spans)), foot);
    if ui.help {
        super::view::draw_help_table(f, area, t, FLEET_HELP, None);
    }
    super::view::ViewInfo::default()
}

/// The fleet's `?` overlay.
pub const FLEET_HELP: &[(&str, &str)] = &[
    ("↑ ↓  j k  wheel", "select a remote"),
    ("g G  Home End", "first / last remote"),
    ("Enter  click", "open that remote's trace; Esc comes back"),
    ("/", "filter: cluster ID, context or failure"),
    ("Esc", "back: clear the filter, leave a remote; never quits"),
    ("r", "re-read the remotes and re-run (once all finished)"),
    ("t", "next theme"),
    ("Ctrl-Z", "suspend (fg resumes)"),
    ("?  F1", "this help (any key closes it)"),
    (
        "q  Ctrl-C",
        "quit; the fleet's text stays in the scrollback",
    ),
];

/// Runs the fleet screen until the user quits. `rx` is the first run's
/// events; `rerun` reads the remotes again and starts a new run (`r`, or
/// the watch timer). Returns the last finished run's remotes and reports.
pub async fn run_fleet_tui<F, Fut>(
    rx: UnboundedReceiver<(usize, TraceEvent)>,
    mut rerun: F,
    remotes: Vec<FleetRemote>,
    opts: super::TuiOptions,
) -> io::Result<(Vec<FleetRemote>, Vec<TraceReport>)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = NextRun>,
{
    let themes = theme::cycle_with(&opts.theme, opts.theme_file.as_ref(), theme::no_color_env());
    let mut ui = FleetUi::new(remotes, themes);
    ui.lab_controls = opts.lab.is_some();
    // A `b` or `f` being carried out on the lab.
    let mut lab_task = None;
    // Set when a lab task's re-run starts: the open remote keeps its note.
    let mut lab_note: Option<String> = None;
    let mut events = Some(rx);
    let mut signals = Signals::new()?;
    let mut term = TerminalGuard::enter()?;
    let mut input = InputThread::spawn();
    let mut tick = tokio::time::interval(Duration::from_millis(80));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ended_at: Option<Instant> = None;
    let mut last_finished: Option<(Vec<FleetRemote>, Vec<TraceReport>)> = None;
    loop {
        if !super::ACTIVE.load(Ordering::SeqCst) {
            break;
        }
        if ended_at.is_none() && ui.finished() {
            ended_at = Some(Instant::now());
        }
        let next_run = opts.watch.zip(ended_at).map(|(every, at)| at + every);
        ui.watch_in = next_run.map(|d| d.saturating_duration_since(Instant::now()));
        if let Some((i, app)) = &mut ui.drill {
            let st = &ui.states[*i];
            app.now_ms = st.finished.unwrap_or_else(|| {
                ui.started[*i].map_or(0.0, |s| s.elapsed().as_secs_f64() * 1000.0)
            });
        }
        let mut info = super::view::ViewInfo::default();
        term.terminal.draw(|f| info = draw(f, &ui))?;
        if let Some((_, app)) = &mut ui.drill {
            info.apply(app);
        }
        let mut next_run_now = false;
        tokio::select! {
            ev = next_event(&mut events) => match ev {
                Some((i, e)) => {
                    ui.apply(i, &e);
                    if let Some(rx) = events.as_mut() {
                        while let Ok((i, e)) = rx.try_recv() {
                            ui.apply(i, &e);
                        }
                    }
                }
                None => {
                    events = None;
                    if let Some((i, app)) = &mut ui.drill {
                        app.on_stream_closed(&ui.states[*i]);
                    }
                }
            },
            key = input.events.recv() => match key {
                Some(Ok(Event::Key(k))) => match ui.on_key(k) {
                    Some(FleetCommand::Quit) => break,
                    Some(FleetCommand::Rerun) => next_run_now = true,
                    Some(FleetCommand::Suspend) => term.suspend()?,
                    Some(FleetCommand::Lab(i, c)) => {
                        if let (Some(lab), None, Some((_, app))) = (&opts.lab, &lab_task, &mut ui.drill) {
                            // The fault goes on the remote that is open.
                            let at = ui.remotes.get(i)
                                .and_then(|r| r.cluster_id.as_deref())
                                .and_then(|id| lab.remote_index(id))
                                .unwrap_or(1);
                            lab_task = Some(super::teach::start_lab_task(app, &ui.states[i], lab.clone(), c, at));
                        }
                    }
                    Some(FleetCommand::CopyFix(i, id)) => {
                        let fix = ui.states[i].result(id).and_then(|r| r.finding.as_ref())
                            .filter(|f| !f.commands.is_empty())
                            .map(|f| f.commands.join("\n"));
                        if let (Some(clip), Some((_, app))) = (fix, &mut ui.drill) {
                            app.note = Some(copy_and_say(&clip, "the fix", id));
                        }
                    }
                    None => {}
                },
                Some(Ok(Event::Mouse(m))) => ui.on_mouse(m),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("the terminal input thread stopped")),
            },
            _ = tick.tick(), if !ui.finished() || next_run.is_some() => {
                ui.tick = ui.tick.wrapping_add(1);
                if let Some((_, app)) = &mut ui.drill {
                    app.tick = app.tick.wrapping_add(1);
                }
            },
            _ = sleep_until_due(next_run) => next_run_now = true,
            done = super::teach::lab_task_done(&mut lab_task) => {
                lab_task = None;
                if let Some((_, app)) = &mut ui.drill {
                    next_run_now = super::teach::on_lab_done(app, done);
                    if next_run_now {
                        lab_note = app.note.clone();
                    }
                }
            },
            sig = signals.recv() => {
                super::SIGNALLED.store(sig, Ordering::SeqCst);
                break;
            }
        }
        if next_run_now {
            if ui.finished() {
                last_finished = Some((ui.remotes.clone(), ui.reports()));
            }
            ui.note = Some("reading the remotes the primary registers…".into());
            term.terminal.draw(|f| {
                draw(f, &ui);
            })?;
            let next = rerun().await;
            ui.start_rerun(next.remotes, next.note);
            if let (Some(note), Some((_, app))) = (lab_note.take(), &mut ui.drill) {
                // After b or f the room reads what was done, not "run N started".
                app.note = Some(note);
                app.note_while_running = false;
            }
            events = Some(next.events);
            ended_at = None;
        }
    }
    drop(input);
    drop(term);
    if !ui.finished() {
        if let Some(done) = last_finished {
            return Ok(done);
        }
    }
    Ok((ui.remotes.clone(), ui.reports()))
}

async fn next_event(
    rx: &mut Option<UnboundedReceiver<(usize, TraceEvent)>>,
) -> Option<(usize, TraceEvent)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{STEPS, StepResult, Target};

    fn remote(id: &str, ctx: Option<&str>) -> FleetRemote {
        FleetRemote {
            cluster_id: Some(id.into()),
            secret: None,
            server: None,
            context: ctx.map(Into::into),
            context_rule: String::new(),
        }
    }

    fn finish(ui: &mut FleetUi, i: usize, fail: Option<crate::model::StepId>) {
        ui.apply(
            i,
            &TraceEvent::started(Target {
                primary: "lab-primary".into(),
                remote: format!("ctx-{i}"),
                ..Default::default()
            }),
        );
        for s in STEPS {
            let status = if Some(s.id) == fail {
                Status::Fail
            } else {
                Status::Pass
            };
            ui.apply(
                i,
                &TraceEvent::StepFinished {
                    result: StepResult {
                        id: s.id,
                        title: s.title.into(),
                        status,
                        duration_ms: 1.0,
                        started_ms: 0.0,
                        evidence: Default::default(),
                        finding: (status == Status::Fail).then(|| {
                            crate::findings::Finding::generic(s.id, "timeout", "no answer")
                        }),
                        diagnosis: None,
                        hint: None,
                        link: s.id.doc_link(),
                        blocked_by: vec![],
                    },
                },
            );
        }
        ui.apply(i, &TraceEvent::finished(12.0));
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn ui3() -> FleetUi {
        let mut ui = FleetUi::new(
            vec![
                remote("remote-1", Some("lab-remote-1")),
                remote("remote-2", Some("lab-remote-2")),
                remote("remote-3", None),
            ],
            theme::cycle("mono", true),
        );
        finish(&mut ui, 0, None);
        finish(&mut ui, 1, Some(crate::model::StepId::RemoteRbac));
        ui
    }

    fn screen(ui: &FleetUi) -> String {
        screen_at(ui, 110, 30)
    }

    fn screen_at(ui: &FleetUi, w: u16, h: u16) -> String {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
        t.draw(|f| {
            draw(f, ui);
        })
        .unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn one_row_per_remote_with_glyph_first_failure_and_time() {
        let ui = ui3();
        let s = screen(&ui);
        assert!(s.contains("3 remotes · 2 done, 1 failed"), "{s}");
        let row = |id: &str| s.lines().find(|l| l.contains(id)).unwrap().to_string();
        assert!(
            row("remote-1").contains("✔") && row("remote-1").contains("every step passed"),
            "{s}"
        );
        assert!(row("remote-1").contains("12 ms"), "{s}");
        assert!(
            row("remote-2").contains("✘") && row("remote-2").contains("remote-rbac/timeout"),
            "{s}"
        );
        assert!(
            row("remote-3").contains("(no context)") && row("remote-3").contains("waiting"),
            "{s}"
        );
    }

    #[test]
    fn slash_filters_enter_opens_esc_comes_back() {
        let mut ui = ui3();
        ui.on_key(key(KeyCode::Char('/')));
        for c in "rbac".chars() {
            ui.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(ui.visible(), [1]);
        ui.on_key(key(KeyCode::Enter));
        assert!(!ui.editing && ui.drill.is_none());
        assert!(screen(&ui).contains("/rbac"));
        ui.on_key(key(KeyCode::Enter));
        assert_eq!(ui.drill.as_ref().map(|d| d.0), Some(1));
        // The remote's own screen: its steps.
        assert!(screen(&ui).contains("remote-rbac"), "{}", screen(&ui));
        assert_eq!(ui.on_key(key(KeyCode::Esc)), None);
        assert!(ui.drill.is_none());
        // Esc clears the filter before it quits.
        ui.on_key(key(KeyCode::Esc));
        assert_eq!(ui.visible().len(), 3);
        assert_eq!(ui.on_key(key(KeyCode::Char('q'))), Some(FleetCommand::Quit));
    }

    #[test]
    fn esc_goes_back_and_never_quits_q_quits_from_anywhere() {
        let mut ui = ui3();
        assert_eq!(ui.on_key(key(KeyCode::Esc)), None, "Esc on the fleet");
        assert_eq!(ui.note.as_deref(), Some("q quits"));
        let s = screen(&ui);
        assert!(
            s.lines()
                .last()
                .unwrap()
                .contains("q quits · ? help · q quit"),
            "{s}"
        );
        ui.on_key(key(KeyCode::Enter));
        let (_, app) = ui.drill.as_mut().unwrap();
        app.focus = app::Focus::Detail;
        // In a remote: Esc leaves the detail first, then the remote.
        assert_eq!(ui.on_key(key(KeyCode::Esc)), None);
        assert!(ui.drill.is_some());
        assert_eq!(ui.on_key(key(KeyCode::Esc)), None);
        assert!(ui.drill.is_none());
        ui.on_key(key(KeyCode::Enter));
        assert_eq!(ui.on_key(key(KeyCode::Char('q'))), Some(FleetCommand::Quit));
        let ctrl_z = KeyEvent::new(KeyCode::Char('z'), KeyModifiers::CONTROL);
        assert_eq!(ui.on_key(ctrl_z), Some(FleetCommand::Suspend));
        ui.drill = None;
        assert_eq!(ui.on_key(ctrl_z), Some(FleetCommand::Suspend));
    }

    #[test]
    fn fleet_80x24_and_200x60_with_help() {
        let mut ui = ui3();
        let s = screen_at(&ui, 80, 24);
        let foot = s.lines().last().unwrap();
        for k in ["Enter open", "/ filter", "? help", "q quit", "r re-run"] {
            assert!(foot.contains(k), "{k} in {foot}");
        }
        insta::assert_snapshot!("fleet_80x24", s);
        ui.on_key(key(KeyCode::Char('?')));
        let s = screen_at(&ui, 80, 24);
        for (_, what) in FLEET_HELP {
            assert!(s.contains(what), "{what:?} whole: {s}");
        }
        insta::assert_snapshot!("fleet_help_80x24", s);
        ui.help = false;
        insta::assert_snapshot!("fleet_200x60", screen_at(&ui, 200, 60));
    }

    #[test]
    fn help_overlay_lists_the_fleet_keys() {
        let mut ui = ui3();
        ui.on_key(key(KeyCode::Char('?')));
        let s = screen(&ui);
        assert!(s.contains("leave a remote; never quits"), "{s}");
        assert_eq!(ui.on_key(key(KeyCode::Char('x'))), None);
        assert!(!ui.help);
        assert!(!screen(&ui).contains("never quits"));
    }

    #[test]
    fn click_selects_a_remote_then_opens_it_and_wheel_moves() {
        let mut ui = ui3();
        let s = screen(&ui);
        let y = s.lines().position(|l| l.contains("remote-3")).unwrap() as u16;
        let click = |row| MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 10,
            row,
            modifiers: KeyModifiers::NONE,
        };
        ui.on_mouse(click(y));
        assert_eq!(ui.selected, 2);
        assert!(ui.drill.is_none());
        ui.on_mouse(click(y));
        assert_eq!(
            ui.drill.as_ref().map(|d| d.0),
            Some(2),
            "a second click opens it"
        );
        ui.drill = None;
        // The header row selects nothing.
        ui.on_mouse(click(y - 3));
        assert_eq!(ui.selected, 2);
        let wheel = |kind| MouseEvent {
            kind,
            column: 10,
            row: y,
            modifiers: KeyModifiers::NONE,
        };
        ui.on_mouse(wheel(MouseEventKind::ScrollUp));
        assert_eq!(ui.selected, 1);
        ui.on_mouse(wheel(MouseEventKind::ScrollDown));
        ui.on_mouse(wheel(MouseEventKind::ScrollDown));
        assert_eq!(ui.selected, 2, "stops at the last row");
    }

    #[test]
    fn r_reruns_only_once_every_remote_finished() {
        let mut ui = ui3();
        assert_eq!(ui.on_key(key(KeyCode::Char('r'))), None);
        assert!(ui.note.as_deref().unwrap().contains("still running"));
        finish(&mut ui, 2, None);
        assert_eq!(
            ui.on_key(key(KeyCode::Char('r'))),
            Some(FleetCommand::Rerun)
        );
        ui.start_rerun(None, None);
        assert_eq!(ui.run, 2);
        assert_eq!(ui.note.as_deref(), Some("run 2 started"));
        assert!(ui.states.iter().all(|s| s.finished.is_none()));
    }

    #[test]
    fn r_follows_the_remotes_read_again_and_keeps_the_open_one() {
        let mut ui = ui3();
        finish(&mut ui, 2, None);
        // remote-2 open; remote-1 goes away, remote-4 comes: remote-2 stays open at its new row.
        ui.selected = 1;
        ui.on_key(key(KeyCode::Enter));
        assert_eq!(ui.drill.as_ref().map(|d| d.0), Some(1));
        let now = vec![
            remote("remote-2", Some("lab-remote-2")),
            remote("remote-3", None),
            remote("remote-4", Some("lab-remote-4")),
        ];
        ui.start_rerun(Some(now), None);
        assert_eq!(
            ui.note.as_deref(),
            Some("run 2 started; new: remote-4; no longer registered: remote-1")
        );
        assert_eq!(ui.drill.as_ref().map(|d| d.0), Some(0));
        assert_eq!(ui.states.len(), 3);
        assert_eq!(ui.started.len(), 3);
        // The open remote itself goes away: back to the list, said so.
        let now = vec![remote("remote-3", None)];
        ui.start_rerun(Some(now), Some("could not read remote-9".into()));
        assert!(ui.drill.is_none());
        assert_eq!(
            ui.note.as_deref(),
            Some(
                "run 3 started; no longer registered: remote-2, remote-4; \
                 the open remote is no longer registered; could not read remote-9"
            )
        );
        assert_eq!(ui.selected, 0);
        let names: Vec<String> = ui.remotes.iter().map(remote_name).collect();
        assert_eq!(names, ["remote-3"]);
        assert!(screen(&ui).contains("remote-3"));
    }
}
