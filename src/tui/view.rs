//! The whole screen as a pure function of (trace state, UI state, theme):
//! header, sequence diagram, detail pane, footer, help overlay.

use super::app::{App, Focus};
use super::diagram::{self, Diagram};
use super::{detail, text};
use crate::model::{STEPS, Status, TraceState, Verdict};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Cell, Clear, Paragraph, Row, Scrollbar, ScrollbarOrientation,
    ScrollbarState, Table,
};

/// Smallest terminal the full-screen view is drawn for.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;
/// From this width on, diagram and detail sit side by side.
pub const SIDE_BY_SIDE: u16 = 100;

/// What the draw learnt that the key handling needs (scroll bounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewInfo {
    pub detail_max_scroll: u16,
    pub detail_page: u16,
    /// The diagram's inside and the detail pane, for the mouse.
    pub diagram_area: Rect,
    pub detail_area: Rect,
}

impl ViewInfo {
    /// Hand what the draw learnt to the UI state.
    pub fn apply(&self, app: &mut App) {
        app.detail_max_scroll = self.detail_max_scroll;
        app.detail_page = self.detail_page;
        app.diagram_area = self.diagram_area;
        app.detail_area = self.detail_area;
    }
}

pub fn draw(f: &mut Frame, st: &TraceState, app: &App) -> ViewInfo {
    let area = f.area();
    let th = app.theme();
    f.render_widget(Block::new().style(th.background), area);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small: {}x{}, meshtrace needs {MIN_WIDTH}x{MIN_HEIGHT} (q quits)",
            area.width, area.height
        );
        f.render_widget(
            Paragraph::new(text::wrap_words(&msg, area.width as usize).join("\n")).style(th.warn),
            area,
        );
        return ViewInfo::default();
    }
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(6),
        Constraint::Length(footer_rows(app, area.width)),
    ])
    .areas(area);
    draw_header(f, header, st, app);
    let (dia, det) = if area.width >= SIDE_BY_SIDE {
        let [a, b] = Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)])
            .areas(body);
        (a, b)
    } else {
        // Stacked (under 100 columns): about half each. The diagram turns
        // compact on a short terminal (one row a message), so at 80x24 it
        // shows seven messages and the detail nine lines.
        let dh = (body.height / 2).max(8).min(body.height.saturating_sub(5));
        let [a, b] = Layout::vertical([Constraint::Length(dh), Constraint::Min(5)]).areas(body);
        (a, b)
    };
    let diagram_area = draw_diagram(f, dia, st, app);
    let info = ViewInfo {
        diagram_area,
        detail_area: det,
        ..draw_detail(f, det, st, app)
    };
    draw_footer(f, footer, app);
    if app.help {
        draw_help(f, area, app);
    }
    if let Some(p) = &app.picker {
        super::picker::draw(f, area, app, p);
    }
    info
}

fn block<'a>(title: Line<'a>, focused: bool, app: &App) -> Block<'a> {
    let th = app.theme();
    Block::bordered()
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Plain
        })
        .border_style(if focused { th.border_focus } else { th.border })
        .title(title)
}

