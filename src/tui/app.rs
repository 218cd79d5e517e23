//! UI state (selection, focus, scroll, overlay, teaching cursor, theme) and
//! what each key does to it. No I/O and no trace data: the trace lives in
//! [`TraceState`], which only the engine's events change.

use super::theme::Theme;
use crate::model::{STEPS, Status, StepId, TraceState};
use crate::sequence::{self, step_order};
use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use std::collections::HashMap;

/// Which pane the arrow keys move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Diagram,
    Detail,
}

/// What the event loop must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Quit,
    Rerun,
    /// Put this step's fix on the clipboard (the event loop owns the terminal).
    CopyFix(StepId),
    /// Esc with nothing left to close or clear: the fleet leaves a drilled-in
    /// remote; the single trace stays (Esc never quits).
    Back,
    /// Ctrl-Z: give the terminal back and stop until `fg`.
    Suspend,
    /// Lab only: rebuild the lab with this choice of the picker, re-run.
    Break(super::picker::Choice),
    /// Lab only: run this step's printed fix against the lab, re-run.
    ApplyFix(StepId),
}

#[derive(Debug, Clone)]
pub struct App {
    pub themes: Vec<Theme>,
    pub theme_idx: usize,
    /// Selected step, as an index into [`STEPS`]. The arrows move it in the
    /// order of the sequence ([`crate::sequence::step_order`]).
    pub selected: usize,
    /// The user moved the selection: stop following the trace.
    pub pinned: bool,
    pub focus: Focus,
    pub detail_scroll: u16,
    /// Largest useful `detail_scroll`, reported back by the last draw.
    pub detail_max_scroll: u16,
    /// Lines a PgUp/PgDn moves, reported back by the last draw.
    pub detail_page: u16,
    pub help: bool,
    /// Teaching mode: index of the last hop revealed, a message of
    /// [`crate::sequence::messages`].
    pub teaching: Option<usize>,
    /// Animation frame for running steps.
    pub tick: usize,
    /// Milliseconds since the current run started (for "running for …").
    pub now_ms: f64,
    /// 1 for the first trace, +1 per re-run.
    pub run: usize,
    /// Statuses of the previous run, to mark what changed.
    pub previous: Option<HashMap<StepId, Status>>,
    /// A short note for the footer (theme changed, re-run refused…).
    pub note: Option<String>,
    /// The note lasts only while the trace runs ("run 2 started").
    pub note_while_running: bool,
    /// The engine's stream ended (normally right after `TraceFinished`).
    pub stream_closed: bool,
    /// Set when the events come from a recording (`meshtrace replay FILE`):
    /// the file, shown in the header so nobody takes it for a live run.
    pub replay: Option<String>,
    /// Watch mode: time left until the next run starts.
    pub next_run_in: Option<std::time::Duration>,
    /// `/` filter on the steps (id, finding code, title), lower-cased; empty: none.
    pub filter: String,
    /// `/` was typed: keys edit the filter until Enter or Esc.
    pub filter_editing: bool,
    /// The steps the filter lets through, refreshed on every key and event
    /// (finding codes arrive with the results); None without a filter.
    pub filter_hits: Option<Vec<StepId>>,
    /// Where the last draw put the diagram's inside and the detail pane, so
    /// a mouse event can be told which pane it is over.
    pub diagram_area: Rect,
    pub detail_area: Rect,
    /// The detail pane's lines as last wrapped, and what they were wrapped
    /// from: a frame wraps again only when that changed.
    pub detail_cache: std::cell::RefCell<Option<(DetailKey, Vec<ratatui::text::Line<'static>>)>>,
    /// The lab can be broken and fixed from here (`b`, `f`): see teach.rs.
    pub lab_controls: bool,
    /// The fault picker, while it is open.
    pub picker: Option<super::picker::Picker>,
    /// The last fix applied to the lab from here, for the detail pane.
    pub applied: Option<(StepId, crate::lab::session::Applied)>,
    /// A `b` or `f` is being carried out.
    pub lab_busy: bool,
    /// Why the last `b` or `f` was not done, for the detail pane.
    pub lab_error: Option<String>,
    /// +1 whenever `applied` changes (the detail pane's cache key).
    pub lab_gen: usize,
}

/// Everything the detail pane's lines depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailKey {
    pub generation: u64,
    pub selected: usize,
    pub width: u16,
    pub theme: usize,
    pub teaching: Option<usize>,
    pub run: usize,
    pub stream_closed: bool,
    pub lab_gen: usize,
    /// For a step still running or pending: the spinner and clock, which
    /// change every frame anyway.
    pub live: Option<(usize, u64)>,
}

