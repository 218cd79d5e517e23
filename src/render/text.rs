//! `-o text`: a checklist in flow order, one line per step; failures and
//! warnings get their diagnosis, fix and doc link indented below.

use crate::model::{Evidence, Status, StepResult, TraceReport};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, Default)]
pub struct TextStyle {
    pub color: bool,
    /// Show evidence for every step, not only the ones that did not pass.
    pub verbose: bool,
    /// ASCII status markers instead of Unicode glyphs.
    pub ascii: bool,
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
        "meshtrace: primary {:?} -> remote {:?} (namespace {})",
        t.primary, t.remote, t.istio_namespace
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
        format!("{:>7.1} ms", r.duration_ms)
    };
    let _ = writeln!(
        out,
        " {} {:<24} {:<66} {}",
        status_mark(r.status, style),
        r.id.as_str(),
        r.title,
        paint(&timing, "2", style)
    );
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
                let _ = writeln!(
                    out,
                    "      {} {}",
                    paint(&f.code, "1", style),
                    wrap(&f.summary, 100, "      ")
                );
                if let Some(d) = &r.diagnosis {
                    let _ = writeln!(out, "      {}", wrap(d, 100, "      "));
                }
                if !f.commands.is_empty() {
                    let _ = writeln!(out, "      {}", paint("fix:", "1", style));
                    for c in &f.commands {
                        // Unwrapped: a command is copied and pasted whole.
                        let _ = writeln!(out, "        {c}");
                    }
                }
                if let Some(n) = &f.note {
                    let _ = writeln!(out, "      {}", wrap(n, 100, "      "));
                }
                let _ = writeln!(out, "      {} {}", paint("see", "2", style), f.doc);
            }
            // A recording made before findings existed.
            None => {
                if let Some(d) = &r.diagnosis {
                    let _ = writeln!(out, "      {}", wrap(d, 100, "      "));
                }
                if let Some(h) = &r.hint {
                    let _ = writeln!(out, "      {} {}", paint("fix:", "1", style), h);
                }
                let _ = writeln!(out, "      {} {}", paint("see", "2", style), r.link);
            }
        }
    }
    if style.verbose || show_detail {
        evidence_lines(&r.evidence, 6, &mut out);
    }
    out
}

fn evidence_lines(ev: &Evidence, indent: usize, out: &mut String) {
    for (k, v) in ev {
        let val = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        let val = if val.chars().count() > 160 {
            format!("{}…", val.chars().take(160).collect::<String>())
        } else {
            val
        };
        let _ = writeln!(out, "{:indent$}· {k}: {val}", "", indent = indent);
    }
}

/// Greedy word wrap; keeps commands on one line where they fit.
fn wrap(s: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in s.split(' ') {
        let w = word.chars().count();
        if line > 0 && line + 1 + w > width {
            out.push('\n');
            out.push_str(indent);
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += w;
    }
    out
}

pub fn render(r: &TraceReport, style: TextStyle) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", header(r));
    for s in &r.steps {
        out.push_str(&step_block(s, style));
    }
    let line = super::summary_line(r);
    let code = match r.verdict {
        crate::model::Verdict::Pass => "1;32",
        crate::model::Verdict::Warn => "1;33",
        crate::model::Verdict::Fail => "1;31",
    };
    let _ = writeln!(out, "\n{}", paint(&line, code, style));
    out
}
