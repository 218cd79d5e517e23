//! Renderers: pure functions from the trace model to text. Every output
//! format reads the same [`TraceReport`]; the live view reads events.

pub mod json;
pub mod markdown;
pub mod mermaid;
pub mod text;

use crate::model::{Status, TraceReport, Verdict};

/// One-line summary shared by text and Markdown.
pub fn summary_line(r: &TraceReport) -> String {
    let counts = format!(
        "{} passed, {} warned, {} failed, {} skipped in {:.0} ms",
        r.count(Status::Pass),
        r.count(Status::Warn),
        r.count(Status::Fail),
        r.count(Status::Skipped),
        r.total_ms
    );
    let done = r.steps.len();
    let all = crate::model::STEPS.len();
    match (r.verdict, r.first_failure) {
        // A run cut short (quit early, a recording that stops) passed nothing yet.
        (Verdict::Pass, _) if done < all => {
            format!("INCOMPLETE: {done} of {all} steps finished, none failed ({counts})")
        }
        (Verdict::Pass, _) => format!("PASS: every step passed ({counts})"),
        (Verdict::Warn, Some(id)) => format!("WARN at {id} ({counts})"),
        (Verdict::Fail, Some(id)) => format!("FAIL at {id} ({counts})"),
        (_, None) => counts,
    }
}