fn draw_header(f: &mut Frame, area: Rect, st: &TraceState, app: &App) {
    let th = app.theme();
    let t = &st.target;
    let mut l1 = vec![Span::styled(" meshtrace ", th.title), Span::raw(" ")];
    if let Some(file) = &app.replay {
        l1.push(Span::styled("replay ", th.accent));
        l1.push(Span::styled(file.clone(), th.label));
        l1.push(Span::styled(" · ", th.muted));
    }
    if t.primary.is_empty() && t.remote.is_empty() {
        l1.push(Span::styled("starting the trace…", th.muted));
    } else {
        let core = [
            Span::styled("primary ", th.muted),
            Span::styled(t.primary.clone(), th.label),
            Span::styled(" ⇄ ", th.muted),
            Span::styled("remote ", th.muted),
            Span::styled(t.remote_label(), th.label),
        ];
        let ns = vec![Span::styled(
            format!(" · ns {}", t.istio_namespace),
            th.muted,
        )];
        let mut lab = vec![];
        if t.mode == crate::model::Mode::Lab {
            lab.push(Span::styled(
                " · lab",
                th.accent.remove_modifier(Modifier::BOLD),
            ));
            if let Some(fault) = &t.fault {
                lab.push(Span::styled(" fault ", th.muted));
                lab.push(Span::styled(fault.clone(), th.warn));
            }
        }
        let w = |spans: &[Span]| spans.iter().map(|s| s.width()).sum::<usize>();
        let room = area.width as usize;
        // The fault matters more than the namespace, and the names more than their labels.
        let core: Vec<Span> = if w(&l1) + w(&core) + w(&lab) <= room {
            core.into()
        } else {
            vec![core[1].clone(), core[2].clone(), core[4].clone()]
        };
        l1.extend(core);
        if w(&l1) + w(&ns) + w(&lab) <= room {
            l1.extend(ns);
        }
        l1.extend(lab);
    }
    let l2 = status_line(st, app);
    f.render_widget(Paragraph::new(vec![Line::from(l1), l2]), area);
}

/// "FAIL at remote-rbac · 10 passed 1 failed 3 skipped · 128 ms", or the progress.
pub fn summary(st: &TraceState) -> String {
    let r = st.report();
    let mut counts = vec![format!("{} passed", r.count(Status::Pass))];
    for (s, word) in [
        (Status::Warn, "warned"),
        (Status::Fail, "failed"),
        (Status::Skipped, "skipped"),
    ] {
        let n = r.count(s);
        if n > 0 {
            counts.push(format!("{n} {word}"));
        }
    }
    let head = match (r.verdict, r.first_failure) {
        (Verdict::Fail, Some(id)) => format!("FAIL at {id}"),
        (Verdict::Warn, Some(id)) => format!("WARN at {id}"),
        _ => "PASS".to_string(),
    };
    format!("{head} · {} · {:.0} ms", counts.join(" "), r.total_ms)
}

fn status_line(st: &TraceState, app: &App) -> Line<'static> {
    let th = app.theme();
    let mut spans = vec![Span::raw(" ")];
    let done = st.results.len();
    let hiding = app
        .teaching
        .is_some_and(|_| app.revealed() < super::app::hops());
    if let Some(k) = app.teaching {
        spans.push(Span::styled(
            format!("teaching · hop {}/{}", k + 1, super::app::hops()),
            th.accent,
        ));
        spans.push(Span::styled(" · ", th.muted));
    }
    if st.finished.is_some() && !hiding {
        let r = st.report();
        let style = match r.verdict {
            Verdict::Pass => th.pass,
            Verdict::Warn => th.warn,
            Verdict::Fail => th.fail,
        }
        .add_modifier(Modifier::BOLD);
        let glyph = match r.verdict {
            Verdict::Pass => Status::Pass.glyph(),
            Verdict::Warn => Status::Warn.glyph(),
            Verdict::Fail => Status::Fail.glyph(),
        };
        spans.push(Span::styled(format!("{glyph} {}", summary(st)), style));
    } else if st.finished.is_some() {
        spans.push(Span::styled(
            format!(
                "the trace finished underneath ({:.0} ms); Space/→ reveals the next hop",
                st.finished.unwrap_or(0.0)
            ),
            th.muted,
        ));
    } else if !app.running(st) {
        spans.push(Span::styled(
            format!(
                "{} the trace stopped early · {done}/{} finished",
                Status::Warn.glyph(),
                STEPS.len()
            ),
            th.warn,
        ));
    } else {
        spans.push(Span::styled(
            format!(
                "{} tracing · {done}/{} finished · {} running · {:.0} ms",
                app.spinner(),
                STEPS.len(),
                st.running.len(),
                app.now_ms
            ),
            th.running,
        ));
    }
    if app.run > 1 {
        spans.push(Span::styled(format!("  run {}", app.run), th.muted));
        if st.finished.is_some() && !hiding {
            let n = STEPS
                .iter()
                .filter(|s| app.changed(st, s.id).is_some())
                .count();
            if n > 0 {
                spans.push(Span::styled(
                    format!(" · Δ {n} changed since run {}", app.run - 1),
                    th.changed,
                ));
            } else {
                spans.push(Span::styled(
                    format!(" · nothing changed since run {}", app.run - 1),
                    th.muted,
                ));
            }
        }
    }
    if let Some(left) = app.next_run_in {
        spans.push(Span::styled(
            format!("  · watch: next run in {}s", left.as_secs() + 1),
            th.muted,
        ));
    }
    Line::from(spans)
}

