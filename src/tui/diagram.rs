//! The sequence diagram: four lifelines, one arrow per step in flow order,
//! drawn as steps start and finish. Pure: reads the trace state and the UI
//! state, writes cells.

use super::app::App;
use super::text;
use crate::model::{Actor, STEPS, Status, StepInfo, TraceState};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Widget};

/// Left gutter: selection marker, step number, change marker.
pub const GUTTER: u16 = 5;
/// Rows of actor names above the lifelines.
pub const HEAD: u16 = 2;
/// Rows per step: the label, then the arrow.
pub const ROWS_PER_STEP: u16 = 2;

fn actor_lines(a: Actor) -> (&'static str, &'static str) {
    match a {
        Actor::Gateway => ("remote", "gateway"),
        Actor::RemoteApi => ("remote", "API server"),
        Actor::Istiod => ("primary", "istiod"),
        Actor::PrimaryApi => ("primary", "API server"),
    }
}

/// x of each lifeline, relative to the area's left edge.
pub fn lanes(width: u16) -> [u16; 4] {
    let half = 5u16;
    let avail = width.saturating_sub(GUTTER);
    let spacing = (avail.saturating_sub(2 * half + 1) / 3).max(8);
    let mut out = [0u16; 4];
    for (i, x) in out.iter_mut().enumerate() {
        *x = GUTTER + half + i as u16 * spacing;
    }
    out
}

fn lane_of(a: Actor) -> usize {
    Actor::ALL.iter().position(|x| *x == a).expect("in ALL")
}

