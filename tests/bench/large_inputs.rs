//! Benchmark: the hostile-input parsers on large and deep inputs, and how
//! their time grows with the input.
//!
//! Run: `cargo bench --bench large_inputs` (add `-- --runs 9` for more
//! samples, `-- --base K` to scale N).
//! For each case it times the same fuzz target (tests/fuzz/targets.rs) on an
//! input of size N (the test suite's size) and of size 4N, side by side in one run, and prints the
//! medians and their ratio: about 4 for a linear parser, about 16 for a
//! quadratic one. Target: every ratio under 10 (quadratic is 16) and every N median under 1 s
//! in a release build. It exits non-zero when a target is missed, so it can
//! gate a release; the test suite only checks that these inputs are handled.

// Not every target has a large case here.
#[allow(dead_code)]
#[path = "../fuzz/targets.rs"]
mod targets;

mod common;

use common::{flag, median};
use std::time::Instant;

type Target = fn(&[u8]);

/// The inputs of tests/integration/fuzz.rs's large case, scaled by `k`.
fn cases(k: usize) -> Vec<(&'static str, Target, Vec<u8>)> {
    let deep_json = format!(
        "{}1{}",
        "{\"a\":".repeat(37_500 * k),
        "}".repeat(37_500 * k)
    );
    let deep_flow = format!("{}{}", "[".repeat(50_000 * k), "]".repeat(50_000 * k));
    vec![
        (
            "kubeconfig, deep JSON",
            targets::kubeconfig,
            deep_json.clone().into_bytes(),
        ),
        (
            "kubeconfig, deep flow YAML",
            targets::kubeconfig,
            deep_flow.into_bytes(),
        ),
        (
            "clusterz, deep JSON",
            targets::clusterz,
            deep_json.clone().into_bytes(),
        ),
        ("replay, deep JSON", targets::replay, deep_json.into_bytes()),
        (
            "sanitize, escapes",
            targets::sanitize,
            "\u{1b}]0;title\u{7}\u{1b}[2J"
                .repeat(50_000 * k)
                .into_bytes(),
        ),
        (
            "sanitize, one scheme x many",
            targets::sanitize,
            "basic x ".repeat(12_500 * k).into_bytes(),
        ),
        (
            "tui_wrap, one long word",
            targets::tui_wrap,
            "x".repeat((128 << 10) * k).into_bytes(),
        ),
        (
            "kube_answer, huge body",
            targets::kube_answer,
            "x".repeat((512 << 10) * k).into_bytes(),
        ),
    ]
}

fn time(target: Target, data: &[u8], runs: usize) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            target(data);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    median(&mut v)
}

fn main() {
    let runs = flag("--runs", 7);
    // --base K: N is K times the test suite's quarter size (default 4: N is
    // the test's size), so that timings sit well above timer and cache noise.
    let base = flag("--base", 4);
    meshtrace::install_crypto_provider();
    let (small, big) = (cases(base), cases(4 * base));
    println!(
        "{:<28} {:>10} {:>12} {:>12} {:>7}",
        "case", "N bytes", "N median", "4N median", "ratio"
    );
    let mut missed = Vec::new();
    for ((name, target, a), (_, _, b)) in small.iter().zip(&big) {
        // Interleaved: both sizes measured under the same load.
        let (ta, tb) = (time(*target, a, runs), time(*target, b, runs));
        let ratio = tb / ta.max(1e-6);
        println!(
            "{name:<28} {:>10} {ta:>10.2}ms {tb:>10.2}ms {ratio:>7.2}",
            a.len()
        );
        if ratio > 10.0 || ta > 1000.0 {
            missed.push(*name);
        }
    }
    if !missed.is_empty() {
        eprintln!("targets missed (ratio under 10, N under 1 s): {missed:?}");
        std::process::exit(1);
    }
}
