//! The sequence diagram: four lifelines and the flow's messages in their
//! real order ([`crate::sequence`]), phase by phase, replies included;
//! meshtrace's own reads drawn as observations (◇ on the lifeline read), not
//! as arrows. Each message takes the state of the steps that verify it and
//! shows them as chips. Pure: reads the trace state and the UI state, writes
//! cells.

use super::app::App;
use super::text;
use crate::model::{Actor, Status, StepId, TraceState};
use crate::sequence::{self, Item, Kind, Message, State};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Widget};

/// Left gutter: selection marker, message number (as `-o mermaid` numbers
/// it), change marker.
pub const GUTTER: u16 = 5;
/// Rows of actor names above the lifelines.
pub const HEAD: u16 = 2;
/// Below this many rows inside its border the diagram is compact: one row
/// of actor names, one row per message (its arrow under its label), so a
/// 80x24 terminal shows twice the messages.
pub const COMPACT_BELOW: u16 = 16;

/// Whether a diagram `inner_height` rows tall is drawn compact.
pub fn compact(inner_height: u16) -> bool {
    inner_height < COMPACT_BELOW
}

/// Rows of actor names, compact or not.
pub fn head_rows(compact: bool) -> u16 {
    if compact { 1 } else { HEAD }
}

/// An actor's name on one row, for the compact head.
fn actor_short(a: Actor) -> &'static str {
    match a {
        Actor::Gateway => "gateway",
        Actor::RemoteApi => "remote API",
        Actor::Istiod => "istiod",
        Actor::PrimaryApi => "primary API",
    }
}

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

/// One item of the diagram, placed: its first body row and its height.
#[derive(Clone, Copy)]
pub struct Placed {
    pub item: Item,
    /// Index of the message among all messages (hop), for messages.
    pub hop: Option<usize>,
    pub top: u16,
    pub height: u16,
}

/// Rows an item takes: a heading or an observation one, a message two
/// (its label, then its arrow), or one when compact.
fn height(item: &Item, compact: bool) -> u16 {
    match item {
        Item::Phase(_) => 1,
        Item::Message { msg, .. } if msg.kind == Kind::Observation => 1,
        Item::Message { .. } if compact => 1,
        Item::Message { .. } => 2,
    }
}

/// The items shown (in teaching mode, up to the current hop; with a `/`
/// filter, the messages of the steps it lets through), placed.
pub fn layout(app: &App, compact: bool) -> Vec<Placed> {
    let revealed = app.revealed();
    let mut kept: Vec<(Item, Option<usize>)> = vec![];
    let mut hop = 0usize;
    for item in sequence::items() {
        let this = match item {
            Item::Phase(_) => None,
            Item::Message { .. } => {
                hop += 1;
                Some(hop - 1)
            }
        };
        if this.is_some_and(|h| h >= revealed) {
            break;
        }
        if let Item::Message { msg, .. } = item {
            if app.filter_hits.is_some() && !msg.step_ids().any(|id| app.shows(id)) {
                continue;
            }
        }
        // A heading with nothing under it (filtered out) stays hidden.
        if matches!(item, Item::Phase(_)) && matches!(kept.last(), Some((Item::Phase(_), _))) {
            kept.pop();
        }
        kept.push((item, this));
    }
    // A heading with nothing revealed under it yet stays hidden.
    if matches!(kept.last(), Some((Item::Phase(_), _))) {
        kept.pop();
    }
    let mut top = 0u16;
    kept.into_iter()
        .map(|(item, hop)| {
            let height = height(&item, compact);
            let p = Placed {
                item,
                hop,
                top,
                height,
            };
            top += height;
            p
        })
        .collect()
}