/// Returns the diagram's inside (where its rows are, for the mouse).
fn draw_diagram(f: &mut Frame, area: Rect, st: &TraceState, app: &App) -> Rect {
    let th = app.theme();
    let focused = app.focus == Focus::Diagram;
    let done = st.results.len();
    let progress = match app.teaching {
        Some(k) => format!("hop {}/{} ", k + 1, super::app::hops()),
        None => format!("{done}/{} ", STEPS.len()),
    };
    let mut title = vec![
        Span::styled(" Sequence ", th.label),
        Span::styled(progress, th.muted),
    ];
    if let Some(hits) = &app.filter_hits {
        title.push(Span::styled(
            format!("/{} {} of {} ", app.filter, hits.len(), STEPS.len()),
            th.accent,
        ));
    }
    let title = Line::from(title);
    let b = block(title, focused, app);
    let inner = b.inner(area);
    f.render_widget(b, area);
    f.render_widget(Diagram { st, app }, inner);
    let compact = diagram::compact(inner.height);
    let head = diagram::head_rows(compact);
    let body_h = inner.height.saturating_sub(head);
    let (off, total) = diagram::scroll(st, app, inner.width, body_h, compact);
    if total > body_h {
        let mut sb = ScrollbarState::new((total - body_h) as usize)
            .position(off as usize)
            .viewport_content_length(body_h as usize);
        let sb_area = Rect {
            y: area.y + 1 + head,
            height: area.height.saturating_sub(2 + head),
            ..area
        };
        f.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight)
                .style(th.border)
                .begin_symbol(None)
                .end_symbol(None),
            sb_area,
            &mut sb,
        );
    }
    inner
}

fn draw_detail(f: &mut Frame, area: Rect, st: &TraceState, app: &App) -> ViewInfo {
    let th = app.theme();
    let focused = app.focus == Focus::Detail;
    let id = app.selected_id();
    let title = Line::from(vec![
        Span::styled(" Detail ", th.label),
        Span::styled(format!("{} ", id.as_str()), th.muted),
    ]);
    let b = block(title, focused, app);
    let inner = b.inner(area);
    // One column for the scrollbar, one of padding on the left.
    let text_area = Rect {
        x: inner.x + 1,
        width: inner.width.saturating_sub(2),
        ..inner
    };
    let lines = detail::lines_cached(st, app, text_area.width);
    let n_lines = lines.len() as u16;
    let max = (lines.len() as u16).saturating_sub(text_area.height);
    let scroll = app.detail_scroll.min(max);
    f.render_widget(b, area);
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), text_area);
    if max > 0 {
        let mut sb = ScrollbarState::new(max as usize)
            .position(scroll as usize)
            .viewport_content_length(text_area.height as usize);
        let sb_area = Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(2),
            ..area
        };
        f.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight)
                .style(th.border)
                .begin_symbol(None)
                .end_symbol(None),
            sb_area,
            &mut sb,
        );
        let more = format!(
            " {}/{} PgDn ",
            scroll + text_area.height.min(n_lines),
            n_lines
        );
        let w = text::width(&more) as u16;
        if area.width > w + 4 {
            f.buffer_mut()
                .set_string(area.right() - w - 2, area.bottom() - 1, more, th.muted);
        }
    }
    ViewInfo {
        detail_max_scroll: max,
        detail_page: text_area.height.saturating_sub(1).max(1),
        ..Default::default()
    }
}

