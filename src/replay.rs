//! Replay a recorded trace into the same event stream every front end reads.
//!
//! A recording is what `-o events` prints (one [`TraceEvent`] per line), or a
//! `-o json` report (turned back into events from each step's start time and
//! duration). Replaying feeds the events to the renderers or the TUI at the
//! pace they were recorded (or faster), so a postmortem or a workshop can
//! show a run again without any cluster.

use crate::model::{SCHEMA_VERSION, TraceEvent, TraceReport};
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// Recordings larger than this are refused rather than read into memory
/// (a full trace is a few tens of kilobytes).
pub const MAX_RECORDING_BYTES: u64 = 16 * 1024 * 1024;

/// A parsed recording: one run, starting with `trace-started`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub events: Vec<TraceEvent>,
    /// Whether the recording reaches `trace-finished` (a run cut short, e.g.
    /// by Ctrl-C while recording, does not).
    pub complete: bool,
}

/// Reads a recording from a file, or from stdin when `path` is `-`.
pub fn load(path: &str) -> Result<Recording, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = if path == "-" {
        std::io::stdin()
            .take(MAX_RECORDING_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_RECORDING_BYTES + 1).read_to_end(&mut bytes))
    };
    let name = if path == "-" { "stdin" } else { path };
    read.map_err(|e| format!("cannot read {name:?}: {e}"))?;
    if bytes.len() as u64 > MAX_RECORDING_BYTES {
        return Err(format!(
            "{name:?} is larger than {} MiB: not a meshtrace recording",
            MAX_RECORDING_BYTES / (1024 * 1024)
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{name:?} is not UTF-8 text (byte {}): not a meshtrace recording",
            e.utf8_error().valid_up_to()
        )
    })?;
    parse(&text, name)
}

/// Parses `-o events` JSON lines or a `-o json` report. `name` is used in
/// errors, which quote the offending line.
pub fn parse(text: &str, name: &str) -> Result<Recording, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "{name:?} is empty: record a run with `meshtrace ... -o events > FILE` (or `-o json`)"
        ));
    }
    // A report is one JSON document with a `schema` field; event lines are
    // objects with an `event` field, one per line.
    if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str::<serde_json::Value>(text) {
        if let Some(schema) = doc.get("schema") {
            if schema.as_str() != Some(SCHEMA_VERSION) {
                return Err(format!(
                    "{name:?} is a report with schema {schema}, expected \"{SCHEMA_VERSION}\""
                ));
            }
            let report: TraceReport = serde_json::from_str(text)
                .map_err(|e| format!("{name:?}: not a meshtrace report: {e}"))?;
            return Ok(sanitized(from_report(&report)));
        }
    }
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let event: TraceEvent = serde_json::from_str(line).map_err(|e| {
            format!(
                "{name}:{line_no}: not a meshtrace event ({e}): {}",
                quote_start(line)
            )
        })?;
        match (&event, events.is_empty()) {
            (TraceEvent::TraceStarted { .. }, false) => {
                return Err(format!(
                    "{name}:{line_no}: a second trace-started: a recording holds one run; split the file at this line"
                ));
            }
            (TraceEvent::TraceStarted { .. }, true) => {}
            (other, true) => {
                return Err(format!(
                    "{name}:{line_no}: a recording starts with a trace-started event, this line is a {}: {}",
                    kind(other),
                    quote_start(line)
                ));
            }
            _ => {}
        }
        events.push(event);
    }
    let complete = events
        .iter()
        .any(|e| matches!(e, TraceEvent::TraceFinished { .. }));
    Ok(sanitized(Recording { events, complete }))
}

/// A recording is peer text: it passes the same sanitizer as a live run
/// (no escape sequence reaches the terminal, no token the file holds is shown).
fn sanitized(mut rec: Recording) -> Recording {
    for e in &mut rec.events {
        e.sanitize();
    }
    rec
}