/// The step a click on row `row` of the diagram's inside (`inner`, as last
/// drawn) selects: the first step, the filter lets through, of the message
/// drawn there.
pub fn step_at(st: &TraceState, app: &App, inner: Rect, row: u16) -> Option<StepId> {
    let compact = compact(inner.height);
    let head = head_rows(compact);
    let body_h = inner.height.saturating_sub(head);
    let r = row.checked_sub(head).filter(|r| *r < body_h)?;
    let (off, _) = scroll(st, app, inner.width, body_h, compact);
    layout(app, compact)
        .into_iter()
        .find(|p| p.top <= off + r && off + r < p.top + p.height)
        .and_then(|p| match p.item {
            Item::Message { msg, .. } => msg.step_ids().find(|id| app.shows(*id)),
            Item::Phase(_) => None,
        })
}

fn rows(placed: &[Placed]) -> u16 {
    placed.last().map(|p| p.top + p.height).unwrap_or(0)
}

/// Teaching mode: the note under the current hop, who sends what to whom,
/// what happens there and what the trace found, wrapped for a diagram
/// `width` cells wide.
pub fn teaching_note(st: &TraceState, app: &App, width: u16) -> Option<(u16, Vec<Line<'static>>)> {
    let k = app.teaching?;
    let th = app.theme();
    let msg = sequence::messages().nth(k)?;
    let note_w = width.saturating_sub(GUTTER + 1).min(72);
    let inner = note_w.saturating_sub(4) as usize;
    if inner < 16 {
        return None;
    }
    let who = match msg.kind {
        Kind::Observation => format!("meshtrace reads, in the {}: {}", msg.from.label(), msg.text),
        _ if msg.from == msg.to => format!("{}, inside: {}", msg.from.label(), msg.text),
        _ => format!("{} → {}: {}", msg.from.label(), msg.to.label(), msg.text),
    };
    let mut lines: Vec<Line<'static>> = text::wrap_words(&who, inner)
        .into_iter()
        .map(|l| Line::styled(l, th.label))
        .collect();
    let Some(id) = msg.step_ids().next() else {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            "· no step of this meshtrace checks this message yet",
            th.pending,
        ));
        return Some((note_w, lines));
    };
    let info = id.info();
    lines.extend(
        text::wrap_words(info.explain, inner)
            .into_iter()
            .map(|l| Line::styled(l, th.text)),
    );
    let (glyph, what, style) = match (st.result(id), st.is_running(id)) {
        (Some(r), _) => {
            let what = match (r.status, &r.diagnosis) {
                (Status::Pass, _) => {
                    format!("{id} passed in {}", crate::render::ms(r.duration_ms))
                }
                (Status::Skipped, _) if !r.blocked_by.is_empty() => {
                    format!("{id} blocked: {} failed first", join_ids(&r.blocked_by))
                }
                (_, Some(d)) => format!("{id} {}: {d}", r.status.as_str()),
                (s, None) => format!("{id} {}", s.as_str()),
            };
            (r.status.glyph(), what, th.status(r.status))
        }
        (None, true) => (app.spinner(), format!("{id} running…"), th.running),
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
pub fn scroll(st: &TraceState, app: &App, width: u16, height: u16, compact: bool) -> (u16, u16) {
    let placed = layout(app, compact);
    // A note too tall to stand under its hop in this body is left out (the
    // detail pane says the same), so the hop itself stays in view.
    let hop_rows = if compact { 1 } else { 2 };
    let note = note_rows(st, app, width);
    let note = if note + hop_rows > height { 0 } else { note };
    let total = rows(&placed) + note;
    if total <= height {
        return (0, total);
    }
    if let Some(k) = app.teaching {
        // Show the current hop with its note.
        let top = placed
            .iter()
            .find(|p| p.hop == Some(k))
            .map_or(0, |p| p.top);
        let want = top.max(total.saturating_sub(height));
        return (want.min(total - height), total);
    }
    let sel = app.selected_id();
    let sel_top = placed
        .iter()
        .find(|p| matches!(p.item, Item::Message { msg, .. } if msg.verifies(sel)))
        .map_or(0, |p| p.top);
    // Keep the selected step's first message near the middle.
    let off = (sel_top + 1).saturating_sub(height / 2).min(total - height);
    (off, total)
}

pub struct Diagram<'a> {
    pub st: &'a TraceState,
    pub app: &'a App,
}