/// Teaching mode: the note under the current hop, what happens there and
/// what the trace found, wrapped for a diagram `width` cells wide.
pub fn teaching_note(st: &TraceState, app: &App, width: u16) -> Option<(u16, Vec<Line<'static>>)> {
    let k = app.teaching?;
    let th = app.theme();
    let info = &STEPS[k];
    let note_w = width.saturating_sub(GUTTER + 1).min(72);
    let inner = note_w.saturating_sub(4) as usize;
    if inner < 16 {
        return None;
    }
    let mut lines: Vec<Line<'static>> = text::wrap_words(info.explain, inner)
        .into_iter()
        .map(|l| Line::styled(l, th.text))
        .collect();
    let (glyph, what, style) = match (st.result(info.id), st.is_running(info.id)) {
        (Some(r), _) => {
            let what = match (r.status, &r.diagnosis) {
                (Status::Pass, _) => format!("passed in {:.1} ms", r.duration_ms),
                (Status::Skipped, _) if !r.blocked_by.is_empty() => {
                    format!(
                        "blocked: {} failed first",
                        r.blocked_by
                            .iter()
                            .map(|b| b.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                (_, Some(d)) => format!("{}: {d}", r.status.as_str()),
                (s, None) => s.as_str().to_string(),
            };
            (r.status.glyph(), what, th.status(r.status))
        }
        (None, true) => (app.spinner(), "running…".to_string(), th.running),
        (None, false) => (
            "·",
            "the trace has not reached this hop yet".to_string(),
            th.pending,
        ),
    };
    let result = format!("{glyph} {what}");
    // At most three lines of the result; the detail pane has the rest.
    let mut res = text::wrap_words(&result, inner);
    if res.len() > 3 {
        res.truncate(3);
        res[2] = format!("{}…", res[2].trim_end());
    }
    lines.push(Line::raw(""));
    lines.extend(res.into_iter().map(|l| Line::styled(l, style)));
    Some((note_w, lines))
}

/// Rows the teaching note takes below the last hop (with a blank row above it).
fn note_rows(st: &TraceState, app: &App, width: u16) -> u16 {
    teaching_note(st, app, width)
        .map(|(_, l)| l.len() as u16 + 3)
        .unwrap_or(0)
}

/// First body row shown, and the body's total rows, for a body of `height` rows.
pub fn scroll(st: &TraceState, app: &App, width: u16, height: u16) -> (u16, u16) {
    let steps = app.revealed() as u16 * ROWS_PER_STEP;
    let total = steps + note_rows(st, app, width);
    if total <= height {
        return (0, total);
    }
    if app.teaching.is_some() && app.selected + 1 == app.revealed() {
        // Show the current hop with its note.
        let want = (app.selected as u16 * ROWS_PER_STEP).max(total.saturating_sub(height));
        return (want.min(total - height), total);
    }
    let sel_top = app.selected.min(app.revealed().saturating_sub(1)) as u16 * ROWS_PER_STEP;
    // Keep the selected step near the middle.
    let off = (sel_top + ROWS_PER_STEP / 2)
        .saturating_sub(height / 2)
        .min(total - height);
    (off, total)
}

pub struct Diagram<'a> {
    pub st: &'a TraceState,
    pub app: &'a App,
}

/// How a step is drawn right now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Done(Status),
}

impl Widget for Diagram<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let th = self.app.theme();
        if area.width < GUTTER + 20 || area.height < HEAD + 2 {
            return;
        }
        let lanes = lanes(area.width);
        let sel = STEPS[self.app.selected].id;
        let sel_info = sel.info();

        // Actor names; the two actors of the selected hop stand out.
        for a in Actor::ALL {
            let x = area.x + lanes[lane_of(a)];
            let (top, bottom) = actor_lines(a);
            let hot = a == sel_info.from || a == sel_info.to;
            let style = if hot {
                th.accent.add_modifier(Modifier::UNDERLINED)
            } else {
                th.label
            };
            for (dy, s) in [(0u16, top), (1u16, bottom)] {
                let w = text::width(s) as u16;
                let sx = x.saturating_sub(w / 2).max(area.x + GUTTER);
                buf.set_stringn(sx, area.y + dy, s, (area.right() - sx) as usize, style);
            }
        }

        let body = Rect {
            x: area.x,
            y: area.y + HEAD,
            width: area.width,
            height: area.height - HEAD,
        };
        let (off, total) = scroll(self.st, self.app, area.width, body.height);

        // Lifelines down the whole body, so the diagram has its shape before any arrow.
        for dy in 0..body.height {
            for lx in lanes {
                buf[(body.x + lx, body.y + dy)]
                    .set_symbol("│")
                    .set_style(th.border);
            }
        }

        for (i, info) in STEPS.iter().take(self.app.revealed()).enumerate() {
            let top = i as u16 * ROWS_PER_STEP;
            if top + ROWS_PER_STEP <= off || top >= off + body.height {
                continue;
            }
            let phase = match (self.st.result(info.id), self.st.is_running(info.id)) {
                (Some(r), _) => Phase::Done(r.status),
                (None, true) => Phase::Running,
                (None, false) => Phase::Pending,
            };
            let rows = [top, top + 1]
                .map(|r| (r >= off && r < off + body.height).then(|| body.y + r - off));
            self.draw_step(i, info, phase, rows, body, &lanes, buf);
        }

        // Teaching mode: a note under the current hop.
        if let Some((note_w, lines)) = teaching_note(self.st, self.app, area.width) {
            let top = self.app.revealed() as u16 * ROWS_PER_STEP + 1;
            let h = lines.len() as u16 + 2;
            // Only drawn whole; the scroll keeps it in view when it can.
            if top >= off && top + h <= off + body.height {
                let rect = Rect {
                    x: body.x + GUTTER,
                    y: body.y + top - off,
                    width: note_w,
                    height: h,
                };
                let k = self.app.teaching.unwrap_or(0);
                let block = Block::bordered()
                    .border_type(BorderType::Rounded)
                    .border_style(th.accent.remove_modifier(Modifier::BOLD))
                    .title(Line::styled(
                        format!(" hop {} · {} ", k + 1, STEPS[k].id.as_str()),
                        th.accent,
                    ))
                    .style(th.background);
                let inner = block.inner(rect);
                Clear.render(rect, buf);
                block.render(rect, buf);
                Paragraph::new(lines).render(
                    Rect {
                        x: inner.x + 1,
                        width: inner.width.saturating_sub(1),
                        ..inner
                    },
                    buf,
                );
            }
        }

        // Scroll hints in the gutter.
        if off > 0 {
            buf.set_string(body.x, body.y, "▲", th.muted);
        }
        if off + body.height < total {
            buf.set_string(body.x, body.bottom() - 1, "▼", th.muted);
        }
    }
}

