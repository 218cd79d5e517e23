//! `-o text`: a checklist in flow order, one line per step; failures and
//! warnings get their diagnosis, fix and doc link indented below.

use crate::model::{Evidence, Status, StepResult, TraceReport};
use serde_json::Value;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, Default)]
pub struct TextStyle {
    pub color: bool,
    /// Show evidence for every step, not only the ones that did not pass.
    pub verbose: bool,
    /// ASCII status markers instead of Unicode glyphs.
    pub ascii: bool,
    /// Columns to fit: the terminal's; 0 means [`PIPED_WIDTH`].
    pub width: usize,
}

/// The width text is laid out for when stdout is no terminal.
pub const PIPED_WIDTH: usize = 100;

impl TextStyle {
    fn cols(&self) -> usize {
        if self.width == 0 {
            PIPED_WIDTH
        } else {
            self.width.max(40)
        }
    }
}

fn paint(s: &str, code: &str, style: TextStyle) -> String {
    if style.color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

pub fn status_mark(st: Status, style: TextStyle) -> String {
    let g = if style.ascii { st.ascii() } else { st.glyph() };
    let code = match st {
        Status::Pass => "32",
        Status::Warn => "33",
        Status::Fail => "1;31",
        Status::Skipped => "2",
    };
    paint(g, code, style)
}

pub fn header(r: &TraceReport) -> String {
    header_for(&r.target)
}

pub fn header_for(t: &crate::model::Target) -> String {
    let mut s = format!(
        "meshtrace: primary {:?} -> remote {} (namespace {})",
        t.primary,
        match t.remote.is_empty() {
            false => format!("{:?}", t.remote),
            true => t.remote_label(),
        },
        t.istio_namespace
    );
    if t.mode == crate::model::Mode::Lab {
        s.push_str(" [built-in lab");
        if let Some(f) = &t.fault {
            let _ = write!(s, ", fault {f}");
        }
        s.push(']');
    }
    s
}

/// One step: the line, and below it what a reader needs when it did not pass.
pub fn step_block(r: &StepResult, style: TextStyle) -> String {
    let mut out = String::new();
    let timing = if r.status == Status::Skipped {
        String::new()
    } else {
        super::ms(r.duration_ms)
    };
    // `mark id title … time`: the title wraps under itself, the time ends
    // the first line, so that no line is longer than the terminal.
    let cols = style.cols();
    let id_w = 24;
    let lead =
        1 + text_width(if style.ascii {
            r.status.ascii()
        } else {
            r.status.glyph()
        }) + 1;
    let title_at = lead + id_w + 1;
    let room = cols.saturating_sub(title_at + timing.len() + 2).max(12);
    let title = textwrap::wrap(
        &r.title,
        textwrap::Options::new(room)
            .word_splitter(textwrap::WordSplitter::NoHyphenation)
            .break_words(false),
    );
    for (i, t) in title.iter().enumerate() {
        if i == 0 {
            let pad = room.saturating_sub(text_width(t));
            let _ = writeln!(
                out,
                " {} {:<id_w$} {t}{:pad$}  {}",
                status_mark(r.status, style),
                r.id.as_str(),
                "",
                paint(&timing, "2", style)
            );
        } else {
            let _ = writeln!(out, "{:title_at$}{t}", "");
        }
    }
    let show_detail = r.status == Status::Fail || r.status == Status::Warn;
    if r.status == Status::Skipped {
        if !r.blocked_by.is_empty() {
            let ids: Vec<_> = r.blocked_by.iter().map(|b| b.as_str()).collect();
            let _ = writeln!(
                out,
                "      {}",
                paint(&format!("blocked by {}", ids.join(", ")), "2", style)
            );
        } else if let Some(d) = &r.diagnosis {
            let _ = writeln!(out, "      {}", paint(d, "2", style));
        }
    }
    if show_detail {
        match &r.finding {
            Some(f) => {
                // The cause first, then the facts, then what to run.
                let cause = wrap(&format!("{} {}", f.code, f.summary), cols - 6, "      ");
                let rest = cause.strip_prefix(f.code.as_str()).unwrap_or(&cause);
                let _ = writeln!(out, "      {}{rest}", paint(&f.code, "1", style));
                if let Some(d) = &r.diagnosis {
                    let _ = writeln!(out, "      {}", wrap(d, cols - 6, "      "));
                }
                if !f.commands.is_empty() {
                    let _ = writeln!(out, "      {}", paint("fix:", "1", style));
                    for c in &f.commands {
                        // Unwrapped: a command is copied and pasted whole.
                        let _ = writeln!(out, "        {c}");
                    }
                }
                if let Some(n) = &f.note {
                    let _ = writeln!(out, "      {}", wrap(n, cols - 6, "      "));
                }
                let _ = writeln!(out, "      {} {}", paint("see", "2", style), f.doc);
            }
            // A recording made before findings existed.
            None => {
                if let Some(d) = &r.diagnosis {
                    let _ = writeln!(out, "      {}", wrap(d, cols - 6, "      "));
                }
                if let Some(h) = &r.hint {
                    let _ = writeln!(out, "      {} {}", paint("fix:", "1", style), h);
                }
                let _ = writeln!(out, "      {} {}", paint("see", "2", style), r.link);
            }
        }
    }
    if style.verbose || show_detail {
        evidence_lines(&r.evidence, 6, cols, &mut out);
    }
    out
}

/// Evidence as indented `key: value` lines, nested objects and lists
/// indented below their key, every value whole: a fingerprint or an address
/// cut short is worse than none.
fn evidence_lines(ev: &Evidence, indent: usize, cols: usize, out: &mut String) {
    for (k, v) in ev {
        value_lines(Some(k), v, indent, cols, out);
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match n.as_f64() {
            // A float as measured (`0.5234099999999999`) reads as noise.
            Some(f) if !n.is_i64() && !n.is_u64() => {
                let r = format!("{f:.3}");
                r.trim_end_matches('0').trim_end_matches('.').to_string()
            }
            _ => n.to_string(),
        }),
        Value::String(s) if s.is_empty() => Some("\"\"".into()),
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn value_lines(key: Option<&str>, v: &Value, indent: usize, cols: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let head = match key {
        Some(k) => format!("{pad}{k}:"),
        None => format!("{pad}-"),
    };
    if let Some(s) = scalar(v) {
        // A value that does not fit after its key but fits a line of its own
        // goes there, whole (a fingerprint).
        let own = indent + 2 + text_width(&s);
        if key.is_some() && text_width(&head) + 1 + text_width(&s) > cols && own <= cols {
            let _ = writeln!(out, "{head}\n{:w$}{s}", "", w = indent + 2);
            return;
        }
        // Wrapped at spaces under the value; a word longer than the line stays whole.
        let first = format!("{head} ");
        let hang = " ".repeat(indent + 2);
        let opts = textwrap::Options::new(cols.max(first.len() + 8))
            .initial_indent(&first)
            .subsequent_indent(&hang)
            .word_splitter(textwrap::WordSplitter::NoHyphenation)
            .break_words(false);
        for l in textwrap::wrap(&s, opts) {
            let _ = writeln!(out, "{}", l.trim_end());
        }
        return;
    }
    match v {
        Value::Array(items) => {
            let inline = items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|x| format!("[{}]", x.join(", ")));
            if let Some(line) = inline.filter(|l| text_width(&head) + 1 + text_width(l) <= cols) {
                let _ = writeln!(out, "{head} {line}");
                return;
            }
            let _ = writeln!(out, "{head}");
            for item in items {
                match item {
                    Value::Object(o) if !o.is_empty() => {
                        // `- first: v`, the other keys under `first`.
                        let mut item = String::new();
                        for (k, v) in o {
                            value_lines(Some(k), v, indent + 4, cols, &mut item);
                        }
                        let _ = write!(out, "{pad}  - {}", &item[indent + 4..]);
                    }
                    other => value_lines(None, other, indent + 2, cols, out),
                }
            }
        }
        Value::Object(o) => {
            let _ = writeln!(out, "{head}");
            for (k, v) in o {
                value_lines(Some(k), v, indent + 2, cols, out);
            }
        }
        _ => unreachable!("scalars handled above"),
    }
}

fn text_width(s: &str) -> usize {
    textwrap::core::display_width(s)
}

/// Word wrap at spaces, later lines indented by `indent`; a word longer
/// than the line (a URL, a name) stays whole.
fn wrap(s: &str, width: usize, indent: &str) -> String {
    // Names (`istio-reader-service-account`) stay whole, hyphens and all:
    // they are copied from here.
    let opts = textwrap::Options::new(width.max(20))
        .subsequent_indent(indent)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .break_words(false);
    textwrap::wrap(s, opts).join("\n")
}

pub fn render(r: &TraceReport, style: TextStyle) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", wrap(&header(r), style.cols(), "  "));
    for s in &r.steps {
        out.push_str(&step_block(s, style));
    }
    let line = super::summary_line(r);
    let code = match r.verdict {
        crate::model::Verdict::Pass => "1;32",
        crate::model::Verdict::Warn => "1;33",
        crate::model::Verdict::Fail => "1;31",
    };
    let _ = writeln!(
        out,
        "\n{}",
        paint(&wrap(&line, style.cols(), "  "), code, style)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StepId, StepResult, TraceEvent, TraceState};
    use serde_json::json;

    const SHA: &str = "sha256:2fe950da893574eeed2b1b6588a9edee18f2532306baa8fa166cd8cf61309a8c";

    fn report() -> TraceReport {
        let mut st = TraceState::default();
        let mut fail = StepResult {
            id: StepId::RemoteApiTls,
            title: "Remote API server reachable and trusted with the secret's CA data".into(),
            status: Status::Fail,
            duration_ms: 0.5234099999999999,
            started_ms: 0.0,
            evidence: Default::default(),
            finding: Some(crate::findings::Finding {
                code: "remote-api-tls/unknown-ca".into(),
                summary: "the remote API server's certificate is not signed by the secret's certificate-authority-data, so istiod cannot sync the remote".into(),
                commands: vec!["kubectl --context lab-remote -n istio-system get secret istio-remote-secret-remote -o jsonpath='{.data.remote}'".into()],
                note: None,
                doc: crate::findings::doc_url("remote-api-tls/unknown-ca"),
            }),
            diagnosis: Some("istio-reader-service-account-token-something-long and a diagnosis long enough to need three lines at eighty columns, with a name at the end istio-reader-clusterrole-istio-system".into()),
            hint: None,
            link: StepId::RemoteApiTls.doc_link(),
            blocked_by: vec![],
        };
        fail.evidence = match json!({
            "fingerprint": SHA,
            "took_ms": 0.5234099999999999,
            "chain": [{ "subject": "CN=a", "issuer": "CN=b" }, { "subject": "CN=b", "issuer": "CN=b" }],
            "sans": ["a", "b"],
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        st.apply(&TraceEvent::StepFinished { result: fail });
        st.report()
    }

    fn style(width: usize) -> TextStyle {
        TextStyle {
            verbose: true,
            width,
            ..Default::default()
        }
    }

    #[test]
    fn every_line_but_a_command_fits_the_width() {
        for width in [80, 100, 132] {
            let out = render(&report(), style(width));
            for l in out.lines() {
                // A command and a link are copied whole: never wrapped.
                let cmd = l.trim_start().starts_with("kubectl ");
                let link = l.trim_start().starts_with("see https://")
                    && !l.trim_start()[4..].contains(' ');
                assert!(
                    cmd || link || l.chars().count() <= width,
                    "{width}: {} chars: {l}",
                    l.chars().count()
                );
            }
            // The command stays whole, on one line, to paste.
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with("kubectl ")
                        && l.ends_with("'{.data.remote}'"))
            );
            // Names are not cut at their hyphens.
            assert!(
                out.contains("istio-reader-clusterrole-istio-system"),
                "{out}"
            );
        }
        assert_eq!(style(0).cols(), PIPED_WIDTH);
    }

    #[test]
    fn evidence_is_indented_key_value_lines_never_cut() {
        let out = render(&report(), style(80));
        assert!(
            out.contains(&format!("      fingerprint:\n        {SHA}\n")),
            "{out}"
        );
        let wide = render(&report(), style(100));
        assert!(
            wide.contains(&format!("      fingerprint: {SHA}\n")),
            "{wide}"
        );
        assert!(out.contains("      took_ms: 0.523\n"), "{out}");
        assert!(
            out.contains("      chain:\n        - subject: CN=a\n          issuer: CN=b\n        - subject: CN=b\n"),
            "{out}"
        );
        assert!(out.contains("      sans: [a, b]\n"), "{out}");
        assert!(
            !out.contains('{') || out.contains("'{.data.remote}'"),
            "no inline JSON: {out}"
        );
        // The step's time, rounded.
        assert!(out.contains("0.52 ms"), "{out}");
        assert!(!out.contains("0.5234"), "{out}");
    }
}
