//! The detail pane: everything about the selected step, as lines of styled
//! text for a given width (pure; the view scrolls them).

use super::app::App;
use super::text::{self, Kind};
use super::theme::Theme;
use crate::model::{Evidence, STEPS, Status, StepId, TraceState};
use crate::sequence;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use serde_json::Value;

/// [`lines`], wrapped again only when the trace, the selection, the width
/// or the mode changed since the last frame (a step's text is wrapped once,
/// not 12 times a second).
pub fn lines_cached(st: &TraceState, app: &App, width: u16) -> Vec<Line<'static>> {
    let id = app.selected_id();
    let live = st
        .result(id)
        .is_none()
        .then_some((app.tick, (app.now_ms / 100.0) as u64));
    let key = super::app::DetailKey {
        generation: st.generation,
        selected: app.selected,
        width,
        theme: app.theme_idx,
        teaching: app.teaching,
        run: app.run,
        stream_closed: app.stream_closed,
        lab_gen: app.lab_gen,
        live,
    };
    if let Some((k, l)) = app.detail_cache.borrow().as_ref() {
        if *k == key {
            return l.clone();
        }
    }
    let l = lines(st, app, width);
    *app.detail_cache.borrow_mut() = Some((key, l.clone()));
    l
}

/// The lines of the detail pane for the selected step, wrapped to `width`.
pub fn lines(st: &TraceState, app: &App, width: u16) -> Vec<Line<'static>> {
    let th = app.theme();
    let w = width.max(20) as usize;
    let id = app.selected_id();
    let info = id.info();
    let result = st.result(id);
    let mut out: Vec<Line<'static>> = Vec::new();

    // Status chip, id, position in the flow.
    let (glyph, word, style) = match (result, st.is_running(id)) {
        (Some(r), _) => (
            r.status.glyph(),
            r.status.as_str().to_uppercase(),
            th.status(r.status),
        ),
        (None, true) => (app.spinner(), "RUNNING".to_string(), th.running),
        (None, false) => ("·", "PENDING".to_string(), th.pending),
    };
    out.push(Line::from(vec![
        Span::styled(
            format!(" {glyph} {word} "),
            style.add_modifier(Modifier::REVERSED | Modifier::BOLD),
        ),
        Span::raw(" "),
        Span::styled(id.as_str().to_string(), th.label),
        Span::styled(format!("  {}/{}", id.index() + 1, STEPS.len()), th.muted),
    ]));
    for l in text::wrap_words(info.title, w) {
        out.push(Line::styled(l, th.label));
    }
    // The messages of the flow this step verifies, numbered as drawn.
    for item in sequence::items() {
        let sequence::Item::Message { n, msg } = item else {
            continue;
        };
        if !msg.verifies(id) {
            continue;
        }
        let (name, who) = match msg.kind {
            sequence::Kind::Observation => ("reads", format!("{n} {}", msg.from.label())),
            _ if msg.from == msg.to => ("hop", format!("{n} {} (inside)", msg.from.label())),
            _ => (
                "hop",
                format!("{n} {} → {}", msg.from.label(), msg.to.label()),
            ),
        };
        out.extend(field(name, who, th, w));
        for l in text::wrap_words(msg.text, w.saturating_sub(2)) {
            out.push(Line::from(vec![
                Span::raw("  "),
                Span::styled(l, th.text.add_modifier(Modifier::ITALIC)),
            ]));
        }
    }

    // Timing.
    match (result, st.running.iter().find(|(r, _)| *r == id)) {
        (Some(r), _) if r.status != Status::Skipped => {
            out.extend(field(
                "time",
                format!(
                    "{:.1} ms · started at +{:.1} ms",
                    r.duration_ms, r.started_ms
                ),
                th,
                w,
            ));
        }
        (None, Some((_, at))) => {
            out.extend(field(
                "time",
                format!(
                    "running {:.0} ms · started at +{at:.1} ms",
                    (app.now_ms - at).max(0.0)
                ),
                th,
                w,
            ));
        }
        _ => {}
    }
    if let Some(prev) = app.changed(st, id) {
        let now = result.map(|r| r.status).unwrap_or(prev);
        out.push(Line::from(vec![
            Span::styled("Δ changed: ", th.changed),
            Span::styled(
                format!(
                    "{} {} in run {}, {} {} now",
                    prev.glyph(),
                    prev.as_str(),
                    app.run - 1,
                    now.glyph(),
                    now.as_str()
                ),
                th.text,
            ),
        ]));
    }

    out.extend(super::teach::applied_lines(app, w));
    // Teaching mode: the hop's page when it is the selected step's hop.
    let hop_page = super::teach::current(app).is_some_and(|m| m.verifies(id));
    if hop_page {
        out.extend(super::teach::intro(app, w));
    } else if app.teaching.is_some() {
        out.push(Line::raw(""));
        out.push(heading("What happens at this hop", th));
        for l in text::wrap_words(info.explain, w.saturating_sub(2)) {
            out.push(Line::from(vec![Span::raw("  "), Span::styled(l, th.text)]));
        }
    }

    match result {
        None if st.is_running(id) => {
            out.push(Line::raw(""));
            out.push(Line::styled(
                format!("{} probing…", app.spinner()),
                th.running,
            ));
        }
        None => {
            out.push(Line::raw(""));
            let waits = if info.needs.is_empty() {
                "not started yet".to_string()
            } else {
                format!("not started yet; needs {}", join_ids(info.needs))
            };
            for l in text::wrap_words(&waits, w) {
                out.push(Line::styled(l, th.muted));
            }
            if hop_page {
                out.extend(super::teach::object_lines(st, app, w));
            }
        }
        Some(r) => {
            if !r.blocked_by.is_empty() {
                out.push(Line::from(vec![
                    Span::styled("blocked by ", th.label),
                    Span::styled(join_ids(&r.blocked_by), th.fail),
                ]));
            }
            if let Some(f) = r
                .finding
                .as_ref()
                .filter(|_| r.status != crate::model::Status::Skipped)
            {
                out.push(Line::raw(""));
                out.push(heading("Cause", th));
                out.push(Line::from(vec![
                    Span::raw("  "),
                    Span::styled(f.code.clone(), th.accent),
                ]));
                for l in text::wrap_words(&f.summary, w.saturating_sub(2)) {
                    out.push(Line::from(vec![Span::raw("  "), Span::styled(l, th.text)]));
                }
            }
            if let Some(d) = &r.diagnosis {
                out.push(Line::raw(""));
                out.push(heading("Diagnosis", th));
                for l in text::wrap_words(d, w.saturating_sub(2)) {
                    out.push(Line::from(vec![Span::raw("  "), Span::styled(l, th.text)]));
                }
            }
            match &r.finding {
                Some(f) if !f.commands.is_empty() || f.note.is_some() => {
                    out.push(Line::raw(""));
                    out.push(heading("Fix", th));
                    for c in &f.commands {
                        out.extend(command_lines(c, w, th));
                    }
                    if let Some(n) = &f.note {
                        for l in text::wrap_words(n, w.saturating_sub(2)) {
                            out.push(Line::from(vec![Span::raw("  "), Span::styled(l, th.muted)]));
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if let Some(h) = &r.hint {
                        out.push(Line::raw(""));
                        out.push(heading("Fix", th));
                        out.extend(hint_lines(h, w, th));
                    }
                }
            }
            if hop_page {
                out.extend(super::teach::object_lines(st, app, w));
            }
            out.push(Line::raw(""));
            // The whole URL, wrapped: a cut link opens nothing.
            let url = r
                .finding
                .as_ref()
                .map(|f| f.doc.clone())
                .unwrap_or_else(|| id.doc_url());
            out.extend(field("docs", url, th, w));
            if !r.evidence.is_empty() {
                out.push(Line::raw(""));
                out.push(heading("Evidence", th));
                evidence_lines(&r.evidence, 2, w, th, &mut out);
            }
        }
    }
    out
}

fn join_ids(ids: &[StepId]) -> String {
    ids.iter()
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn heading(s: &str, th: &Theme) -> Line<'static> {
    Line::styled(s.to_string(), th.label.add_modifier(Modifier::UNDERLINED))
}

/// `name value`, the value wrapped under itself.
fn field(name: &str, value: String, th: &Theme, w: usize) -> Vec<Line<'static>> {
    let lead = text::width(name) + 1;
    text::wrap_hard(&value, w.saturating_sub(lead), w.saturating_sub(lead))
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let head = if i == 0 {
                Span::styled(format!("{name} "), th.label)
            } else {
                Span::raw(" ".repeat(lead))
            };
            Line::from(vec![head, Span::styled(piece, th.text)])
        })
        .collect()
}