/// The footer's keys: key, what it does, and a shorter form for narrow
/// terminals. `essential` keys are never dropped (the ones the issue found
/// missing at 80 columns among them).
#[derive(Clone, Copy)]
struct FooterKey {
    key: &'static str,
    long: &'static str,
    short: &'static str,
    essential: bool,
}

const fn fk(
    key: &'static str,
    long: &'static str,
    short: &'static str,
    essential: bool,
) -> FooterKey {
    FooterKey {
        key,
        long,
        short,
        essential,
    }
}

const TRACE_KEYS: &[FooterKey] = &[
    fk("↑↓", "select", "step", false),
    fk("⏎", "open", "open", false),
    fk("Esc", "back", "back", false),
    fk("/", "filter", "find", false),
    fk("PgUp/Dn", "scroll", "scroll", false),
    fk("r", "re-run", "rerun", true),
    fk("y", "copy fix", "copy", true),
    fk("t", "theme", "theme", true),
    fk("?", "help", "help", true),
    fk("q", "quit", "quit", true),
];

const TEACH_KEYS: &[FooterKey] = &[
    fk("Space/→", "next hop", "next", true),
    fk("←", "back", "back", true),
    fk("↑↓", "select", "step", false),
    fk("⏎", "open", "open", false),
    fk("PgUp/Dn", "scroll", "scroll", false),
    fk("r", "re-run", "rerun", true),
    fk("y", "copy fix", "copy", false),
    fk("t", "theme", "theme", true),
    fk("?", "help", "help", true),
    fk("q", "quit", "quit", true),
];

/// Rows the footer needs at `width`: the keys' row, and above it up to two
/// rows for a note too long to sit beside them (shown whole, never over
/// the keys).
pub fn footer_rows(app: &App, width: u16) -> u16 {
    1 + note_lines(app, width).len() as u16
}

/// The note's own rows when it does not fit beside the essential keys.
fn note_lines(app: &App, width: u16) -> Vec<String> {
    let Some(n) = &app.note else { return vec![] };
    let keys: usize = footer_keys(app, 0)
        .iter()
        .map(|(k, w)| text::width(k) + 1 + text::width(w) + 2)
        .sum();
    if 1 + keys + text::width(n) + 2 <= width as usize {
        return vec![];
    }
    let mut lines = text::wrap_words(n, width.saturating_sub(2) as usize);
    if lines.len() > 2 {
        lines.truncate(2);
        lines[1] = format!("{}…", lines[1].trim_end());
    }
    lines
}

