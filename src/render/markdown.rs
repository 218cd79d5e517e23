//! `-o markdown`: a postmortem- or handout-ready page: what was traced, by
//! which meshtrace and when; the summary, the sequence diagram, a table of
//! steps, and the details of every step that did not pass. Nothing is cut:
//! a ticket needs the whole finding; commands are in code blocks.

use crate::model::{Status, TraceReport};
use std::fmt::Write;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Inline code that survives backticks in the value.
fn code(s: &str) -> String {
    if s.contains('`') {
        format!("`` {} ``", s.replace('\n', " "))
    } else {
        format!("`{}`", s.replace('\n', " "))
    }
}

/// A fenced block whose fence is longer than any run of backticks inside.
fn fenced(lang: &str, body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{lang}\n{body}\n{fence}\n")
}

pub fn render(r: &TraceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# meshtrace report\n");
    let t = &r.target;
    let _ = writeln!(out, "- **primary context**: {}", code(&t.primary));
    let remote = match t.remote.is_empty() {
        false => code(&t.remote),
        true => t.remote_label(),
    };
    let _ = writeln!(out, "- **remote context**: {remote}");
    let _ = writeln!(out, "- **Istio namespace**: {}", code(&t.istio_namespace));
    if t.mode == crate::model::Mode::Lab {
        let fault = t.fault.as_deref().map_or("none".to_string(), code);
        let _ = writeln!(out, "- **built-in lab**, fault: {fault}");
    }
    let not_recorded = "not recorded";
    let _ = writeln!(
        out,
        "- **date**: {} to {}",
        r.started_at.as_deref().unwrap_or(not_recorded),
        r.finished_at.as_deref().unwrap_or(not_recorded)
    );
    let _ = writeln!(
        out,
        "- **meshtrace**: {} (this page written by {})\n",
        r.meshtrace_version.as_deref().unwrap_or(not_recorded),
        crate::model::version()
    );
    let _ = writeln!(out, "**{}**\n", super::summary_line(r));
    out.push_str(&fenced("mermaid", super::mermaid::render(r).trim_end()));
    out.push('\n');
    let _ = writeln!(
        out,
        "| | step | check | time | result |\n|---|---|---|---:|---|"
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
                .unwrap_or_else(|| s.status.as_str().into()),
        };
        let time = if s.status == Status::Skipped {
            String::new()
        } else {
            super::ms(s.duration_ms)
        };
        let _ = writeln!(
            out,
            "| {} | [`{}`]({}) | {} | {time} | {} |",
            s.status.glyph(),
            s.id,
            s.id.doc_url(),
            cell(&s.title),
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
                    let _ = writeln!(out, "**Fix:**\n\n{}", fenced("sh", &f.commands.join("\n")));
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
                    // The prose as prose, its commands in a block to copy.
                    let (cmds, what) = crate::tui::fix_to_copy(h);
                    if what == "the fix" {
                        let _ = writeln!(out, "**Fix:** {h}\n");
                    } else {
                        let _ = writeln!(out, "**Fix:** {h}\n\n{}", fenced("sh", &cmds));
                    }
                }
                let _ = writeln!(out, "See [{}]({}).\n", s.link, s.link);
            }
        }
        if !s.evidence.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>Evidence</summary>\n\n{}</details>",
                fenced(
                    "json",
                    &serde_json::to_string_pretty(&s.evidence).unwrap_or_default()
                )
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StepId, StepResult, Target, TraceEvent, TraceState};

    fn failing() -> TraceReport {
        let long = "istio-reader-service-account may not create tokenreviews in the remote, so istiod refuses every gateway of the cluster with request authenticate failure";
        let mut st = TraceState::default();
        st.apply(&TraceEvent::TraceStarted {
            target: Target {
                primary: "ctx-primary".into(),
                remote: "ctx-remote".into(),
                istio_namespace: "istio-system".into(),
                ..Default::default()
            },
            meshtrace_version: Some("9.9.9".into()),
            at: Some("2026-12-02T20:00:00Z".into()),
        });
        st.apply(&TraceEvent::StepFinished {
            result: StepResult {
                id: StepId::RemoteRbac,
                title: "Remote identity may create TokenReviews".into(),
                status: Status::Fail,
                duration_ms: 0.5234099999999999,
                started_ms: 0.0,
                evidence: Default::default(),
                finding: Some(crate::findings::Finding {
                    code: "remote-rbac/no-tokenreview-create".into(),
                    summary: long.into(),
                    commands: vec!["kubectl --context ctx-remote apply -f rbac.yaml".into()],
                    note: None,
                    doc: crate::findings::doc_url("remote-rbac/no-tokenreview-create"),
                }),
                diagnosis: None,
                hint: None,
                link: StepId::RemoteRbac.doc_link(),
                blocked_by: vec![],
            },
        });
        st.apply(&TraceEvent::TraceFinished {
            total_ms: 1.0,
            at: Some("2026-12-02T20:00:01Z".into()),
        });
        st.report()
    }

    #[test]
    fn the_page_says_what_when_and_by_which_meshtrace() {
        let out = render(&failing());
        for want in [
            "**primary context**: `ctx-primary`",
            "**remote context**: `ctx-remote`",
            "**date**: 2026-12-02T20:00:00Z to 2026-12-02T20:00:01Z",
            "**meshtrace**: 9.9.9",
        ] {
            assert!(out.contains(want), "{want:?} in\n{out}");
        }
    }

    #[test]
    fn the_table_keeps_the_whole_finding_and_rounds_the_time() {
        let out = render(&failing());
        let row = out
            .lines()
            .find(|l| l.starts_with("| ✘ |"))
            .expect("the failing row");
        assert!(row.contains("request authenticate failure |"), "{row}");
        assert!(row.contains("| 0.52 ms |"), "{row}");
        assert!(!out.contains("0.5234"), "{out}");
    }

    #[test]
    fn the_fix_is_a_code_block() {
        let out = render(&failing());
        assert!(
            out.contains("**Fix:**\n\n```sh\nkubectl --context ctx-remote apply -f rbac.yaml\n```"),
            "{out}"
        );
        // A fence longer than the backticks inside.
        assert_eq!(fenced("sh", "a ``` b"), "````sh\na ``` b\n````\n");
    }
}
