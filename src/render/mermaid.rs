//! `-o mermaid`: the flow as a Mermaid sequence diagram, one arrow per step,
//! marked with its status; the failing step gets a note with its diagnosis.

use crate::model::{Actor, Status, TraceReport};
use std::fmt::Write;

fn id(a: Actor) -> &'static str {
    a.short()
}

/// Mermaid treats some characters as syntax; keep labels plain.
fn clean(s: &str) -> String {
    s.replace([';', '#', '\n'], " ")
        .replace('"', "'")
        .replace("->", "to")
}

pub fn render(r: &TraceReport) -> String {
    let mut out = String::from("sequenceDiagram\n    autonumber\n");
    for a in Actor::ALL {
        let _ = writeln!(out, "    participant {} as {}", id(a), a.label());
    }
    for s in &r.steps {
        let info = s.id.info();
        let arrow = match s.status {
            Status::Pass | Status::Warn => "->>",
            Status::Fail => "-x",
            Status::Skipped => "--)",
        };
        let mark = match s.status {
            Status::Pass => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        };
        let _ = writeln!(
            out,
            "    {}{}{}: [{}] {}: {}",
            id(info.from),
            arrow,
            id(info.to),
            mark,
            s.id,
            clean(info.message)
        );
        if matches!(s.status, Status::Fail | Status::Warn) {
            if let Some(d) = &s.diagnosis {
                let short: String = d.chars().take(140).collect();
                let over = if info.from == info.to {
                    id(info.from).to_string()
                } else {
                    format!("{},{}", id(info.from), id(info.to))
                };
                let _ = writeln!(out, "    Note over {over}: {}", clean(&short));
            }
        }
    }
    out
}