/// The keys that fit in `room` cells: the long forms if they all fit,
/// else the short ones, dropping the non-essential from the end.
fn footer_keys(app: &App, room: usize) -> Vec<(&'static str, &'static str)> {
    let keys = if app.teaching.is_some() {
        TEACH_KEYS
    } else {
        TRACE_KEYS
    };
    // The lab's b and f, next to the hop keys they act on.
    let with_lab: Vec<FooterKey>;
    let keys: &[FooterKey] = if app.lab_controls {
        with_lab = keys[..2]
            .iter()
            .copied()
            .chain([fk("b", "break", "break", true), fk("f", "fix", "fix", true)])
            .chain(keys[2..].iter().copied())
            .collect();
        &with_lab
    } else {
        keys
    };
    // In a replay, r plays the recording again: say so.
    let what = |k: &FooterKey, long: bool| -> &'static str {
        match (k.key, app.replay.is_some(), long) {
            ("r", true, true) => "replay again",
            ("r", true, false) => "replay",
            (_, _, true) => k.long,
            (_, _, false) => k.short,
        }
    };
    let cost = |k: &str, w: &str| text::width(k) + 1 + text::width(w) + 2;
    let all_long: usize = 1 + keys
        .iter()
        .map(|k| cost(k.key, what(k, true)))
        .sum::<usize>();
    if all_long <= room {
        return keys.iter().map(|k| (k.key, what(k, true))).collect();
    }
    let mut used = 1 + keys
        .iter()
        .filter(|k| k.essential)
        .map(|k| cost(k.key, what(k, false)))
        .sum::<usize>();
    let mut shown = vec![];
    for k in keys {
        let c = cost(k.key, what(k, false));
        if k.essential {
            shown.push((k.key, what(k, false)));
        } else if used + c <= room {
            used += c;
            shown.push((k.key, what(k, false)));
        }
    }
    shown
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let th = app.theme();
    if app.filter_editing {
        let hits = app.filter_hits.as_ref().map_or(STEPS.len(), Vec::len);
        let line = Line::from(vec![
            Span::styled(format!(" /{}", app.filter), th.accent),
            Span::styled("▏", th.accent),
            Span::styled(format!("  {hits} of {} steps  ", STEPS.len()), th.muted),
            Span::styled("type: id, code or title · Enter keep · Esc clear", th.muted),
        ]);
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    let note_style = th.accent.remove_modifier(Modifier::BOLD);
    // A note too long for the keys' row gets rows of its own above it.
    let own = note_lines(app, area.width);
    let area = if own.is_empty() {
        area
    } else {
        let [notes, keys] =
            Layout::vertical([Constraint::Length(own.len() as u16), Constraint::Length(1)])
                .areas(area);
        let lines: Vec<Line> = own
            .into_iter()
            .map(|l| Line::styled(format!(" {l}"), note_style))
            .collect();
        f.render_widget(Paragraph::new(lines), notes);
        keys
    };
    let beside = if app.note.is_some() && area.height == 1 && footer_rows(app, area.width) == 1 {
        app.note.clone()
    } else {
        None
    };
    let right = match &beside {
        Some(n) => n.clone(),
        None if !app.filter.is_empty() => format!("/{}", app.filter),
        None => format!("theme {}", th.name),
    };
    let full = area.width as usize;
    let with_right = footer_keys(app, full.saturating_sub(text::width(&right) + 2));
    // The theme's name is a courtesy: it goes before any key does.
    let (shown, right) = if beside.is_some()
        || !app.filter.is_empty()
        || with_right.len() == footer_keys(app, full).len()
    {
        (with_right, Some(right))
    } else {
        (footer_keys(app, full), None)
    };
    // Essential keys are never dropped: the note or theme on the right goes
    // when it would overwrite them.
    let used: usize = 1 + shown
        .iter()
        .map(|(k, w)| text::width(k) + 1 + text::width(w) + 2)
        .sum::<usize>();
    let right = right.filter(|r| used + text::width(r) < full);
    let mut spans = vec![Span::raw(" ")];
    for (k, what) in shown {
        spans.push(Span::styled(k.to_string(), th.accent));
        spans.push(Span::styled(format!(" {what}  "), th.muted));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
    if let Some(right) = right {
        let style = if beside.is_some() || !app.filter.is_empty() {
            note_style
        } else {
            th.muted
        };
        let w = text::width(&right) as u16;
        if area.width > w + 1 {
            f.buffer_mut()
                .set_stringn(area.right() - w - 1, area.y, &right, w as usize, style);
        }
    }
}

/// Key / action rows of the help overlay, grouped.
pub const HELP: &[(&str, &str)] = &[
    (
        "↑ ↓  j k  wheel",
        "select a step (scroll the detail when focused)",
    ),
    ("click", "select the step under the pointer"),
    (
        "Enter",
        "open the detail; on a blocked step, go to its blocker",
    ),
    ("Tab", "switch focus: diagram ⇄ detail"),
    (
        "Esc",
        "back: clear the filter, leave the detail; never quits",
    ),
    ("/", "filter by step id, finding code or title"),
    ("PgUp PgDn", "scroll the detail and its evidence"),
    ("g G  Home End", "first / last step"),
    (
        "Space → l  ← h",
        "teaching mode: the next hop / back one hop",
    ),
    ("b  f", "lab: break this hop (picker) / apply its fix"),
    ("r", "re-run the trace; Δ marks steps whose status changed"),
    ("y", "send the step's fix to the clipboard (OSC 52)"),
    ("t", "next theme"),
    ("Ctrl-Z", "suspend (fg resumes)"),
    ("?  F1", "this help (any key closes it)"),
    (
        "q  Ctrl-C",
        "quit; the text summary stays in the scrollback",
    ),
];

fn draw_help(f: &mut Frame, area: Rect, app: &App) {
    let th = app.theme();
    let g = |s: Status, word: &str| -> Vec<Span<'static>> {
        vec![
            Span::styled(s.glyph().to_string(), th.status(s)),
            Span::styled(format!(" {word}   "), th.text),
        ]
    };
    let mut l1 = vec![Span::raw(" ")];
    l1.extend(g(Status::Pass, "pass"));
    l1.extend(g(Status::Warn, "warn"));
    l1.extend(g(Status::Fail, "fail"));
    l1.extend(g(Status::Skipped, "skipped (blocked)"));
    let l2 = Line::from(vec![
        Span::raw(" "),
        Span::styled(app.spinner().to_string(), th.running),
        Span::styled(" running   ", th.text),
        Span::styled("·", th.pending),
        Span::styled(" not started   ", th.text),
        Span::styled("Δ", th.changed),
        Span::styled(" changed since the last run", th.text),
    ]);
    draw_help_table(f, area, th, HELP, Some(vec![Line::from(l1), l2]));
}

