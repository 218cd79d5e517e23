//! Findings, as a user and a script meet them: every result that is not a
//! pass, for every lab fault, carries a stable code with its documentation,
//! a one-line summary and no placeholder; every document and event validates
//! against docs/schema.json.

use crate::support::trace_lab;
use meshtrace::engine::TraceOptions;
use meshtrace::lab::faults;
use meshtrace::model::{Status, TraceEvent};
use serde_json::{Value, json};

fn schema() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.json")).unwrap(),
    )
    .unwrap()
}

/// A validator for one `$defs` entry of the schema (the events).
fn validator_for_def(def: &str) -> jsonschema::Validator {
    let s = schema();
    let sub =
        json!({"$schema": s["$schema"], "$ref": format!("#/$defs/{def}"), "$defs": s["$defs"]});
    jsonschema::validator_for(&sub).expect("schema compiles")
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Placeholders a pasteable command must not carry: meshtrace knows these.
const PLACEHOLDERS: &[&str] = &[
    "<id>",
    "<primary-id>",
    "<remote-id>",
    "<network>",
    "<primary>",
    "<remote>",
    "<ns>",
    "...",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_gives_coded_findings_that_validate() {
    let report_schema = jsonschema::validator_for(&schema()).expect("schema compiles");
    let event_schema = validator_for_def("TraceEvent");
    let mut problems = vec![];
    for f in faults::FAULTS {
        let (r, events) = trace_lab(Some(f), TraceOptions::default()).await;
        let doc = serde_json::to_value(&r).unwrap();
        for e in errors(&report_schema, &doc) {
            problems.push(format!("{}: report: {e}", f.name));
        }
        for ev in &events {
            for e in errors(&event_schema, &serde_json::to_value(ev).unwrap()) {
                problems.push(format!("{}: event: {e}", f.name));
            }
        }
        assert!(matches!(
            events.first(),
            Some(TraceEvent::TraceStarted {
                meshtrace_version: Some(_),
                at: Some(_),
                ..
            })
        ));
        for s in r.steps.iter().filter(|s| s.status != Status::Pass) {
            let Some(fd) = &s.finding else {
                problems.push(format!(
                    "{}: {} is {:?} without a finding",
                    f.name, s.id, s.status
                ));
                continue;
            };
            let code = &fd.code;
            if code.ends_with("/unclassified") {
                problems.push(format!(
                    "{}: {} has no cause of its own ({code}): {}",
                    f.name, s.id, fd.summary
                ));
            }
            if !code.starts_with(&format!("{}/", s.id)) {
                problems.push(format!("{}: code {code} is not of step {}", f.name, s.id));
            }
            if fd.summary.is_empty()
                || fd.summary.chars().count() > 120
                || fd.summary.contains('\n')
            {
                problems.push(format!(
                    "{}: {code}: summary is not one short line: {:?}",
                    f.name, fd.summary
                ));
            }
            if let Err(e) = meshtrace::explain::explain(code) {
                problems.push(format!("{}: explain {code}: {e}", f.name));
            }
            for c in &fd.commands {
                for p in PLACEHOLDERS {
                    if c.contains(p) {
                        problems.push(format!(
                            "{}: {code}: command has placeholder {p}: {c}",
                            f.name
                        ));
                    }
                }
            }
            if s.status != Status::Skipped && fd.commands.is_empty() && fd.note.is_none() {
                problems.push(format!("{}: {code}: neither a command nor a note", f.name));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_report_validates_and_counts_its_steps() {
    let (r, _) = trace_lab(None, TraceOptions::default()).await;
    let doc = serde_json::to_value(&r).unwrap();
    let v = jsonschema::validator_for(&schema()).unwrap();
    assert_eq!(errors(&v, &doc), Vec::<String>::new());
    assert_eq!(r.counts.pass, meshtrace::model::STEPS.len());
    assert!(r.started_at.is_some() && r.finished_at.is_some());
    assert_eq!(
        r.meshtrace_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    // A step that passed carries no finding; the schema must refuse one.
    let mut bad = doc.clone();
    bad["steps"][0]["code"] = json!("gateway-pod/no-cluster-id");
    assert!(
        !errors(&v, &bad).is_empty(),
        "the schema accepts a code on a pass"
    );
}
