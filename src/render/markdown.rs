//! `-o markdown`: a postmortem- or handout-ready page: summary, the sequence
//! diagram, a table of steps, and the details of every step that did not pass.

use crate::model::{Status, TraceReport};
use std::fmt::Write;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(r: &TraceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# meshtrace report\n");
    let _ = writeln!(out, "{}\n", super::text::header(r));
    if let (Some(v), Some(at)) = (&r.meshtrace_version, &r.started_at) {
        let _ = writeln!(out, "meshtrace {v}, run at {at}\n");
    }
    let _ = writeln!(out, "**{}**\n", super::summary_line(r));
    let _ = writeln!(out, "```mermaid\n{}```\n", super::mermaid::render(r));
    let _ = writeln!(
        out,
        "| | step | check | ms | result |\n|---|---|---|---:|---|"
    );
    for s in &r.steps {
        let result = match s.status {
            Status::Skipped if !s.blocked_by.is_empty() => {
                format!(
                    "blocked by {}",
                    s.blocked_by
                        .iter()
                        .map(|b| b.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Status::Pass => "pass".into(),
            _ => s
                .finding
                .as_ref()
                .map(|f| format!("`{}` {}", f.code, f.summary))
                .or_else(|| s.diagnosis.clone())
                .unwrap_or_else(|| s.status.as_str().into())
                .chars()
                .take(120)
                .collect(),
        };
        let _ = writeln!(
            out,
            "| {} | [`{}`]({}) | {} | {:.1} | {} |",
            s.status.glyph(),
            s.id,
            s.id.doc_url(),
            cell(&s.title),
            s.duration_ms,
            cell(&result)
        );
    }
    for s in r
        .steps
        .iter()
        .filter(|s| matches!(s.status, Status::Fail | Status::Warn))
    {
        let _ = writeln!(out, "\n## {} `{}`: {}\n", s.status.glyph(), s.id, s.title);
        match &s.finding {
            Some(f) => {
                let _ = writeln!(out, "**[`{}`]({})**: {}\n", f.code, f.doc, f.summary);
                if let Some(d) = &s.diagnosis {
                    let _ = writeln!(out, "{d}\n");
                }
                if !f.commands.is_empty() {
                    let _ = writeln!(out, "**Fix:**\n\n```sh\n{}\n```\n", f.commands.join("\n"));
                }
                if let Some(n) = &f.note {
                    let _ = writeln!(out, "{n}\n");
                }
            }
            None => {
                if let Some(d) = &s.diagnosis {
                    let _ = writeln!(out, "{d}\n");
                }
                if let Some(h) = &s.hint {
                    let _ = writeln!(out, "**Fix:** {h}\n");
                }
                let _ = writeln!(out, "See [{}]({}).\n", s.link, s.link);
            }
        }
        if !s.evidence.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>Evidence</summary>\n\n```json\n{}\n```\n</details>",
                serde_json::to_string_pretty(&s.evidence).unwrap_or_default()
            );
        }
    }
    out
}
