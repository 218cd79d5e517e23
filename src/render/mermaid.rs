//! `-o mermaid`: the flow as a Mermaid sequence diagram, drawn from the one
//! sequence ([`crate::sequence`]): its phases, its messages in their real
//! order with their replies, meshtrace's own reads as notes, each message
//! marked with the result of the steps that verify it. A step that failed
//! or warned gets a note with its whole diagnosis after its first message.

use crate::model::{Actor, Status, StepId, TraceReport};
use crate::sequence::{Kind, Message, SEQUENCE};
use std::collections::HashSet;
use std::fmt::Write;

fn id(a: Actor) -> &'static str {
    a.short()
}

/// Mermaid treats some characters as syntax; keep labels plain.
fn clean(s: &str) -> String {
    s.replace([';', '#', '\n'], " ")
        .replace('"', "'")
        .replace('<', "‹")
        .replace('>', "›")
        .replace("->", "to")
}

/// A note's text, whole, broken into lines of about 60 characters at word
/// boundaries (`<br/>`): a cut note loses the part that names the fix.
fn note_text(s: &str) -> String {
    // Names (`istio-reader-service-account`) stay whole: no break at hyphens.
    let opts = textwrap::Options::new(60)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .break_words(false);
    textwrap::wrap(&clean(s), opts).join("<br/>")
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Pass => "OK",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Skipped => "skipped",
    }
}

/// The flow with the results of `report`.
pub fn render(r: &TraceReport) -> String {
    draw(Some(r))
}

/// The flow alone, each message labelled with the ids of the steps that
/// verify it: the diagram of `docs/flow.md`.
pub fn flow() -> String {
    draw(None)
}

fn over(m: &Message) -> String {
    if m.from == m.to {
        id(m.from).to_string()
    } else {
        format!("{},{}", id(m.from), id(m.to))
    }
}

