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

/// Longest chain of step durations through the `needs` graph.
fn critical_path(r: &TraceReport) -> f64 {
    let mut best: std::collections::HashMap<StepId, f64> = Default::default();
    for s in &r.steps {
        let before = engine::waits_for(s.id)
            .iter()
            .filter_map(|d| best.get(d))
            .cloned()
            .fold(0.0, f64::max);
        best.insert(s.id, before + s.duration_ms);
    }
    best.values().cloned().fold(0.0, f64::max)
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
            critical.push(critical_path(&report));
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
        "  median critical path        {mc:8.1} ms   ({:.2}x the wall time)",
        mc / mw
    );

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
