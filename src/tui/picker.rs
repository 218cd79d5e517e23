//! The fault picker (`b` in the lab's teaching mode): the lab faults that
//! break the current hop, from [`crate::lab::faults::FAULTS`] (a fault
//! breaks a hop when the first step it fails verifies that hop), and a way
//! back to the healthy lab. Choosing one rebuilds the lab with it and
//! re-runs the trace (the event loop does that; this is state and drawing).

use super::app::App;
use super::text;
use crate::lab::faults::{self, Fault, FaultId};
use crate::sequence::Message;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

/// The faults whose first failing step verifies `msg`, in catalogue order.
pub fn faults_for(msg: &Message) -> Vec<&'static Fault> {
    faults::FAULTS
        .iter()
        .filter(|f| msg.verifies(f.step))
        .collect()
}

/// One row of the picker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Fault(FaultId),
    /// Rebuild the lab without a fault.
    Healthy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picker {
    /// The hop (index into the sequence's messages) being broken.
    pub hop: usize,
    pub choices: Vec<Choice>,
    pub selected: usize,
}

impl Picker {
    /// The picker for hop `hop`; `None` when no lab fault breaks it.
    pub fn for_hop(hop: usize, current: Option<&str>) -> Option<Picker> {
        let msg = crate::sequence::messages().nth(hop)?;
        let mut choices: Vec<Choice> = faults_for(msg)
            .into_iter()
            .map(|f| Choice::Fault(f.id))
            .collect();
        if choices.is_empty() {
            return None;
        }
        // The lab's current fault first, when it breaks this hop; healthy last.
        let selected = current
            .and_then(|c| {
                choices
                    .iter()
                    .position(|x| matches!(x, Choice::Fault(id) if id.name() == c))
            })
            .unwrap_or(0);
        choices.push(Choice::Healthy);
        Some(Picker {
            hop,
            choices,
            selected,
        })
    }

    pub fn chosen(&self) -> Choice {
        self.choices[self.selected]
    }
}

/// What a key does to an open picker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Keep it open (moved, or a key it ignores).
    Open,
    Close,
    Choose(Choice),
}

pub fn on_key(p: &mut Picker, key: KeyEvent) -> Outcome {
    let last = p.choices.len() - 1;
    match key.code {
        KeyCode::Up | KeyCode::Char('k') => p.selected = p.selected.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => p.selected = (p.selected + 1).min(last),
        KeyCode::Home | KeyCode::Char('g') => p.selected = 0,
        KeyCode::End | KeyCode::Char('G') => p.selected = last,
        KeyCode::Enter => return Outcome::Choose(p.chosen()),
        KeyCode::Esc | KeyCode::Char('b') | KeyCode::Char('q') => return Outcome::Close,
        _ => {}
    }
    Outcome::Open
}

/// A row's name and its text: the finding code, the summary, and whether
/// `f` can fix it afterwards (so an instructor picks one that can).
pub fn row(c: &Choice) -> (String, String) {
    match c {
        Choice::Fault(id) => {
            let fl = faults::get(*id);
            let fix = match faults::no_fix_from_tui(*id) {
                Some(why) => format!(" [f cannot fix it: {why}]"),
                None => " [f fixes it]".into(),
            };
            (
                id.name().to_string(),
                format!("{}: {}{fix}", fl.code, fl.summary),
            )
        }
        Choice::Healthy => ("healthy".to_string(), "no fault: the lab as built".into()),
    }
}