/// One command of a fix: on one line when it fits the pane, else broken at
/// spaces with shell continuations (` \`), so it still pastes whole.
pub fn command_lines(c: &str, w: usize, th: &Theme) -> Vec<Line<'static>> {
    let indent = 2usize;
    text::layout_command(c, w.saturating_sub(indent))
        .into_iter()
        .map(|parts| {
            let mut spans = vec![Span::raw(" ".repeat(indent))];
            spans.extend(parts.into_iter().map(|(s, kind)| {
                let style = match kind {
                    Kind::Prose => th.text,
                    Kind::Code => th.code,
                    Kind::Continuation => th.muted,
                };
                Span::styled(s, style)
            }));
            Line::from(spans)
        })
        .collect()
}

/// A fix: prose wraps at words; a command stays on one line whenever it fits
/// the pane, and is otherwise broken at spaces with shell continuations
/// (` \`) so that it can still be pasted whole.
pub fn hint_lines(h: &str, w: usize, th: &Theme) -> Vec<Line<'static>> {
    let indent = 2usize;
    text::layout_hint(h, w.saturating_sub(indent))
        .into_iter()
        .map(|parts| {
            let mut spans = vec![Span::raw(" ".repeat(indent))];
            spans.extend(parts.into_iter().map(|(s, kind)| {
                let style = match kind {
                    Kind::Prose => th.text,
                    Kind::Code => th.code,
                    Kind::Continuation => th.muted,
                };
                Span::styled(s, style)
            }));
            Line::from(spans)
        })
        .collect()
}

