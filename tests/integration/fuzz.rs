//! The fuzz corpora, replayed on the stable toolchain: every input under
//! tests/fuzz/corpus/<target>/ and every crash, timeout and slow input
//! cargo-fuzz kept under tests/fuzz/artifacts/<target>/ goes through the same
//! target function (tests/fuzz/targets.rs) that `cargo +nightly fuzz run`
//! calls, so a fixed crash stays fixed. Each input must also finish fast:
//! the bound is generous for a debug build, far below a hang.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("kubeconfig", targets::kubeconfig),
    ("jwt", targets::jwt),
    ("pem_chain", targets::pem_chain),
    ("clusterz", targets::clusterz),
    ("replay", targets::replay),
    ("kube_answer", targets::kube_answer),
    ("sanitize", targets::sanitize),
    ("tui_wrap", targets::tui_wrap),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "artifacts", "seeds"] {
        if let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) {
            out.extend(dir.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn every_fuzz_target_has_a_fuzz_binary_and_a_corpus() {
    for (name, _) in TARGETS {
        let bin = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(bin.exists(), "no cargo-fuzz target {}", bin.display());
        assert!(
            !inputs(name).is_empty(),
            "target {name} has no corpus under tests/fuzz/: run it (tests/fuzz/run) and keep its corpus"
        );
    }
}

#[test]
fn every_corpus_and_crash_file_replays_cleanly_and_fast() {
    meshtrace::install_crypto_provider();
    let mut ran = 0;
    for (name, target) in TARGETS {
        for path in inputs(name) {
            // A fuzzer running meanwhile may replace corpus files.
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails", path.display());
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(5),
                "{name}: {} took {took:?}",
                path.display()
            );
            ran += 1;
        }
    }
    assert!(ran > 0);
}

/// Inputs no corpus should have to hold because they are large: built here.
/// Each must be handled without a panic. How fast, and how the time grows
/// with the input, is measured by `cargo bench --bench large_inputs`; the
/// bound here only catches a hang (a quadratic regression on these sizes
/// takes minutes), so that load on a shared machine cannot fail it.
#[test]
fn large_and_deep_inputs_are_handled() {
    let deep_json = format!("{}1{}", "{\"a\":".repeat(150_000), "}".repeat(150_000));
    let deep_flow = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    // The TUI wraps texts capped at 4 KiB; a word 128 times that, and a
    // 2 MiB body for the answer classifier.
    let long_word = "x".repeat(512 << 10);
    let huge_body = "x".repeat(2 << 20);
    let escapes = "\u{1b}]0;title\u{7}\u{1b}[2J".repeat(50_000);
    // One auth scheme many times and the other never (was quadratic).
    let schemes = "basic x ".repeat(100_000);
    let cases: [(&str, Target, &[u8]); 8] = [
        ("kubeconfig", targets::kubeconfig, deep_json.as_bytes()),
        ("kubeconfig", targets::kubeconfig, deep_flow.as_bytes()),
        ("clusterz", targets::clusterz, deep_json.as_bytes()),
        ("replay", targets::replay, deep_json.as_bytes()),
        ("sanitize", targets::sanitize, escapes.as_bytes()),
        ("sanitize", targets::sanitize, schemes.as_bytes()),
        ("tui_wrap", targets::tui_wrap, long_word.as_bytes()),
        ("kube_answer", targets::kube_answer, huge_body.as_bytes()),
    ];
    for (name, target, data) in cases {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| target(data));
        assert!(outcome.is_ok(), "{name} on {} bytes panicked", data.len());
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{name} on {} bytes took {:?}: a hang",
            data.len(),
            started.elapsed()
        );
    }
}

/// Writes the hand-made seeds under tests/fuzz/seeds/ (valid inputs of each
/// kind, plus deep and hostile ones) from the lab; run it again when an
/// input's shape changes: `cargo test --test integration write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    meshtrace::install_crypto_provider();
    let root = meshtrace::lab::pki::Ca::root("fuzz root", "fuzz", 10);
    let inter = root.intermediate("fuzz inter", "fuzz", 5);
    let chain = inter.chain_pem.concat();
    let keys = meshtrace::lab::tokens::SigningKeys::generate("https://fuzz.invalid");
    let now = meshtrace::lab::tokens::now_unix();
    let token = keys.mint(&meshtrace::lab::tokens::TokenSpec {
        namespace: "ns".into(),
        service_account: "sa".into(),
        service_account_uid: "u".into(),
        audiences: vec!["istio-ca".into()],
        issued_at: now,
        expires_at: now + 600,
        pod: None,
    });
    let kc = meshtrace::lab::world::kubeconfig(
        "remote",
        "https://127.0.0.1:6443",
        &root.cert_pem,
        &token,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (events, report) = rt.block_on(async {
        let fault = meshtrace::lab::faults::find("no-tokenreview-rbac");
        let (report, events) = crate::support::trace_lab(fault, Default::default()).await;
        let lines: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        (lines, meshtrace::render::json::render(&report))
    });
    let with = |head: &[u8], body: &str| [head, body.as_bytes()].concat();
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("kubeconfig", "valid", kc.clone().into_bytes()),
        ("kubeconfig", "exec", kc.replace("    token:", "    exec: {command: /bin/sh}\n    x:").into_bytes()),
        ("kubeconfig", "deep-flow", format!("a: {}1{}", "{\"a\":".repeat(200), "}".repeat(200)).into_bytes()),
        ("kubeconfig", "deep-block", (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect::<String>().into_bytes()),
        ("jwt", "valid", token.clone().into_bytes()),
        ("pem_chain", "chain", chain.clone().into_bytes()),
        ("pem_chain", "root", root.cert_pem.clone().into_bytes()),
        ("clusterz", "synced", br#"[{"id":"primary","secretName":"","syncStatus":"synced"},{"id":"remote","secretName":"istio-system/istio-remote-secret-remote","syncStatus":"syncing"}]"#.to_vec()),
        ("clusterz", "escapes", "[{\"id\":\"r\u{1b}]0;x\u{7}\",\"syncStatus\":\"\u{1b}[2J\"}]".as_bytes().to_vec()),
        ("replay", "events", events.into_bytes()),
        ("replay", "report", report.into_bytes()),
        ("kube_answer", "status", with(&[9, 1, 1], r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"forbidden","reason":"Forbidden","code":403}"#)),
        ("kube_answer", "html", with(&[7, 2, 0], "<!DOCTYPE html><html><head><title>Sign in</title></head></html>")),
        ("kube_answer", "redirect", with(&[4, 0, 0], "https://login.example/")),
        ("kube_answer", "busy", with(&[12, 1, 0], r#"{"kind":"Status","message":"slow down"}"#)),
        ("kube_answer", "not-kube", with(&[0, 1, 1], r#"{"ok":true}"#)),
        ("sanitize", "echo", with(&[40, 30], &format!("Authorization: Bearer {token}\n{{\"token\":\"{token}\"}}\u{1b}]52;c;ZXZpbA==\u{7}"))),
        ("sanitize", "escapes", with(&[12, 3], "abc\u{1b}[31mdef\u{9b}2J\u{202e}ghi\r\n-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----")),
        ("tui_wrap", "hint", with(&[40], "bind it: kubectl --context lab-remote create clusterrolebinding istio-reader-tokenreview --clusterrole=istio-reader-clusterrole-istio-system (then re-run)")),
        ("tui_wrap", "wide", with(&[7], "日本語のテキスト 🙂🙂🙂 averyveryverylongwordthatmustbreak")),
    ];
    for (target, name, data) in seeds {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }
}