impl Widget for Diagram<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let th = self.app.theme();
        if area.width < GUTTER + 20 || area.height < 3 {
            return;
        }
        let lanes = lanes(area.width);
        let sel = self.app.selected_id();
        let compact = compact(area.height);
        let head = head_rows(compact);
        let placed = layout(self.app, compact);

        // Actor names; the actors of the selected step's messages stand out.
        for a in Actor::ALL {
            let x = area.x + lanes[lane_of(a)];
            let (top, bottom) = actor_lines(a);
            let hot = sequence::messages().any(|m| m.verifies(sel) && (m.from == a || m.to == a));
            let style = if hot {
                th.accent.add_modifier(Modifier::UNDERLINED)
            } else {
                th.label
            };
            let names: &[(u16, &str)] = if compact {
                &[(0, actor_short(a))]
            } else {
                &[(0, top), (1, bottom)]
            };
            for &(dy, s) in names {
                let w = text::width(s) as u16;
                let sx = x.saturating_sub(w / 2).max(area.x + GUTTER);
                buf.set_stringn(sx, area.y + dy, s, (area.right() - sx) as usize, style);
            }
        }

        let body = Rect {
            x: area.x,
            y: area.y + head,
            width: area.width,
            height: area.height - head,
        };
        let (off, total) = scroll(self.st, self.app, area.width, body.height, compact);

        // Lifelines down the whole body, so the diagram has its shape before any arrow.
        for dy in 0..body.height {
            for lx in lanes {
                buf[(body.x + lx, body.y + dy)]
                    .set_symbol("│")
                    .set_style(th.border);
            }
        }

        for p in &placed {
            if p.top + p.height <= off || p.top >= off + body.height {
                continue;
            }
            let row = |r: u16| (r >= off && r < off + body.height).then(|| body.y + r - off);
            match p.item {
                Item::Phase(ph) => {
                    if let Some(y) = row(p.top) {
                        self.draw_phase(ph.title, y, body, buf);
                    }
                }
                Item::Message { n, msg } => {
                    let rows = if compact {
                        [row(p.top), None]
                    } else {
                        [row(p.top), row(p.top + 1).filter(|_| p.height > 1)]
                    };
                    self.draw_message(n, msg, rows, compact, body, &lanes, buf);
                }
            }
        }

        // Teaching mode: a note under the current hop.
        if let Some((note_w, lines)) = teaching_note(self.st, self.app, area.width) {
            let top = rows(&placed) + 1;
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
                let step = super::app::hop_step(k).map_or("not checked yet", |id| id.as_str());
                let block = Block::bordered()
                    .border_type(BorderType::Rounded)
                    .border_style(th.accent.remove_modifier(Modifier::BOLD))
                    .title(Line::styled(format!(" hop {} · {step} ", k + 1), th.accent))
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

/// How a step is drawn right now.
fn step_state(st: &TraceState, id: StepId) -> State {
    match (st.result(id), st.is_running(id)) {
        (Some(r), _) => State::Done(r.status),
        (None, true) => State::Running,
        (None, false) => State::Pending,
    }
}

impl Diagram<'_> {
    fn state_style(&self, s: State) -> Style {
        let th = self.app.theme();
        match s {
            State::Pending => th.pending,
            State::Running => th.running,
            State::Done(s) => th.status(s),
        }
    }

    fn glyph(&self, s: State) -> &'static str {
        match s {
            State::Pending => "·",
            State::Running => self.app.spinner(),
            State::Done(s) => s.glyph(),
        }
    }

    /// `╶ A. title ───…` across the body, over the lifelines.
    fn draw_phase(&self, title: &str, y: u16, body: Rect, buf: &mut Buffer) {
        let th = self.app.theme();
        let x0 = body.x + GUTTER;
        for x in x0..body.right() {
            buf[(x, y)].set_symbol("─").set_style(th.border);
        }
        let room = body.right().saturating_sub(x0 + 2) as usize;
        let shown = ellipsize(&format!(" {title} "), room);
        buf.set_stringn(x0 + 1, y, shown, room, th.label);
    }

    #[allow(clippy::too_many_arguments)]
    fn draw_message(
        &self,
        n: usize,
        msg: &Message,
        rows: [Option<u16>; 2],
        compact: bool,
        body: Rect,
        lanes: &[u16; 4],
        buf: &mut Buffer,
    ) {
        let th = self.app.theme();
        let app = self.app;
        let st = self.st;
        let selected = msg.verifies(app.selected_id());
        let state = sequence::state(msg, st);
        let first_problem = super::app::first_problem(st);
        let failing = state == State::Done(Status::Fail)
            && msg.step_ids().any(|id| {
                Some(id) == first_problem && st.result(id).is_some_and(|r| r.status == Status::Fail)
            });
        let style = self.state_style(state);
        let right = body.right();
        let from = body.x + lanes[lane_of(msg.from)];
        let to = body.x + lanes[lane_of(msg.to)];

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

        // Compact: the arrow first, on the label's row; the label then
        // covers its middle and its start (`├─`, or `◀` for a leftward
        // one) still shows the direction.
        if compact {
            self.draw_arrow(
                msg,
                state,
                failing,
                [rows[0], None],
                rows[0],
                body,
                lanes,
                buf,
            );
        }

        if let Some(y) = rows[0] {
            // Gutter: selection marker, number, change marker.
            if selected {
                buf.set_string(body.x, y, "▶", th.accent);
            }
            buf.set_string(
                body.x + 1,
                y,
                format!("{n:>2}"),
                if selected { th.label } else { th.muted },
            );
            if msg.step_ids().any(|id| app.changed(st, id).is_some()) {
                buf.set_string(body.x + 3, y, "Δ", th.changed);
            }

            // The chips (one per step that verifies it), then what the
            // message carries, or what blocked it.
            let mut chips: Vec<(String, Style)> = vec![];
            if msg.kind == Kind::Observation {
                chips.push(("◇".into(), style));
            }
            for id in msg.step_ids() {
                let s = step_state(st, id);
                let fail_here = Some(id) == first_problem && s == State::Done(Status::Fail);
                let chip = format!("{} {}", self.glyph(s), id.as_str());
                if fail_here {
                    chips.push((
                        format!(" {chip} "),
                        self.state_style(s)
                            .add_modifier(Modifier::REVERSED | Modifier::BOLD),
                    ));
                } else {
                    chips.push((chip, self.state_style(s)));
                }
            }
            if msg.step_ids().next().is_none() {
                chips.push(("· not checked".into(), th.pending));
            }
            let blocked: Vec<StepId> = msg
                .step_ids()
                .filter_map(|id| st.result(id))
                .filter(|r| r.status == Status::Skipped)
                .flat_map(|r| r.blocked_by.iter().copied())
                .collect();
            let detail = match state {
                State::Done(Status::Skipped) if !blocked.is_empty() => {
                    let mut b = blocked.clone();
                    b.dedup();
                    format!("blocked by {}", join_ids(&b))
                }
                _ => msg.text.to_string(),
            };
            let rest = format!(" · {detail}");
            let chips_w: usize =
                chips.iter().map(|(c, _)| text::width(c)).sum::<usize>() + chips.len() - 1;
            let label_w = (chips_w + text::width(&rest)) as u16;
            let loop_or_obs = from == to;
            // An observation's label starts right of its marker; a loop's
            // right of the loop.
            let gap = if msg.kind == Kind::Observation { 0 } else { 5 };
            let start = if loop_or_obs {
                let room_right = right.saturating_sub(from + gap);
                let room_left = from.saturating_sub(body.x + GUTTER + 1);
                if label_w <= room_right || room_right >= room_left {
                    from + gap
                } else {
                    from.saturating_sub(1 + label_w.min(room_left))
                }
            } else {
                let natural = from.min(to) + 2;
                if compact {
                    // Never over the arrow's start (it is the direction),
                    // and a cell apart from it.
                    natural + 1
                } else {
                    natural
                        .min(right.saturating_sub(label_w))
                        .max(body.x + GUTTER)
                }
            };
            // An observation labelled left of its lifeline marks the lifeline
            // instead: the label loses its ◇ and moves up to the lifeline.
            let (start, label_w) = if msg.kind == Kind::Observation && start < from {
                chips.remove(0);
                (start + 2, label_w - 2)
            } else {
                (start, label_w)
            };
            // A label left of a loop stops before the loop.
            let right = if loop_or_obs && start < from {
                from - 1
            } else {
                right
            };
            if start < right {
                // Clear the lifelines (and a compact row's arrow) under the
                // label, style and all: a label's letter takes only the
                // label's style, never the lifeline's colour or dimness.
                let clear_to = (start + label_w).min(right);
                let ground = if selected {
                    th.background.patch(th.selection)
                } else {
                    th.background
                };
                for x in start..clear_to {
                    buf[(x, y)].reset();
                    buf[(x, y)].set_style(ground);
                }
                let mut x = start;
                for (i, (c, cs)) in chips.iter().enumerate() {
                    if i > 0 && x < right {
                        x = buf.set_stringn(x, y, " ", (right - x) as usize, th.text).0;
                    }
                    if x >= right {
                        break;
                    }
                    x = buf.set_stringn(x, y, c, (right - x) as usize, *cs).0;
                }
                if x < right {
                    let room = (right - x) as usize;
                    let rest_style = match state {
                        State::Done(Status::Pass) => th.text,
                        State::Pending => th.pending,
                        _ => style,
                    };
                    let shown = if text::width(&rest) > room {
                        ellipsize(&rest, room)
                    } else {
                        rest
                    };
                    buf.set_stringn(x, y, shown, room, rest_style);
                }
            }
            // An observation marks the lifeline it reads (when its label is not on it).
            if msg.kind == Kind::Observation && start != from {
                set(buf, from, y, "◇", style, body.right());
            }
        }

        if !compact {
            self.draw_arrow(msg, state, failing, rows, rows[1], body, lanes, buf);
        }
    }

    /// A message's arrow on row `arrow` (a loop's on `rows`, out and back);
    /// nothing for an observation or a step not started.
    #[allow(clippy::too_many_arguments)]
    fn draw_arrow(
        &self,
        msg: &Message,
        state: State,
        failing: bool,
        rows: [Option<u16>; 2],
        arrow: Option<u16>,
        body: Rect,
        lanes: &[u16; 4],
        buf: &mut Buffer,
    ) {
        let app = self.app;
        let style = self.state_style(state);
        let right = body.right();
        let from = body.x + lanes[lane_of(msg.from)];
        let to = body.x + lanes[lane_of(msg.to)];
        // A message no step checks is still part of the flow: its arrow is
        // drawn, in the colour of what has not run.
        let unchecked = msg.step_ids().next().is_none();
        if msg.kind == Kind::Observation || (state == State::Pending && !unchecked) {
            return;
        }
        let reply = msg.kind == Kind::Reply;
        let (line, head_r, head_l) = match (state, reply) {
            (State::Done(Status::Fail), false) => ("━", "✘", "✘"),
            (State::Done(Status::Fail), true) => ("╍", "✘", "✘"),
            (State::Done(Status::Skipped), _) => ("┄", "▷", "◁"),
            (_, true) => ("╌", "▶", "◀"),
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
        let Some(y) = arrow else { return };
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
        if state == State::Running && hi > lo + 2 {
            let span = hi - lo - 2;
            let k = (app.tick as u16) % span;
            let x = if from < to { lo + 1 + k } else { hi - 1 - k };
            set(buf, x, y, "•", line_style, right);
        }
    }
}

fn join_ids(ids: &[StepId]) -> String {
    ids.iter()
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
    if text::width(s) <= room {
        return s.to_string();
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
