//! Benchmark: a full trace against the built-in lab.
//!
//! Run: `cargo bench --bench trace` (add `-- --runs 50` for more samples).
//! Reports, side by side:
//!  - the median wall time of one in-process trace (lab start excluded),
//!    next to the sum of its step durations (what a serial trace would cost)
//!    and the critical path of truly dependent steps;
//!  - the median wall time and peak RSS of the release binary tracing the
//!    lab as a user runs it (`meshtrace --primary lab-primary --remote lab-remote`),
//!    next to one `kubectl get` against the same lab when kubectl is present.
//!
//! Targets: trace under 25 ms in-process and binary start to exit under
//! 40 ms (issue 10); peak RSS under 40 MB (issue 2).

mod common;

use common::{flag, median};
use meshtrace::engine::{self, TraceOptions};
use meshtrace::lab::world::Lab;
use meshtrace::model::{StepId, TraceReport};
use std::process::Command;
use std::time::Instant;
use tokio::sync::mpsc;

/// The critical path as the trace ran it: from the step that ended last,
/// back through the step it waited for (`waits_for`) that ended last. Steps
/// gather before all they wait for have finished (`gathers_after`), so a
/// sum of durations along a chain would count overlapping time twice; the
/// path's length is the last step's end, and its steps say what held it.
fn critical_path(r: &TraceReport) -> (f64, Vec<StepId>) {
    let end = |id: StepId| {
        r.steps
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.started_ms + s.duration_ms)
    };
    let Some(last) = r
        .steps
        .iter()
        .max_by(|a, b| (a.started_ms + a.duration_ms).total_cmp(&(b.started_ms + b.duration_ms)))
    else {
        return (0.0, Vec::new());
    };
    let mut chain = vec![last.id];
    let mut at = last.id;
    while let Some(prev) = engine::waits_for(at)
        .iter()
        .filter_map(|d| end(*d).map(|e| (*d, e)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(d, _)| d)
    {
        chain.push(prev);
        at = prev;
    }
    chain.reverse();
    (last.started_ms + last.duration_ms, chain)
}

// libc: getrusage for the children's peak RSS.
#[allow(unsafe_code)]
fn peak_rss_children_kib() -> i64 {
    // SAFETY-free: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    if rc == 0 { ru.ru_maxrss } else { -1 }
}

fn main() {
    let runs = flag("--runs", 30);
    meshtrace::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lab = rt.block_on(Lab::start(None)).expect("lab starts");
    let opts = TraceOptions::default();

    // In-process traces.
    let mut walls = Vec::new();
    let mut serial = Vec::new();
    let mut critical = Vec::new();
    let mut chains: std::collections::BTreeMap<Vec<StepId>, usize> = Default::default();
    for i in 0..runs + 3 {
        let (clusters, target) = rt
            .block_on(meshtrace::cli::lab_target(&lab, &opts))
            .expect("clients");
        let (tx, _rx) = mpsc::unbounded_channel();
        let t = Instant::now();
        let report = rt.block_on(engine::run(clusters, opts.clone(), target, tx));
        let wall = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(report.first_failure, None, "the healthy lab must pass");
        if i >= 3 {
            walls.push(wall);
            serial.push(report.steps.iter().map(|s| s.duration_ms).sum());
            let (length, chain) = critical_path(&report);
            critical.push(length);
            *chains.entry(chain).or_default() += 1;
        }
    }
    let (mw, ms, mc) = (
        median(&mut walls),
        median(&mut serial),
        median(&mut critical),
    );
    println!("in-process trace over {runs} runs (lab start excluded):");
    println!("  median wall time            {mw:8.1} ms   (target < 25 ms)");
    println!(
        "  median sum of step times    {ms:8.1} ms   ({:.2}x the wall time: steps overlap)",
        ms / mw
    );
    println!(
        "  median critical path        {mc:8.1} ms   (the last step's end; the rest is the engine's start and end)"
    );
    if let Some((chain, n)) = chains.iter().max_by_key(|(_, n)| **n) {
        let names: Vec<&str> = chain.iter().map(|s| s.as_str()).collect();
        println!(
            "  critical path ({n} of {runs} runs): {}",
            names.join(" -> ")
        );
    }

    // The binary as a user runs it, against the same lab.
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, &lab.kubeconfig_yaml).expect("write kubeconfig");
    let exe = env!("CARGO_BIN_EXE_meshtrace");
    let mut cli_walls = Vec::new();
    for _ in 0..runs.min(20) {
        let t = Instant::now();
        let out = Command::new(exe)
            .args([
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--primary",
                "lab-primary",
                "--remote",
                "lab-remote",
                "-o",
                "json",
            ])
            .output()
            .expect("run meshtrace");
        cli_walls.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(
            out.status.success(),
            "meshtrace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss = peak_rss_children_kib();
    let mcli = median(&mut cli_walls);
    println!("meshtrace binary ({exe}):");
    println!(
        "  median wall time            {mcli:8.1} ms   (process start to exit; target < 40 ms)"
    );
    println!(
        "  peak RSS                    {:8.1} MB   (target < 40 MB)",
        rss as f64 / 1024.0
    );

    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let mut k = Vec::new();
        for _ in 0..runs.min(10) {
            let t = Instant::now();
            let _ = Command::new("kubectl")
                .args([
                    "--kubeconfig",
                    kc.to_str().unwrap(),
                    "--context",
                    "lab-remote",
                    "get",
                    "secrets",
                    "-n",
                    "istio-system",
                ])
                .output();
            k.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let mk = median(&mut k);
        println!("kubectl get secrets (one request, for scale):");
        println!(
            "  median wall time            {mk:8.1} ms   (meshtrace = {:.2}x one kubectl get)",
            mcli / mk
        );
    }
    lab.shutdown();
}
