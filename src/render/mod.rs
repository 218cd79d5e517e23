//! Renderers: pure functions from the trace model to text. Every output
//! format reads the same [`TraceReport`]; the live view reads events.

pub mod fleet;
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

/// A duration for people: `0.52 ms`, `8.4 ms`, `128 ms`, `1.3 s`. Never the
/// float as computed (`0.5234099999999999`).
pub fn ms(v: f64) -> String {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_are_rounded_for_people() {
        for (v, want) in [
            (0.5234099999999999, "0.52 ms"),
            (8.04, "8.0 ms"),
            (99.96, "100.0 ms"),
            (128.4, "128 ms"),
            (1234.5, "1.2 s"),
            (f64::NAN, "0.00 ms"),
        ] {
            assert_eq!(super::ms(v), want, "{v}");
        }
    }
}