/// Evidence as `key: value`, nested objects indented, arrays of scalars
/// inline when they fit, YAML-like `- ` items otherwise.
pub fn evidence_lines(
    ev: &Evidence,
    indent: usize,
    w: usize,
    th: &Theme,
    out: &mut Vec<Line<'static>>,
) {
    for (k, v) in ev {
        value_lines(Some(k), v, indent, "", w, th, out);
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if s.is_empty() => Some("\"\"".into()),
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn value_lines(
    key: Option<&str>,
    v: &Value,
    indent: usize,
    bullet: &str,
    w: usize,
    th: &Theme,
    out: &mut Vec<Line<'static>>,
) {
    let key_style = th.accent.remove_modifier(Modifier::BOLD);
    let mut head = vec![Span::raw(" ".repeat(indent))];
    if !bullet.is_empty() {
        head.push(Span::styled(bullet.to_string(), th.muted));
    }
    let lead = indent + bullet.len();
    if let Some(k) = key {
        head.push(Span::styled(format!("{k}:"), key_style));
    }
    let key_w = key.map(|k| text::width(k) + 1).unwrap_or(0);
    if let Some(s) = scalar(v) {
        let start = lead + key_w + usize::from(key.is_some());
        let style = if v.is_null() || v.as_str() == Some("") {
            th.muted
        } else {
            th.text
        };
        // A value that does not fit after its key but fits a line of its own goes there, whole.
        let own = lead + 2;
        let sw = text::width(&s);
        if key.is_some() && start + sw > w && own + sw <= w {
            out.push(Line::from(head));
            out.push(Line::from(vec![
                Span::raw(" ".repeat(own)),
                Span::styled(s, style),
            ]));
            return;
        }
        // Otherwise after the key, continued under it (YAML-like), or under
        // itself for a key-less list item.
        let hang = if key.is_some() { own } else { start };
        let first_room = w.saturating_sub(start).max(8);
        let room = w.saturating_sub(hang).max(8);
        let pieces = text::wrap_hard(&s, first_room, room);
        let mut it = pieces.into_iter();
        if key.is_some() {
            head.push(Span::raw(" "));
        }
        head.push(Span::styled(it.next().unwrap_or_default(), style));
        out.push(Line::from(head));
        for p in it {
            out.push(Line::from(vec![
                Span::raw(" ".repeat(hang)),
                Span::styled(p, style),
            ]));
        }
        return;
    }
    match v {
        Value::Array(items) => {
            // Scalars that fit on one line: inline.
            if items.iter().all(|i| scalar(i).is_some()) {
                let inline = format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|i| scalar(i).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if lead + key_w + 1 + text::width(&inline) <= w {
                    if key.is_some() {
                        head.push(Span::raw(" "));
                    }
                    head.push(Span::styled(inline, th.text));
                    out.push(Line::from(head));
                    return;
                }
            }
            if key.is_some() {
                out.push(Line::from(head));
            }
            let child = if key.is_some() { lead + 2 } else { lead };
            for item in items {
                match item {
                    Value::Object(o) if !o.is_empty() => {
                        // "- first: v" then the other keys under "first".
                        let mut first = true;
                        for (k, v) in o {
                            if first {
                                value_lines(Some(k), v, child, "- ", w, th, out);
                                first = false;
                            } else {
                                value_lines(Some(k), v, child + 2, "", w, th, out);
                            }
                        }
                    }
                    other => value_lines(None, other, child, "- ", w, th, out),
                }
            }
        }
        Value::Object(o) => {
            out.push(Line::from(head));
            let child = if key.is_some() { lead + 2 } else { lead };
            for (k, v) in o {
                value_lines(Some(k), v, child, "", w, th, out);
            }
        }
        _ => unreachable!("scalars handled above"),
    }
}