/// A `?` overlay: a key / action table and an optional legend under it.
pub fn draw_help_table(
    f: &mut Frame,
    area: Rect,
    th: &super::Theme,
    keys: &[(&str, &str)],
    legend: Option<Vec<Line<'static>>>,
) {
    let w = area.width.saturating_sub(4).min(80);
    let legend_rows = legend.as_ref().map_or(0, |l| l.len() as u16 + 1);
    let h = (keys.len() as u16 + legend_rows + 3).min(area.height.saturating_sub(2));
    let pop = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, pop);
    let b = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(th.border_focus)
        .title(Line::from(Span::styled(" Keys ", th.label)))
        .title_bottom(Line::from(Span::styled(" any key closes ", th.muted)).right_aligned())
        .style(th.background);
    let inner = b.inner(pop);
    f.render_widget(b, pop);
    let [table_area, legend_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(legend_rows)]).areas(inner);
    let key_w = keys.iter().map(|(k, _)| text::width(k)).max().unwrap_or(8) as u16;
    let rows = keys.iter().map(|(k, what)| {
        Row::new([
            Cell::from(Span::styled(*k, th.accent)),
            Cell::from(Span::styled(*what, th.text)),
        ])
    });
    let table = Table::new(rows, [Constraint::Length(key_w), Constraint::Fill(1)])
        .header(
            Row::new([Cell::from("key"), Cell::from("action")])
                .style(th.label.add_modifier(Modifier::UNDERLINED)),
        )
        .column_spacing(2);
    f.render_widget(
        table,
        Rect {
            x: table_area.x + 1,
            width: table_area.width.saturating_sub(2),
            ..table_area
        },
    );
    if let Some(legend) = legend {
        let a = Rect {
            y: legend_area.y + 1,
            height: legend_area.height.saturating_sub(1),
            ..legend_area
        };
        f.render_widget(Paragraph::new(legend), a);
    }
}
