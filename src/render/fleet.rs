//! Fleet mode's text and JSON: one line per remote, then each remote that
//! did not pass in full (the single trace's text).

use super::text::{self, TextStyle};
use crate::model::{FleetRemote, FleetReport, Status, TraceReport, Verdict};
use std::fmt::Write;

fn verdict_status(v: Verdict) -> Status {
    match v {
        Verdict::Pass => Status::Pass,
        Verdict::Warn => Status::Warn,
        Verdict::Fail => Status::Fail,
    }
}

/// The remote's name in a line: its cluster ID, else its context.
pub fn remote_name(remote: &FleetRemote) -> String {
    remote
        .cluster_id
        .clone()
        .or_else(|| remote.context.clone())
        .unwrap_or_default()
}

/// The context column: the context, or that there is none.
pub fn context_of(remote: &FleetRemote) -> String {
    remote
        .context
        .clone()
        .unwrap_or_else(|| "(no context)".into())
}

/// What a remote's trace ended with, in one phrase: the first failure's
/// code and summary, or that it passed (and how many steps were skipped
/// for want of a context).
pub fn outcome_of(r: &TraceReport) -> String {
    let first = r.first_failure.and_then(|id| r.step(id));
    if let Some(s) = first {
        return match &s.finding {
            Some(f) => format!("{}: {}", f.code, f.summary),
            None => s.id.to_string(),
        };
    }
    let done = r.steps.len();
    if done < crate::model::STEPS.len() {
        return format!("{done} of {} steps finished", crate::model::STEPS.len());
    }
    let no_context = r
        .steps
        .iter()
        .filter(|s| {
            s.finding
                .as_ref()
                .is_some_and(|f| f.code.ends_with("/no-context"))
        })
        .count();
    let by_flag = r
        .steps
        .iter()
        .filter(|s| {
            s.finding
                .as_ref()
                .is_some_and(|f| f.code.ends_with("/skipped-by-flag"))
        })
        .count();
    match (no_context, by_flag) {
        (0, 0) => "every step passed".into(),
        (0, f) => format!("passed; {f} steps skipped with --skip"),
        (n, 0) => format!("passed; {n} steps not run: no kube context for the remote"),
        (n, f) => format!(
            "passed; {n} steps not run: no kube context for the remote, {f} skipped with --skip"
        ),
    }
}

/// One line: glyph, cluster ID, context, first failure, time.
pub fn line(
    remote: &FleetRemote,
    r: &TraceReport,
    widths: (usize, usize),
    style: TextStyle,
) -> String {
    format!(
        "{} {:<w0$}  {:<w1$}  {}  ({:.0} ms)",
        text::status_mark(verdict_status(r.verdict), style),
        remote_name(remote),
        context_of(remote),
        outcome_of(r),
        r.total_ms,
        w0 = widths.0,
        w1 = widths.1
    )
}

/// Column widths for the lines of `remotes`.
pub fn widths(remotes: &[FleetRemote]) -> (usize, usize) {
    let w0 = remotes
        .iter()
        .map(|r| remote_name(r).chars().count())
        .max()
        .unwrap_or(0);
    let w1 = remotes
        .iter()
        .map(|r| context_of(r).chars().count())
        .max()
        .unwrap_or(0);
    (w0.min(40), w1.min(40))
}

pub fn header(f: &FleetReport) -> String {
    let mut s = format!(
        "meshtrace fleet: primary {:?}, {} remote{} registered (namespace {})",
        f.primary,
        f.remotes.len(),
        if f.remotes.len() == 1 { "" } else { "s" },
        f.istio_namespace
    );
    if f.mode == crate::model::Mode::Lab {
        s.push_str(" [built-in lab");
        if let Some(x) = &f.fault {
            let _ = write!(s, ", fault {x}");
        }
        s.push(']');
    }
    s
}

pub fn summary(f: &FleetReport) -> String {
    let n = f.reports.len();
    let c = f.counts;
    let counts = format!(
        "{} passed, {} warned, {} failed in {:.0} ms",
        c.pass, c.warn, c.fail, f.total_ms
    );
    match f.verdict {
        Verdict::Pass if n == 0 => {
            format!("NOTHING TO TRACE: the primary registers no remote ({counts})")
        }
        Verdict::Pass => format!("PASS: every remote passed ({counts})"),
        Verdict::Warn => format!("WARN: {} of {n} remotes warned ({counts})", c.warn),
        Verdict::Fail => format!("FAIL: {} of {n} remotes failed ({counts})", c.fail),
    }
}

/// The whole text: header, one line per remote, the keys istiod ignores,
/// the summary, then each remote that did not pass in full.
pub fn render(f: &FleetReport, style: TextStyle) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", header(f));
    let w = widths(&f.remotes);
    for (remote, r) in f.remotes.iter().zip(&f.reports) {
        let _ = writeln!(out, "{}", line(remote, r, w, style));
    }
    out.push_str(&render_tail(f, style));
    out
}

/// What follows the lines: the keys istiod ignores, the summary, and each
/// remote that did not pass in full.
pub fn render_tail(f: &FleetReport, style: TextStyle) -> String {
    let mut out = String::new();
    for i in &f.ignored {
        let _ = writeln!(
            out,
            "  not registered: key {:?} of {}: {}",
            i.key, i.secret, i.why
        );
    }
    let _ = writeln!(out, "\n{}", summary(f));
    for (remote, r) in f.remotes.iter().zip(&f.reports) {
        if r.verdict == Verdict::Pass {
            continue;
        }
        let _ = writeln!(
            out,
            "\n── {} ({}) ──\ncontext: {}",
            remote_name(remote),
            context_of(remote),
            remote.context_rule
        );
        out.push_str(&text::render(r, style));
    }
    out
}

/// The fleet document, pretty-printed to `w` as it is encoded, ending in a
/// newline.
pub fn write_json(f: &FleetReport, w: &mut impl std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, f).map_err(std::io::Error::other)?;
    w.write_all(b"\n")
}