pub const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl App {
    pub fn new(themes: Vec<Theme>, teaching: bool) -> App {
        assert!(!themes.is_empty(), "at least one theme");
        let first = if teaching { hop_step(0) } else { None };
        App {
            themes,
            theme_idx: 0,
            selected: first.unwrap_or(step_order()[0]).index(),
            pinned: false,
            focus: Focus::Diagram,
            detail_scroll: 0,
            detail_max_scroll: 0,
            detail_page: 10,
            help: false,
            teaching: teaching.then_some(0),
            tick: 0,
            now_ms: 0.0,
            run: 1,
            previous: None,
            note: None,
            note_while_running: false,
            stream_closed: false,
            replay: None,
            next_run_in: None,
            filter: String::new(),
            filter_editing: false,
            filter_hits: None,
            diagram_area: Rect::default(),
            detail_area: Rect::default(),
            detail_cache: Default::default(),
            lab_controls: false,
            picker: None,
            applied: None,
            lab_busy: false,
            lab_error: None,
            lab_gen: 0,
        }
    }

    /// Whether step `id` passes the `/` filter (always, without one).
    pub fn shows(&self, id: StepId) -> bool {
        self.filter_hits.as_ref().is_none_or(|h| h.contains(&id))
    }

    /// Recompute which steps the filter lets through; move the selection
    /// onto one of them when it is filtered out.
    fn refresh_filter(&mut self, st: &TraceState) {
        if self.filter.is_empty() {
            self.filter_hits = None;
            return;
        }
        let f = self.filter.to_lowercase();
        let hits: Vec<StepId> = STEPS
            .iter()
            .map(|s| s.id)
            .filter(|id| {
                let code = st
                    .result(*id)
                    .and_then(|r| r.finding.as_ref())
                    .map_or("", |f| f.code.as_str());
                [id.as_str(), id.info().title, code]
                    .iter()
                    .any(|t| t.to_lowercase().contains(&f))
            })
            .collect();
        self.filter_hits = Some(hits);
        if !self.shows(self.selected_id()) {
            if let Some(first) = self.selectable().first() {
                self.selected = first.index();
                self.detail_scroll = 0;
            }
        }
    }

    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme_idx]
    }

    pub fn spinner(&self) -> &'static str {
        SPINNER[self.tick % SPINNER.len()]
    }

    pub fn selected_id(&self) -> StepId {
        STEPS[self.selected].id
    }

    /// How many messages of the sequence the diagram shows.
    pub fn revealed(&self) -> usize {
        match self.teaching {
            Some(k) => (k + 1).min(hops()),
            None => hops(),
        }
    }

    /// The steps the user can select: in teaching mode, those of the
    /// messages revealed so far; in sequence order.
    fn selectable(&self) -> Vec<StepId> {
        let shown: Vec<_> = sequence::messages().take(self.revealed()).collect();
        step_order()
            .into_iter()
            .filter(|id| self.shows(*id) && shown.iter().any(|m| m.verifies(*id)))
            .collect()
    }

    /// The engine's stream ended; without a `TraceFinished` it stopped early.
    pub fn on_stream_closed(&mut self, st: &TraceState) {
        self.stream_closed = true;
        if st.finished.is_none() {
            self.note =
                Some("the trace engine stopped before the trace finished; r re-runs it".into());
            self.note_while_running = false;
        }
    }

    /// Whether the trace is still expected to make progress.
    pub fn running(&self, st: &TraceState) -> bool {
        st.finished.is_none() && !self.stream_closed
    }

    /// Whether the step's status differs from the previous run's (both finished).
    pub fn changed(&self, st: &TraceState, id: StepId) -> Option<Status> {
        let prev = *self.previous.as_ref()?.get(&id)?;
        let now = st.result(id)?.status;
        (prev != now).then_some(prev)
    }

    /// Follow the trace while the user has not picked a step: the first
    /// failure once there is one, else the latest step that started.
    pub fn follow(&mut self, st: &TraceState) {
        if !self.filter.is_empty() {
            self.refresh_filter(st);
        }
        if st.finished.is_some() && self.note_while_running {
            self.note = None;
            self.note_while_running = false;
        }
        if self.pinned || self.teaching.is_some() {
            return;
        }
        let target = if st.finished.is_some() {
            // Finished: the first problem, else back to the start of the flow.
            first_problem(st).or(Some(step_order()[0]))
        } else {
            // While it runs: a failure as soon as there is one, else the newest running step.
            first_failure(st).or_else(|| st.running.last().map(|(id, _)| *id))
        };
        if let Some(id) = target.filter(|id| self.shows(*id)) {
            if id.index() != self.selected {
                self.selected = id.index();
                self.detail_scroll = 0;
            }
        }
    }

    /// Select the step `delta` places from the selected one in sequence
    /// order (`None`: the first, `Some(isize::MAX)`: the last).
    fn select(&mut self, delta: Option<isize>) {
        let order = self.selectable();
        if order.is_empty() {
            return;
        }
        let here = order.iter().position(|id| id.index() == self.selected);
        let pos = match (delta, here) {
            (None, _) => 0,
            (Some(d), Some(h)) => (h as isize)
                .saturating_add(d)
                .clamp(0, order.len() as isize - 1) as usize,
            (Some(d), None) if d < 0 => 0,
            (Some(_), None) => order.len() - 1,
        };
        let idx = order[pos].index();
        if idx != self.selected {
            self.selected = idx;
            self.detail_scroll = 0;
        }
        self.pinned = true;
    }

    fn scroll_detail(&mut self, delta: i32) {
        let v = (self.detail_scroll as i32 + delta).clamp(0, self.detail_max_scroll as i32);
        self.detail_scroll = v as u16;
    }

    /// Start a new run: remember this run's statuses to show what changed.
    pub fn start_rerun(&mut self, st: &TraceState) {
        self.previous = Some(st.results.iter().map(|r| (r.id, r.status)).collect());
        self.run += 1;
        self.now_ms = 0.0;
        self.stream_closed = false;
        self.pinned = false;
        self.detail_scroll = 0;
        if self.teaching.is_some() {
            self.teaching = Some(0);
            self.selected = hop_step(0).map_or(self.selected, |id| id.index());
        }
        self.note = Some(format!("run {} started", self.run));
        self.note_while_running = true;
    }

    /// Apply one key. Returns what the event loop must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent, st: &TraceState) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) {
            match key.code {
                KeyCode::Char('c') | KeyCode::Char('C') => return Some(Command::Quit),
                KeyCode::Char('z') | KeyCode::Char('Z') => return Some(Command::Suspend),
                _ => {}
            }
        }
        self.note = None;
        self.note_while_running = false;
        if let Some(cmd) = self.teach_key(key, st) {
            return cmd;
        }
        if self.help {
            // Any key closes the overlay; q still quits.
            self.help = false;
            return match key.code {
                KeyCode::Char('q') => Some(Command::Quit),
                _ => None,
            };
        }
        if self.filter_editing {
            self.edit_filter(key, st);
            return None;
        }
        match key.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Esc => return self.back(),
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('/') => {
                self.filter_editing = true;
                self.focus = Focus::Diagram;
            }
            KeyCode::Char('t') => {
                self.theme_idx = (self.theme_idx + 1) % self.themes.len();
                let t = self.theme();
                self.note = Some(if self.themes.len() == 1 {
                    format!("theme {} (NO_COLOR is set)", t.name)
                } else {
                    format!("theme {}", t.name)
                });
            }
            KeyCode::Char('r') => {
                if st.finished.is_none() && !self.stream_closed {
                    self.note = Some(
                        "the trace is still running; r re-runs it once it has finished".into(),
                    );
                } else {
                    return Some(Command::Rerun);
                }
            }
            KeyCode::Char('y') => {
                let id = self.selected_id();
                match st.result(id).and_then(|r| r.hint.as_ref()) {
                    Some(_) => return Some(Command::CopyFix(id)),
                    None => self.note = Some(format!("{id} has no fix to copy")),
                }
            }
            KeyCode::Enter => self.drill_in(st),
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Diagram => Focus::Detail,
                    Focus::Detail => Focus::Diagram,
                };
            }
            KeyCode::Up | KeyCode::Char('k') => match self.focus {
                Focus::Diagram => self.select(Some(-1)),
                Focus::Detail => self.scroll_detail(-1),
            },
            KeyCode::Down | KeyCode::Char('j') => match self.focus {
                Focus::Diagram => self.select(Some(1)),
                Focus::Detail => self.scroll_detail(1),
            },
            KeyCode::Home | KeyCode::Char('g') => match self.focus {
                Focus::Diagram => self.select(None),
                Focus::Detail => self.detail_scroll = 0,
            },
            KeyCode::End | KeyCode::Char('G') => match self.focus {
                Focus::Diagram => self.select(Some(isize::MAX)),
                Focus::Detail => self.detail_scroll = self.detail_max_scroll,
            },
            KeyCode::PageDown => self.scroll_detail(self.detail_page.max(1) as i32),
            KeyCode::PageUp => self.scroll_detail(-(self.detail_page.max(1) as i32)),
            KeyCode::Char(' ') | KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('n') => {
                self.teach_step(1)
            }
            KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('p') => self.teach_step(-1),
            _ => {}
        }
        None
    }

    /// Esc: undo the innermost thing open (a filter, then the detail's
    /// focus); with nothing open, [`Command::Back`] for the caller.
    fn back(&mut self) -> Option<Command> {
        if !self.filter.is_empty() {
            self.filter.clear();
            self.filter_hits = None;
        } else if self.focus == Focus::Detail {
            self.focus = Focus::Diagram;
        } else {
            return Some(Command::Back);
        }
        None
    }

    /// A key while the `/` filter is being typed.
    fn edit_filter(&mut self, key: KeyEvent, st: &TraceState) {
        edit_filter_line(key.code, &mut self.filter, &mut self.filter_editing);
        self.refresh_filter(st);
        if self.filter_hits.as_ref().is_some_and(|h| h.is_empty()) {
            self.note = Some(format!("no step matches /{}", self.filter));
        }
    }

    /// Enter: on a blocked step, jump to the step that blocked it; on any
    /// other, focus its detail.
    fn drill_in(&mut self, st: &TraceState) {
        if self.focus == Focus::Detail {
            return;
        }
        let id = self.selected_id();
        let blocker = st
            .result(id)
            .filter(|r| r.status == Status::Skipped)
            .and_then(|r| r.blocked_by.first().copied());
        match blocker {
            Some(b) if self.selectable().contains(&b) => {
                self.selected = b.index();
                self.detail_scroll = 0;
                self.pinned = true;
                self.note = Some(format!("{b} blocked {id}; Enter again for its detail"));
            }
            Some(b) => self.note = Some(format!("{id} was blocked by {b}, hidden here")),
            None => self.focus = Focus::Detail,
        }
    }

    /// A mouse event: a click selects the step under it (diagram) or
    /// focuses the detail; the wheel scrolls the pane under the pointer.
    pub fn on_mouse(&mut self, m: MouseEvent, st: &TraceState) {
        // The help is modal: a click closes it, as a key would.
        if self.help {
            if matches!(m.kind, MouseEventKind::Down(_)) {
                self.help = false;
            }
            return;
        }
        let at = Position::new(m.column, m.row);
        let over_diagram = self.diagram_area.contains(at);
        let over_detail = self.detail_area.contains(at);
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) if over_diagram => {
                self.focus = Focus::Diagram;
                let row = m.row - self.diagram_area.y;
                if let Some(id) = super::diagram::step_at(st, self, self.diagram_area, row) {
                    if id.index() != self.selected {
                        self.selected = id.index();
                        self.detail_scroll = 0;
                    }
                    self.pinned = true;
                }
            }
            MouseEventKind::Down(MouseButton::Left) if over_detail => self.focus = Focus::Detail,
            MouseEventKind::ScrollDown if over_diagram => self.select(Some(1)),
            MouseEventKind::ScrollUp if over_diagram => self.select(Some(-1)),
            MouseEventKind::ScrollDown if over_detail => self.scroll_detail(3),
            MouseEventKind::ScrollUp if over_detail => self.scroll_detail(-3),
            _ => {}
        }
    }

    fn teach_step(&mut self, delta: i32) {
        let Some(k) = self.teaching else { return };
        let next = (k as i32 + delta).clamp(0, hops() as i32 - 1) as usize;
        if next == k && delta > 0 {
            self.note = Some("that was the last hop; q quits, r re-runs".into());
        }
        self.teaching = Some(next);
        // A message no step checks yet keeps the selection where it was.
        if let Some(id) = hop_step(next) {
            self.selected = id.index();
        }
        self.detail_scroll = 0;
    }
}