/// A report turned back into the events that produced it: each step starts
/// at `started_ms` (blocked steps send no start, as in a live run) and
/// finishes `duration_ms` later.
pub fn from_report(r: &TraceReport) -> Recording {
    let mut timed: Vec<(f64, u8, TraceEvent)> = Vec::new();
    for s in &r.steps {
        if s.blocked_by.is_empty() {
            timed.push((
                s.started_ms,
                0,
                TraceEvent::StepStarted {
                    id: s.id,
                    at_ms: s.started_ms,
                },
            ));
        }
        timed.push((
            s.started_ms + s.duration_ms,
            1,
            TraceEvent::StepFinished { result: s.clone() },
        ));
    }
    // By time; at the same instant a start comes before a finish.
    timed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut events = vec![TraceEvent::TraceStarted {
        target: r.target.clone(),
        meshtrace_version: r.meshtrace_version.clone(),
        at: r.started_at.clone(),
    }];
    events.extend(timed.into_iter().map(|(_, _, e)| e));
    events.push(TraceEvent::TraceFinished {
        total_ms: r.total_ms,
        at: r.finished_at.clone(),
    });
    Recording {
        events,
        complete: true,
    }
}

/// When an event happened, in milliseconds from the trace's start.
pub fn event_ms(e: &TraceEvent) -> f64 {
    match e {
        TraceEvent::TraceStarted { .. } => 0.0,
        TraceEvent::StepStarted { at_ms, .. } => *at_ms,
        TraceEvent::StepFinished { result } => result.started_ms + result.duration_ms,
        TraceEvent::TraceFinished { total_ms, .. } => *total_ms,
    }
}

/// Sends the recording's events at their recorded pace divided by `speed`
/// (`speed` 0 or not finite: all at once). Times never run backwards, and a
/// bad time (negative, NaN) costs no wait.
pub fn play(rec: Recording, speed: f64) -> UnboundedReceiver<TraceEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut at = 0.0_f64;
        for e in rec.events {
            let t = event_ms(&e);
            if t.is_finite() && t > at {
                at = t;
            }
            if speed.is_finite() && speed > 0.0 {
                let due = start + Duration::from_secs_f64((at / speed / 1000.0).min(3600.0));
                tokio::time::sleep_until(due).await;
            }
            if tx.send(e).is_err() {
                return; // the front end is gone
            }
        }
    });
    rx
}

fn kind(e: &TraceEvent) -> &'static str {
    match e {
        TraceEvent::TraceStarted { .. } => "trace-started",
        TraceEvent::StepStarted { .. } => "step-started",
        TraceEvent::StepFinished { .. } => "step-finished",
        TraceEvent::TraceFinished { .. } => "trace-finished",
    }
}

