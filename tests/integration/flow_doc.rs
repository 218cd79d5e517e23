//! docs/flow.md agrees with the model: its step table lists every step of
//! `STEPS` in check order with the messages it verifies, its dependency table has
//! each step's `needs` and `waits_for`, and the diagram is the one sequence.

use meshtrace::model::{STEPS, StepId};

fn flow_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/flow.md")).unwrap()
}

/// The table rows (cells, trimmed) of the section under `heading`.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/flow.md has no {heading:?}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Step ids in a cell like "gateway-pod (the cluster ID), control-plane": the
/// first word of each comma-separated part outside parentheses.
fn ids(cell: &str) -> Vec<String> {
    if cell == "none" {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ if depth == 0 => cur.push(c),
            _ => {}
        }
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_step_table_lists_every_step_with_the_messages_it_verifies() {
    let rows = table(&flow_doc(), "## Where each meshtrace step sits");
    let listed: Vec<String> = rows
        .iter()
        .map(|r| r[1].split('`').nth(1).unwrap_or_default().to_string())
        .collect();
    let want: Vec<&str> = STEPS.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(listed, want, "docs/flow.md's step table, in STEPS order");
    for (i, (row, s)) in rows.iter().zip(STEPS).enumerate() {
        assert_eq!(row[0], (i + 1).to_string(), "{}: its number", s.id);
        assert!(
            row[1].contains(&format!("(checks.md#{})", s.id)),
            "{}: links its checks.md anchor: {}",
            s.id,
            row[1]
        );
        // The numbers of the messages it verifies in the one sequence.
        let messages: Vec<String> = meshtrace::sequence::items()
            .into_iter()
            .filter_map(|i| match i {
                meshtrace::sequence::Item::Message { n, msg } if msg.verifies(s.id) => {
                    Some(if msg.kind == meshtrace::sequence::Kind::Observation {
                        format!("{n} (read)")
                    } else {
                        n.to_string()
                    })
                }
                _ => None,
            })
            .collect();
        assert_eq!(row[2], messages.join(", "), "{}: its messages", s.id);
    }
}

#[test]
fn the_dependency_table_has_each_steps_needs_and_waits() {
    let rows = table(&flow_doc(), "### How the steps run");
    assert_eq!(rows.len(), STEPS.len(), "one row per step");
    for (row, s) in rows.iter().zip(STEPS) {
        assert_eq!(row[0], s.id.as_str(), "rows in STEPS order");
        let needs: Vec<&str> = s.needs.iter().map(|d| d.as_str()).collect();
        assert_eq!(ids(&row[1]), needs, "{}: needs", s.id);
        let also: Vec<&str> = s
            .waits_for
            .iter()
            .filter(|d| !s.needs.contains(d))
            .map(|d| d.as_str())
            .collect();
        let mut doc = ids(&row[2]);
        let mut want: Vec<String> = also.iter().map(|a| a.to_string()).collect();
        doc.sort();
        want.sort();
        assert_eq!(doc, want, "{}: also waits for", s.id);
        // The gather's own waits: "all", or the steps (a parenthesis
        // says when it waits for one more).
        let mut early = ids(&row[3]);
        let mut want: Vec<String> = match s.gathers_after {
            None => vec!["all".to_string()],
            Some(g) => g.iter().map(|d| d.as_str().to_string()).collect(),
        };
        early.sort();
        want.sort();
        assert_eq!(early, want, "{}: its requests wait only for", s.id);
    }
}

/// The diagram is drawn from the one sequence (`src/sequence.rs`), as
/// `meshtrace -o mermaid` draws it without results: when the model changes,
/// this test prints the diagram to paste.
#[test]
fn the_diagram_is_the_sequence_model() {
    let doc = flow_doc();
    let start = doc.find("```mermaid\n").expect("a Mermaid diagram") + "```mermaid\n".len();
    let end = start + doc[start..].find("```\n").expect("the diagram ends");
    let want = meshtrace::render::mermaid::flow();
    assert!(
        doc[start..end] == want,
        "docs/flow.md's diagram is not the sequence model's; put this there:\n{want}"
    );
    for s in STEPS {
        assert!(want.contains(s.id.as_str()), "the diagram names {}", s.id);
    }
    assert!(StepId::parse("gateway-pod").is_some());
}