/// How many hops (messages and observations) the sequence has.
pub fn hops() -> usize {
    sequence::messages().count()
}

/// The step the detail pane shows for hop `k`: the first that verifies it.
pub fn hop_step(k: usize) -> Option<StepId> {
    sequence::messages()
        .nth(k)
        .and_then(|m| m.step_ids().next())
}

fn earliest(st: &TraceState, s: Status) -> Option<StepId> {
    STEPS
        .iter()
        .map(|i| i.id)
        .find(|id| st.result(*id).is_some_and(|r| r.status == s))
}

/// The earliest failed step in flow order.
pub fn first_failure(st: &TraceState) -> Option<StepId> {
    earliest(st, Status::Fail)
}

/// The earliest failed step in flow order, else the earliest warning.
pub fn first_problem(st: &TraceState) -> Option<StepId> {
    first_failure(st).or_else(|| earliest(st, Status::Warn))
}

/// A key typed into a `/` filter line (the trace's and the fleet's):
/// Enter keeps it, Esc clears it, Backspace deletes; at most 64 characters,
/// no control characters.
pub(crate) fn edit_filter_line(code: KeyCode, filter: &mut String, editing: &mut bool) {
    match code {
        KeyCode::Enter => *editing = false,
        KeyCode::Esc => {
            *editing = false;
            filter.clear();
        }
        KeyCode::Backspace => {
            filter.pop();
        }
        KeyCode::Char(c) if !c.is_control() && filter.chars().count() < 64 => filter.push(c),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::theme;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn keys_select_focus_and_quit() {
        let st = TraceState::default();
        let mut app = App::new(theme::cycle("default", false), false);
        // The arrows move down the sequence, not down the list of checks.
        let order = step_order();
        assert_eq!(app.selected_id(), order[0]);
        assert_eq!(app.on_key(key(KeyCode::Char('j')), &st), None);
        assert_eq!(app.on_key(key(KeyCode::Down), &st), None);
        assert_eq!(app.selected_id(), order[2]);
        app.on_key(key(KeyCode::Char('k')), &st);
        assert_eq!(app.selected_id(), order[1]);
        app.on_key(key(KeyCode::End), &st);
        assert_eq!(app.selected_id(), *order.last().unwrap());
        app.on_key(key(KeyCode::Down), &st);
        assert_eq!(
            app.selected_id(),
            *order.last().unwrap(),
            "stays at the end"
        );
        app.on_key(key(KeyCode::Home), &st);
        assert_eq!(app.selected_id(), order[0]);
        app.on_key(key(KeyCode::Tab), &st);
        assert_eq!(app.focus, Focus::Detail);
        app.on_key(key(KeyCode::Char('t')), &st);
        assert_eq!(app.theme().name, "light");
        app.on_key(key(KeyCode::Char('?')), &st);
        assert!(app.help);
        assert_eq!(app.on_key(key(KeyCode::Char('x')), &st), None);
        assert!(!app.help);
        assert_eq!(
            app.on_key(key(KeyCode::Char('q')), &st),
            Some(Command::Quit)
        );
        // Esc goes back, never quits: the detail's focus first, then Back.
        assert_eq!(app.focus, Focus::Detail);
        assert_eq!(app.on_key(key(KeyCode::Esc), &st), None);
        assert_eq!(app.focus, Focus::Diagram);
        assert_eq!(app.on_key(key(KeyCode::Esc), &st), Some(Command::Back));
        assert_eq!(
            app.on_key(
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
                &st
            ),
            Some(Command::Quit)
        );
        assert_eq!(
            app.on_key(
                KeyEvent::new(KeyCode::Char('z'), KeyModifiers::CONTROL),
                &st
            ),
            Some(Command::Suspend)
        );
    }

    #[test]
    fn esc_closes_help_then_clears_the_filter_then_leaves_the_detail() {
        let st = TraceState::default();
        let mut app = App::new(theme::cycle("default", false), false);
        app.on_key(key(KeyCode::Char('/')), &st);
        for c in "csr".chars() {
            app.on_key(key(KeyCode::Char(c)), &st);
        }
        app.on_key(key(KeyCode::Enter), &st);
        assert!(!app.filter_editing);
        app.on_key(key(KeyCode::Tab), &st);
        app.on_key(key(KeyCode::Char('?')), &st);
        assert_eq!(app.on_key(key(KeyCode::Esc), &st), None);
        assert!(!app.help, "help closed first");
        assert_eq!(app.filter, "csr");
        assert_eq!(app.on_key(key(KeyCode::Esc), &st), None);
        assert!(app.filter.is_empty() && app.filter_hits.is_none());
        assert_eq!(app.focus, Focus::Detail);
        assert_eq!(app.on_key(key(KeyCode::Esc), &st), None);
        assert_eq!(app.focus, Focus::Diagram);
        assert_eq!(app.on_key(key(KeyCode::Esc), &st), Some(Command::Back));
    }

    #[test]
    fn slash_filters_the_steps_by_id_code_and_title() {
        let mut st = TraceState::default();
        let mut r = crate::model::StepResult {
            id: StepId::RemoteRbac,
            title: String::new(),
            status: Status::Fail,
            duration_ms: 1.0,
            started_ms: 0.0,
            evidence: Default::default(),
            finding: Some(crate::findings::Finding::generic(
                StepId::RemoteRbac,
                "no-tokenreview-create",
                "x",
            )),
            diagnosis: None,
            hint: None,
            link: String::new(),
            blocked_by: vec![],
        };
        r.title = "t".into();
        st.apply(&crate::model::TraceEvent::StepFinished { result: r });
        let mut app = App::new(theme::cycle("default", false), false);
        app.on_key(key(KeyCode::Char('/')), &st);
        for c in "TOKENREVIEW-CREATE".chars() {
            app.on_key(key(KeyCode::Char(c)), &st);
        }
        // Only remote-rbac's finding code has it: case-insensitive, by code.
        assert_eq!(app.filter_hits.as_deref(), Some(&[StepId::RemoteRbac][..]));
        assert_eq!(app.selected_id(), StepId::RemoteRbac, "selection follows");
        assert_eq!(app.selectable(), [StepId::RemoteRbac]);
        // By id and by title.
        for _ in 0.."TOKENREVIEW-CREATE".len() {
            app.on_key(key(KeyCode::Backspace), &st);
        }
        for c in "istiod-tls".chars() {
            app.on_key(key(KeyCode::Char(c)), &st);
        }
        assert_eq!(app.filter_hits.as_deref(), Some(&[StepId::IstiodTls][..]));
        app.on_key(key(KeyCode::Esc), &st);
        assert!(app.filter.is_empty() && !app.filter_editing);
        assert_eq!(app.selectable().len(), STEPS.len());
        app.on_key(key(KeyCode::Char('/')), &st);
        for c in "zzz".chars() {
            app.on_key(key(KeyCode::Char(c)), &st);
        }
        assert_eq!(app.note.as_deref(), Some("no step matches /zzz"));
    }

    #[test]
    fn y_copies_only_a_fix_that_exists() {
        let mut st = TraceState::default();
        for (id, status, hint) in [
            (StepId::GatewayPod, Status::Pass, None),
            (
                StepId::RemoteSecret,
                Status::Fail,
                Some("kubectl label ..."),
            ),
        ] {
            st.apply(&crate::model::TraceEvent::StepFinished {
                result: crate::model::StepResult {
                    id,
                    title: id.info().title.into(),
                    status,
                    duration_ms: 1.0,
                    started_ms: 0.0,
                    evidence: Default::default(),
                    finding: None,
                    diagnosis: None,
                    hint: hint.map(str::to_string),
                    link: id.doc_link(),
                    blocked_by: vec![],
                },
            });
        }
        let mut app = App::new(theme::cycle("default", false), false);
        app.selected = 0;
        assert_eq!(app.on_key(key(KeyCode::Char('y')), &st), None);
        assert_eq!(app.note.as_deref(), Some("gateway-pod has no fix to copy"));
        app.selected = StepId::RemoteSecret.index();
        assert_eq!(
            app.on_key(key(KeyCode::Char('y')), &st),
            Some(Command::CopyFix(StepId::RemoteSecret))
        );
    }

    #[test]
    fn rerun_only_once_finished() {
        let mut st = TraceState::default();
        let mut app = App::new(theme::cycle("default", false), false);
        assert_eq!(app.on_key(key(KeyCode::Char('r')), &st), None);
        assert!(app.note.is_some());
        st.finished = Some(10.0);
        assert_eq!(
            app.on_key(key(KeyCode::Char('r')), &st),
            Some(Command::Rerun)
        );
        // An engine that stopped without finishing can be re-run too.
        let st = TraceState::default();
        let mut app = App::new(theme::cycle("default", false), false);
        app.on_stream_closed(&st);
        assert!(!app.running(&st));
        assert!(app.note.as_deref().is_some_and(|n| n.contains("stopped")));
        assert_eq!(
            app.on_key(key(KeyCode::Char('r')), &st),
            Some(Command::Rerun)
        );
    }

    #[test]
    fn teaching_reveals_one_hop_at_a_time() {
        let st = TraceState::default();
        let mut app = App::new(theme::cycle("default", false), true);
        assert_eq!(app.revealed(), 1);
        assert_eq!(Some(app.selected_id()), hop_step(0));
        app.on_key(key(KeyCode::Char(' ')), &st);
        app.on_key(key(KeyCode::Right), &st);
        assert_eq!(app.revealed(), 3);
        assert_eq!(Some(app.selected_id()), hop_step(2));
        app.on_key(key(KeyCode::Left), &st);
        assert_eq!(app.revealed(), 2);
        // Selection cannot go past what is revealed.
        let shown = app.selectable();
        for _ in 0..5 {
            app.on_key(key(KeyCode::Down), &st);
        }
        assert_eq!(Some(&app.selected_id()), shown.last());
        assert!(shown.len() < STEPS.len());
        for _ in 0..60 {
            app.on_key(key(KeyCode::Char(' ')), &st);
        }
        assert_eq!(app.revealed(), hops());
        assert_eq!(app.selectable().len(), STEPS.len());
    }
}