/// The start of a line, for an error message.
fn quote_start(line: &str) -> String {
    let line = crate::inspect::sanitize::quote(line);
    match crate::inspect::head(&line, 80) {
        (head, false) => format!("{head:?}"),
        (head, true) => format!("{head:?}..."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Status, StepId, TraceState};

    fn recorded() -> (String, TraceReport) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            crate::install_crypto_provider();
            let fault = crate::lab::faults::find("no-tokenreview-rbac").unwrap();
            let lab = crate::lab::world::Lab::start(Some(fault)).await.unwrap();
            let opts = crate::engine::TraceOptions::default();
            let (clusters, target) = crate::cli::lab_target(&lab, &opts).await.unwrap();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let report = crate::engine::run(clusters, opts, target, tx).await;
            let mut lines = String::new();
            while let Ok(e) = rx.try_recv() {
                lines.push_str(&serde_json::to_string(&e).unwrap());
                lines.push('\n');
            }
            lab.shutdown();
            (lines, report)
        })
    }

    fn fold(rec: &Recording) -> TraceReport {
        let mut st = TraceState::default();
        for e in &rec.events {
            st.apply(e);
        }
        st.report()
    }

    #[test]
    fn events_and_report_both_replay_to_the_recorded_report() {
        let (lines, report) = recorded();
        let from_events = parse(&lines, "rec").unwrap();
        assert!(from_events.complete);
        assert_eq!(fold(&from_events), report);
        let json = serde_json::to_string_pretty(&report).unwrap();
        let from_json = parse(&json, "rec.json").unwrap();
        assert!(from_json.complete);
        assert_eq!(fold(&from_json), report);
        assert_eq!(report.first_failure, Some(StepId::RemoteRbac));
        // Blocked steps are finished without being started, as live.
        let started = from_json
            .events
            .iter()
            .filter(|e| matches!(e, TraceEvent::StepStarted { .. }))
            .count();
        let skipped = report
            .steps
            .iter()
            .filter(|s| s.status == Status::Skipped && !s.blocked_by.is_empty())
            .count();
        assert!(skipped > 0);
        assert_eq!(started + skipped, report.steps.len());
    }

    #[test]
    fn a_cut_recording_is_incomplete_but_replays_what_it_has() {
        let (lines, _) = recorded();
        let cut: Vec<&str> = lines.lines().take(6).collect();
        let rec = parse(&cut.join("\n"), "cut").unwrap();
        assert!(!rec.complete);
        assert_eq!(rec.events.len(), 6);
        assert!(fold(&rec).steps.len() < crate::model::STEPS.len());
    }

    #[test]
    fn bad_recordings_are_refused_quoting_the_line() {
        let e = parse("", "f").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse("{\"event\":\"trace-started\",\"target\":{\"primary\":\"a\",\"remote\":\"b\",\"istio_namespace\":\"istio-system\",\"mode\":\"lab\"}}\nhello world\n", "f").unwrap_err();
        assert!(e.starts_with("f:2: not a meshtrace event"), "{e}");
        assert!(e.contains("\"hello world\""), "{e}");
        let e = parse("{\"event\":\"trace-finished\",\"total_ms\":1.0}\n", "f").unwrap_err();
        assert!(e.contains("starts with a trace-started"), "{e}");
        assert!(e.contains("trace-finished"), "{e}");
        let e = parse("{\"schema\":\"meshtrace.v0\",\"steps\":[]}", "r.json").unwrap_err();
        assert!(
            e.contains("meshtrace.v0") && e.contains(SCHEMA_VERSION),
            "{e}"
        );
        let e = parse(
            "{\"event\":\"step-finished\",\"result\":{\"id\":\"no-such-step\"}}",
            "f",
        )
        .unwrap_err();
        assert!(e.contains("no-such-step"), "{e}");
        let long = "x".repeat(500);
        let e = parse(&long, "f").unwrap_err();
        assert!(e.ends_with("...") && e.len() < 200, "{e}");
    }

    /// `mode` became an enum: recordings made with the string field read the
    /// same, it is written back as the same string, and any other value is
    /// refused quoting it.
    #[test]
    fn the_target_mode_reads_and_writes_the_recorded_strings() {
        use crate::model::Mode;
        for (text, mode) in [("lab", Mode::Lab), ("clusters", Mode::Clusters)] {
            let line = format!(
                "{{\"event\":\"trace-started\",\"target\":{{\"primary\":\"a\",\"remote\":\"b\",\"istio_namespace\":\"istio-system\",\"mode\":\"{text}\"}}}}"
            );
            let rec = parse(&line, "old").unwrap();
            let TraceEvent::TraceStarted { target, .. } = &rec.events[0] else {
                panic!("{:?}", rec.events[0]);
            };
            assert_eq!(target.mode, mode);
            assert_eq!(mode.as_str(), text);
            assert_eq!(serde_json::to_string(&rec.events[0]).unwrap(), line);
        }
        let e = parse(
            "{\"event\":\"trace-started\",\"target\":{\"primary\":\"a\",\"remote\":\"b\",\"istio_namespace\":\"n\",\"mode\":\"moon\"}}",
            "f",
        )
        .unwrap_err();
        assert!(e.contains("moon"), "{e}");
    }

    #[test]
    fn two_runs_in_one_file_are_refused() {
        let (lines, _) = recorded();
        let e = parse(&format!("{lines}{lines}"), "twice").unwrap_err();
        assert!(e.contains("second trace-started"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn play_keeps_the_recorded_pace_scaled_by_speed() {
        // Recorded on a thread of its own: the lab runs on a real clock.
        let (lines, report) = std::thread::spawn(recorded).join().unwrap();
        let rec = parse(&lines, "rec").unwrap();
        let n = rec.events.len();
        let t0 = tokio::time::Instant::now();
        let mut rx = play(rec.clone(), 2.0);
        let mut got = Vec::new();
        while let Some(e) = rx.recv().await {
            got.push(e);
        }
        assert_eq!(got, rec.events);
        assert_eq!(got.len(), n);
        // The paused clock advances exactly by the waits: total / speed.
        let waited = t0.elapsed().as_secs_f64() * 1000.0;
        assert!(
            (waited - report.total_ms / 2.0).abs() < 1.0,
            "waited {waited} ms for a {} ms trace at speed 2",
            report.total_ms
        );
        let t1 = tokio::time::Instant::now();
        let mut rx = play(rec, 0.0);
        while rx.recv().await.is_some() {}
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }
}