impl Diagram<'_> {
    #[allow(clippy::too_many_arguments)]
    fn draw_step(
        &self,
        i: usize,
        info: &StepInfo,
        phase: Phase,
        rows: [Option<u16>; 2],
        body: Rect,
        lanes: &[u16; 4],
        buf: &mut Buffer,
    ) {
        let th = self.app.theme();
        let app = self.app;
        let selected = i == app.selected;
        let failing = phase == Phase::Done(Status::Fail)
            && super::app::first_problem(self.st) == Some(info.id);
        let style = match phase {
            Phase::Pending => th.pending,
            Phase::Running => th.running,
            Phase::Done(s) => th.status(s),
        };
        let glyph = match phase {
            Phase::Pending => "·",
            Phase::Running => app.spinner(),
            Phase::Done(s) => s.glyph(),
        };
        let right = body.right();
        let from = body.x + lanes[lane_of(info.from)];
        let to = body.x + lanes[lane_of(info.to)];

        // Selection band first, so that everything drawn after keeps its colours.
        if selected {
            for y in rows.iter().flatten() {
                buf.set_style(
                    Rect {
                        x: body.x,
                        y: *y,
                        width: body.width,
                        height: 1,
                    },
                    th.selection,
                );
            }
        }

        if let Some(y) = rows[0] {
            // Gutter: selection marker, number, change marker.
            if selected {
                buf.set_string(body.x, y, "▶", th.accent);
            }
            buf.set_string(
                body.x + 1,
                y,
                format!("{:>2}", i + 1),
                if selected { th.label } else { th.muted },
            );
            if app.changed(self.st, info.id).is_some() {
                buf.set_string(body.x + 3, y, "Δ", th.changed);
            }

            // The label: glyph, id, and what the hop carries (or what blocked it).
            let detail = match (phase, self.st.result(info.id)) {
                (Phase::Pending, _) => String::new(),
                (Phase::Done(Status::Skipped), Some(r)) if !r.blocked_by.is_empty() => {
                    format!(
                        "blocked by {}",
                        r.blocked_by
                            .iter()
                            .map(|b| b.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                _ => info.message.to_string(),
            };
            let chip = format!("{glyph} {}", info.id.as_str());
            let chip_style = if failing {
                style.add_modifier(Modifier::REVERSED | Modifier::BOLD)
            } else {
                style
            };
            let chip_text = if failing { format!(" {chip} ") } else { chip };
            let rest = if detail.is_empty() {
                String::new()
            } else {
                format!(" · {detail}")
            };
            let label_w = (text::width(&chip_text) + text::width(&rest)) as u16;
            let start = if from == to {
                // Right of the loop when it fits there, else to its left.
                let room_right = right.saturating_sub(from + 5);
                let room_left = from.saturating_sub(body.x + GUTTER + 1);
                if label_w <= room_right || room_right >= room_left {
                    from + 5
                } else {
                    from.saturating_sub(1 + label_w.min(room_left))
                }
            } else {
                let natural = from.min(to) + 2;
                natural
                    .min(right.saturating_sub(label_w))
                    .max(body.x + GUTTER)
            };
            // A label left of a loop stops before the loop.
            let right = if from == to && start < from {
                from - 1
            } else {
                right
            };
            if start < right {
                // Clear the lifelines under the label.
                let clear_to = (start + label_w).min(right);
                for x in start..clear_to {
                    buf[(x, y)].set_symbol(" ");
                }
                let room = (right - start) as usize;
                let (x2, _) = buf.set_stringn(start, y, &chip_text, room, chip_style);
                if x2 < right && !rest.is_empty() {
                    let room = (right - x2) as usize;
                    let rest_style = match phase {
                        Phase::Done(Status::Pass) => th.text,
                        Phase::Pending => th.pending,
                        _ => style,
                    };
                    let shown = if text::width(&rest) > room {
                        ellipsize(&rest, room)
                    } else {
                        rest
                    };
                    buf.set_stringn(x2, y, shown, room, rest_style);
                }
            }
        }

        if phase == Phase::Pending {
            return;
        }
        let (line, head_r, head_l) = match phase {
            Phase::Running => ("╌", "▷", "◁"),
            Phase::Done(Status::Fail) => ("━", "✘", "✘"),
            Phase::Done(Status::Skipped) => ("┄", "▷", "◁"),
            _ => ("─", "▶", "◀"),
        };
        let line_style = if failing {
            style.add_modifier(Modifier::BOLD)
        } else {
            style
        };

        if from == to {
            // A loop: out on the label row, back on the arrow row.
            if let Some(y) = rows[0] {
                set(buf, from, y, "├", line_style, right);
                set(buf, from + 1, y, line, line_style, right);
                set(buf, from + 2, y, line, line_style, right);
                set(buf, from + 3, y, "┐", line_style, right);
            }
            if let Some(y) = rows[1] {
                set(buf, from + 1, y, head_l, line_style, right);
                set(buf, from + 2, y, line, line_style, right);
                set(buf, from + 3, y, "┘", line_style, right);
            }
            return;
        }
        let Some(y) = rows[1] else { return };
        let (lo, hi) = (from.min(to), from.max(to));
        set(
            buf,
            from,
            y,
            if from < to { "├" } else { "┤" },
            line_style,
            right,
        );
        for x in lo + 1..hi {
            set(buf, x, y, line, line_style, right);
        }
        if from < to {
            set(buf, to - 1, y, head_r, line_style, right);
        } else {
            set(buf, to + 1, y, head_l, line_style, right);
        }
        // A running hop shows a dot travelling along it.
        if phase == Phase::Running && hi > lo + 2 {
            let span = hi - lo - 2;
            let k = (app.tick as u16) % span;
            let x = if from < to { lo + 1 + k } else { hi - 1 - k };
            set(buf, x, y, "•", line_style, right);
        }
    }
}

fn set(buf: &mut Buffer, x: u16, y: u16, sym: &str, style: Style, right: u16) {
    if x < right {
        buf[(x, y)].set_symbol(sym).set_style(style);
    }
}

fn ellipsize(s: &str, room: usize) -> String {
    if room == 0 {
        return String::new();
    }
    let mut out = String::new();
    for ch in s.chars() {
        if text::width(&out) + text::width(ch.encode_utf8(&mut [0; 4])) + 1 > room {
            break;
        }
        out.push(ch);
    }
    out.push('…');
    out
}