/// The picker as an overlay over the screen.
pub fn draw(f: &mut Frame, area: Rect, app: &App, p: &Picker) {
    let th = app.theme();
    let w = area.width.saturating_sub(4).min(96);
    let inner_w = w.saturating_sub(4) as usize;
    let msg = crate::sequence::messages().nth(p.hop);
    let title = format!(" Break hop {} ", p.hop + 1);
    let mut lines: Vec<Line<'static>> = vec![];
    if let Some(m) = msg {
        for l in text::wrap_words(&super::teach::who(m), inner_w) {
            lines.push(Line::styled(l, th.label));
        }
    }
    lines.push(Line::raw(""));
    let name_w = p
        .choices
        .iter()
        .map(|c| match c {
            Choice::Fault(id) => id.name().len(),
            Choice::Healthy => 7,
        })
        .max()
        .unwrap_or(0);
    let mut selected_row = 0;
    for (i, c) in p.choices.iter().enumerate() {
        let (name, about) = row(c);
        let mark = if i == p.selected { "▶ " } else { "  " };
        let head = format!("{mark}{name:<name_w$}  ");
        let rest_w = inner_w.saturating_sub(text::width(&head)).max(10);
        let style = if i == p.selected {
            th.selection
        } else {
            th.text
        };
        if i == p.selected {
            selected_row = lines.len();
        }
        for (j, l) in text::wrap_words(&about, rest_w).into_iter().enumerate() {
            let lead = if j == 0 {
                Span::styled(head.clone(), style.add_modifier(Modifier::BOLD))
            } else {
                Span::raw(" ".repeat(text::width(&head)))
            };
            lines.push(Line::from(vec![
                lead,
                Span::styled(l, if i == p.selected { style } else { th.muted }),
            ]));
        }
    }
    let h = (lines.len() as u16 + 2).min(area.height.saturating_sub(2));
    let pop = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    // Keep the chosen row in view when the list is taller than the screen.
    let room = h.saturating_sub(2) as usize;
    let scroll = (selected_row + 2).saturating_sub(room) as u16;
    f.render_widget(Clear, pop);
    let b = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(th.border_focus)
        .title(Line::from(Span::styled(title, th.label)))
        .title_bottom(
            Line::from(Span::styled(
                " ↑↓ choose · Enter rebuilds the lab with it and re-runs · Esc cancels ",
                th.muted,
            ))
            .right_aligned(),
        )
        .style(th.background);
    let inner = b.inner(pop);
    f.render_widget(b, pop);
    f.render_widget(
        Paragraph::new(lines).scroll((scroll, 0)),
        Rect {
            x: inner.x + 1,
            width: inner.width.saturating_sub(2),
            ..inner
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StepId;
    use crate::sequence;
    use crossterm::event::KeyModifiers;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn every_fault_breaks_some_hop_and_a_hop_lists_only_its_own() {
        for f in faults::FAULTS {
            assert!(
                sequence::messages().any(|m| faults_for(m).iter().any(|x| x.id == f.id)),
                "{} breaks no hop",
                f.name
            );
        }
        let review = sequence::messages()
            .position(|m| m.text.starts_with("TokenReview"))
            .unwrap();
        let p = Picker::for_hop(review, None).expect("faults break the TokenReview");
        let names: Vec<_> = p
            .choices
            .iter()
            .filter_map(|c| match c {
                Choice::Fault(id) => Some(*id),
                Choice::Healthy => None,
            })
            .collect();
        assert!(names.contains(&FaultId::NoTokenreviewRbac), "{names:?}");
        for id in &names {
            let step = faults::get(*id).step;
            assert!(
                [StepId::TokenReview, StepId::RemoteRbac].contains(&step),
                "{id} fails {step} first"
            );
        }
        assert_eq!(p.choices.last(), Some(&Choice::Healthy));
    }

    #[test]
    fn keys_move_choose_and_close() {
        let review = sequence::messages()
            .position(|m| m.text.starts_with("TokenReview"))
            .unwrap();
        let mut p = Picker::for_hop(review, Some("no-tokenreview-rbac")).unwrap();
        assert_eq!(p.chosen(), Choice::Fault(FaultId::NoTokenreviewRbac));
        assert_eq!(on_key(&mut p, key(KeyCode::End)), Outcome::Open);
        assert_eq!(p.chosen(), Choice::Healthy);
        on_key(&mut p, key(KeyCode::Down));
        assert_eq!(p.chosen(), Choice::Healthy, "stays at the end");
        on_key(&mut p, key(KeyCode::Home));
        on_key(&mut p, key(KeyCode::Up));
        assert_eq!(p.selected, 0);
        let first = p.chosen();
        assert_eq!(on_key(&mut p, key(KeyCode::Enter)), Outcome::Choose(first));
        assert_eq!(on_key(&mut p, key(KeyCode::Esc)), Outcome::Close);
        assert_eq!(on_key(&mut p, key(KeyCode::Char('x'))), Outcome::Open);
    }

    #[test]
    fn a_hop_no_fault_breaks_has_no_picker() {
        let none = sequence::messages()
            .position(|m| faults_for(m).is_empty())
            .expect("some hop has no lab fault (the sync reply, the JSONPatch)");
        assert_eq!(Picker::for_hop(none, None), None);
        assert_eq!(Picker::for_hop(usize::MAX, None), None);
    }
}
