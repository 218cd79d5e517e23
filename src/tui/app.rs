//! UI state (selection, focus, scroll, overlay, teaching cursor, theme) and
//! what each key does to it. No I/O and no trace data: the trace lives in
//! [`TraceState`], which only the engine's events change.

use super::theme::Theme;
use crate::model::{STEPS, Status, StepId, TraceState};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
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
}

#[derive(Debug, Clone)]
pub struct App {
    pub themes: Vec<Theme>,
    pub theme_idx: usize,
    /// Selected step, as an index into [`STEPS`].
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
    /// Teaching mode: index of the last hop revealed.
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
    /// The detail pane's lines as last wrapped, and what they were wrapped
    /// from: a frame wraps again only when that changed.
    pub detail_cache: std::cell::RefCell<Option<(DetailKey, Vec<ratatui::text::Line<'static>>)>>,
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
    /// For a step still running or pending: the spinner and clock, which
    /// change every frame anyway.
    pub live: Option<(usize, u64)>,
}

pub const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl App {
    pub fn new(themes: Vec<Theme>, teaching: bool) -> App {
        assert!(!themes.is_empty(), "at least one theme");
        App {
            themes,
            theme_idx: 0,
            selected: 0,
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
            detail_cache: Default::default(),
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

    /// How many steps (in flow order) the diagram shows.
    pub fn revealed(&self) -> usize {
        match self.teaching {
            Some(k) => (k + 1).min(STEPS.len()),
            None => STEPS.len(),
        }
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
        if st.finished.is_some() && self.note_while_running {
            self.note = None;
            self.note_while_running = false;
        }
        if self.pinned || self.teaching.is_some() {
            return;
        }
        let target = if st.finished.is_some() {
            // Finished: the first problem, else back to the start of the flow.
            first_problem(st).or(Some(STEPS[0].id))
        } else {
            // While it runs: a failure as soon as there is one, else the newest running step.
            first_failure(st).or_else(|| st.running.last().map(|(id, _)| *id))
        };
        if let Some(id) = target {
            if id.index() != self.selected {
                self.selected = id.index();
                self.detail_scroll = 0;
            }
        }
    }

    fn select(&mut self, idx: usize) {
        let idx = idx.min(self.revealed().saturating_sub(1));
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
        if let Some(k) = self.teaching.as_mut() {
            *k = 0;
            self.selected = 0;
        }
        self.note = Some(format!("run {} started", self.run));
        self.note_while_running = true;
    }

    /// Apply one key. Returns what the event loop must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent, st: &TraceState) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C'))
        {
            return Some(Command::Quit);
        }
        self.note = None;
        self.note_while_running = false;
        if self.help {
            // Any key closes the overlay; q still quits.
            self.help = false;
            return match key.code {
                KeyCode::Char('q') => Some(Command::Quit),
                _ => None,
            };
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Command::Quit),
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
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
            KeyCode::Enter | KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Diagram => Focus::Detail,
                    Focus::Detail => Focus::Diagram,
                };
            }
            KeyCode::Up | KeyCode::Char('k') => match self.focus {
                Focus::Diagram => self.select(self.selected.saturating_sub(1)),
                Focus::Detail => self.scroll_detail(-1),
            },
            KeyCode::Down | KeyCode::Char('j') => match self.focus {
                Focus::Diagram => self.select(self.selected + 1),
                Focus::Detail => self.scroll_detail(1),
            },
            KeyCode::Home | KeyCode::Char('g') => match self.focus {
                Focus::Diagram => self.select(0),
                Focus::Detail => self.detail_scroll = 0,
            },
            KeyCode::End | KeyCode::Char('G') => match self.focus {
                Focus::Diagram => self.select(STEPS.len() - 1),
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

    fn teach_step(&mut self, delta: i32) {
        let Some(k) = self.teaching else { return };
        let next = (k as i32 + delta).clamp(0, STEPS.len() as i32 - 1) as usize;
        if next == k && delta > 0 {
            self.note = Some("that was the last hop; q quits, r re-runs".into());
        }
        self.teaching = Some(next);
        self.selected = next;
        self.detail_scroll = 0;
    }
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
        assert_eq!(app.on_key(key(KeyCode::Char('j')), &st), None);
        assert_eq!(app.on_key(key(KeyCode::Down), &st), None);
        assert_eq!(app.selected, 2);
        app.on_key(key(KeyCode::Char('k')), &st);
        assert_eq!(app.selected, 1);
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
        assert_eq!(app.on_key(key(KeyCode::Esc), &st), Some(Command::Quit));
        assert_eq!(
            app.on_key(
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
                &st
            ),
            Some(Command::Quit)
        );
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
        app.on_key(key(KeyCode::Char(' ')), &st);
        app.on_key(key(KeyCode::Right), &st);
        assert_eq!(app.revealed(), 3);
        assert_eq!(app.selected, 2);
        app.on_key(key(KeyCode::Left), &st);
        assert_eq!(app.revealed(), 2);
        // Selection cannot go past what is revealed.
        app.on_key(key(KeyCode::Down), &st);
        app.on_key(key(KeyCode::Down), &st);
        assert_eq!(app.selected, 1);
        for _ in 0..40 {
            app.on_key(key(KeyCode::Char(' ')), &st);
        }
        assert_eq!(app.revealed(), STEPS.len());
    }
}