fn draw(report: Option<&TraceReport>) -> String {
    // Numbered by hand, not with `autonumber`: that counts arrows only, and
    // the TUI and teaching mode number meshtrace's reads (notes) too.
    let mut out = String::from("sequenceDiagram\n");
    for a in Actor::ALL {
        let _ = writeln!(out, "    participant {} as {}", id(a), a.label());
    }
    let (first, last) = (Actor::ALL[0], Actor::ALL[Actor::ALL.len() - 1]);
    let mut noted: HashSet<StepId> = HashSet::new();
    let mut n = 0;
    for phase in SEQUENCE {
        let _ = writeln!(
            out,
            "\n    Note over {},{}: {}",
            id(first),
            id(last),
            clean(phase.title)
        );
        for m in phase.messages {
            n += 1;
            let status = report.and_then(|r| crate::sequence::status_in(m, r));
            let steps = m
                .steps
                .iter()
                .map(|s| {
                    let res = report.and_then(|r| StepId::parse(s).and_then(|i| r.step(i)));
                    match (report, res) {
                        (None, _) => s.to_string(),
                        (Some(_), Some(res)) => format!("{s} {}", mark(res.status)),
                        (Some(_), None) => format!("{s} not run"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            if m.kind == Kind::Observation {
                let _ = writeln!(
                    out,
                    "    Note over {}: {n}. meshtrace reads {} [{steps}]",
                    id(m.from),
                    clean(m.text)
                );
            } else {
                let reply = m.kind == Kind::Reply;
                let arrow = match (status, reply) {
                    (Some(Status::Fail), false) => "-x",
                    (Some(Status::Fail), true) => "--x",
                    (Some(Status::Skipped), false) => "-)",
                    (Some(Status::Skipped), true) => "--)",
                    (_, false) => "->>",
                    (_, true) => "-->>",
                };
                let _ = writeln!(
                    out,
                    "    {}{arrow}{}: {n}. {} [{steps}]",
                    id(m.from),
                    id(m.to),
                    clean(m.text)
                );
            }
            let Some(r) = report else { continue };
            for s in m.step_ids() {
                let Some(res) = r.step(s) else { continue };
                if !matches!(res.status, Status::Fail | Status::Warn) || !noted.insert(s) {
                    continue;
                }
                let what = res
                    .finding
                    .as_ref()
                    .map(|f| format!("{}: {}", f.code, f.summary));
                let text = match (what, &res.diagnosis) {
                    (Some(w), Some(d)) => format!("{} {w}. {d}", mark(res.status)),
                    (Some(w), None) => format!("{} {w}", mark(res.status)),
                    (None, Some(d)) => format!("{} {s}: {d}", mark(res.status)),
                    (None, None) => continue,
                };
                let _ = writeln!(out, "    Note over {}: {}", over(m), note_text(&text));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{STEPS, StepResult, TraceEvent, TraceState};

    fn report(special: &[(StepId, Status, &str)]) -> TraceReport {
        let mut st = TraceState::default();
        for s in STEPS {
            let (status, diagnosis) = special
                .iter()
                .find(|x| x.0 == s.id)
                .map(|x| (x.1, Some(x.2.to_string())))
                .unwrap_or((Status::Pass, None));
            st.apply(&TraceEvent::StepFinished {
                result: StepResult {
                    id: s.id,
                    title: s.title.into(),
                    status,
                    duration_ms: 1.0,
                    started_ms: 0.0,
                    evidence: Default::default(),
                    finding: None,
                    diagnosis,
                    hint: None,
                    link: s.id.doc_link(),
                    blocked_by: vec![],
                },
            });
        }
        st.report()
    }

    fn line_of(out: &str, needle: &str) -> usize {
        out.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line holds {needle:?}:\n{out}"))
    }

    /// The line of the message `text` drawn as `arrow` ("Gateway->>istiod").
    fn arrow_line(out: &str, arrow: &str, text: &str) -> usize {
        let i = line_of(out, text);
        let l = out.lines().nth(i).unwrap();
        assert!(l.trim_start().starts_with(&format!("{arrow}: ")), "{l}");
        i
    }

    #[test]
    fn the_drawn_order_is_the_flows_not_the_checks() {
        let out = render(&report(&[]));
        let csr = arrow_line(&out, "Gateway->>istiod", "CreateCertificate");
        let review = arrow_line(&out, "istiod->>RemoteAPI", "TokenReview audiences");
        let answer = arrow_line(&out, "RemoteAPI-->>istiod", "authenticated");
        let chain = arrow_line(&out, "istiod-->>Gateway", "cert_chain");
        assert!(csr < review && review < answer && answer < chain, "{out}");
        // Numbered in order, notes too, as the TUI numbers them.
        let numbers: Vec<usize> = out
            .lines()
            .filter(|l| !l.contains("Note over Gateway,PrimaryAPI"))
            .filter_map(|l| l.split_once(": ")?.1.split_once(". ")?.0.parse().ok())
            .collect();
        assert_eq!(
            numbers,
            (1..=crate::sequence::messages().count()).collect::<Vec<_>>()
        );
        // Probes are notes, not arrows.
        let pod = line_of(&out, "[gateway-pod OK]");
        assert!(
            out.lines()
                .nth(pod)
                .unwrap()
                .contains("Note over RemoteAPI: "),
            "{out}"
        );
        assert!(
            out.lines().nth(pod).unwrap().contains("meshtrace reads"),
            "{out}"
        );
        assert!(!out.contains("Gateway->>RemoteAPI: read"), "{out}");
    }

    #[test]
    fn a_failing_step_marks_its_messages_and_gets_its_whole_note() {
        let long = "istio-system/istio-reader-service-account may not create tokenreviews in the remote, so istiod's TokenReview fails with forbidden and every gateway of that cluster is refused; this last clause must survive";
        let out = render(&report(&[
            (StepId::RemoteRbac, Status::Fail, long),
            (StepId::TokenReview, Status::Skipped, "blocked"),
        ]));
        let review = line_of(&out, "TokenReview audiences");
        assert!(
            out.lines()
                .nth(review)
                .unwrap()
                .contains("istiod-xRemoteAPI"),
            "{out}"
        );
        // The note comes once, after the first message remote-rbac verifies.
        let notes: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("FAIL remote-rbac"))
            .collect();
        assert_eq!(notes.len(), 1, "{out}");
        let note = notes[0];
        assert!(note.contains("this last clause must survive"), "{note}");
        assert!(
            note.contains("istio-system/istio-reader-service-account"),
            "{note}"
        );
        assert!(line_of(&out, "FAIL remote-rbac") == line_of(&out, "list/watch") + 1);
        let text = note.split_once(": ").unwrap().1;
        for piece in text.split("<br/>") {
            assert!(piece.chars().count() <= 60, "{piece}");
        }
    }

    #[test]
    fn the_flow_alone_names_the_steps_of_each_message() {
        let out = flow();
        assert!(out.contains("[remote-identity, remote-rbac]"), "{out}");
        assert!(out.contains("[csr, issued-chain]"), "{out}");
        assert!(!out.contains(" OK]"), "{out}");
    }
}
