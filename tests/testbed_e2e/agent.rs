//! The real gateway agent beside meshtrace: `tests/testbed/agent` runs
//! `pilot-agent proxy router` (no Envoy: `DISABLE_ENVOY=true`) on the
//! remote's host with the gateway Pod's own env, token and root, and says
//! whether it obtained its workload certificate from the real istiod. Its
//! verdict and meshtrace's are compared on the healthy bed and on a fault.

use crate::bed::{Cluster, Session, Testbed, lock, runtime, testbed_default};
use std::path::Path;
use std::process::Command;

/// The agent's one-line verdict and whether it got a certificate.
fn run_agent(tb: &Testbed) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/agent");
    let out = Command::new(script)
        .args(["--timeout", "8"])
        .env("MESHTRACE_TESTBED_STATE", &tb.state)
        .output()
        .expect("tests/testbed/agent runs");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "tests/testbed/agent could not run the agent (exit {:?}): {line}\n{}\nthe agent's log:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        crate::bed::tail(
            &std::fs::read_to_string(tb.state.join("logs/agent-remote.log")).unwrap_or_default(),
            20
        )
    );
    (out.status.success(), line)
}

/// meshtrace's binary on the bed, as a user runs it: (exit, JSON report).
fn trace(tb: &Testbed) -> (Option<i32>, serde_json::Value) {
    let mut cmd = assert_cmd::Command::cargo_bin("meshtrace").expect("binary builds");
    cmd.arg("--kubeconfig")
        .arg(&tb.kubeconfig)
        .args(["--primary", &tb.primary_ctx, "--remote", &tb.remote_ctx])
        .args(["--istiod-debug-addr", &tb.istiod_monitoring, "-o", "json"]);
    if let Some(a) = tb.istiod_addr_flag() {
        cmd.args(["--istiod-addr", a]);
    }
    if let Some(a) = tb.webhook_addr_flag() {
        cmd.args(["--istiod-webhook-addr", a.as_str()]);
    }
    let out = cmd.output().expect("meshtrace runs");
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).expect("JSON"),
    )
}

/// The default-profile bed on network hosts: the gateway's Service names
/// resolve only there (the remote host's hosts file).
fn agent_bed(test: &str) -> Option<&'static Testbed> {
    let tb = testbed_default(test)?;
    if tb.net.is_none() {
        println!(
            "{test}: the gateway's names resolve only on the network hosts (loopback bed): skipped"
        );
        return None;
    }
    Some(tb)
}

#[test]
fn agent_obtains_the_certificate_meshtrace_saw_issued() {
    let Some(tb) = agent_bed("agent_obtains_the_certificate_meshtrace_saw_issued") else {
        return;
    };
    let _g = lock();
    let (ok, line) = run_agent(tb);
    println!("{line}");
    assert!(ok, "{line}");
    let (code, v) = trace(tb);
    assert_eq!(code, Some(0), "{v}");
    let chain = v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "issued-chain"))
        .expect("issued-chain");
    let spiffe = chain["evidence"]["spiffe_id"].as_str().unwrap_or_default();
    assert!(
        line.contains(&format!("certificate obtained: {spiffe} (4 certs)")),
        "the agent's certificate vs meshtrace's issued chain ({spiffe}): {line}"
    );
}

/// istiod's reader may not create TokenReviews in the remote: the real
/// agent gets "request authenticate failure", and meshtrace names the cause
/// at remote-rbac.
#[test]
fn agent_refused_where_meshtrace_fails_remote_rbac() {
    let Some(tb) = agent_bed("agent_refused_where_meshtrace_fails_remote_rbac") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    let mut s = Session::new(tb, &rt, "agent_refused_where_meshtrace_fails_remote_rbac");
    s.delete(
        Cluster::Remote,
        "clusterrolebinding",
        None,
        "istio-reader-clusterrole-istio-system",
    )
    .expect("delete the reader's binding");
    let (ok, line) = run_agent(tb);
    println!("{line}");
    assert!(
        !ok && line.contains("request authenticate failure"),
        "the agent without the reader's TokenReview right: {line}"
    );
    let (code, v) = trace(tb);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["first_failure"], "remote-rbac", "{v}");
    drop(s);
}
