//! The running install profile (`TB_PROFILE`, docs/profiles.md), end to
//! end: (a) the real istiod issues the gateway's certificate when asked as
//! that profile's gateway asks (server name, token audience, root), for the
//! profile's SPIFFE ID; (b) meshtrace's binary traces the test bed and every
//! step passes; (c) `meshtrace lab --profile NAME` reports the same status
//! for every step. On every profile, the default one included; `.ci/run`
//! brings up each other profile and runs only these (`profiles::`).

use crate::bed::{Testbed, lock, runtime, testbed};
use crate::probe::{Answer, GatewayView, ask_until};
use serde_json::Value;
use std::time::Duration;

/// What the profile's gateway sends ([`GatewayView::healthy`]: its token's
/// audience, its root), dialled as the gateway dials: through the load
/// balancer on the network hosts (where an external istiod's public TLS is
/// terminated).
fn gateway(tb: &Testbed) -> GatewayView {
    let g = GatewayView::healthy(tb).unwrap_or_else(|e| panic!("gateway token: {e}"));
    GatewayView {
        addr: tb.dial_addr(),
        ..g
    }
}

/// The chain istiod returns, measured on every profile (cert-manager-ca's
/// tls.crt + ca.crt included): leaf, the signing CA, the root, and the root
/// again appended by the server.
const CHAIN_LEN: usize = 4;

#[test]
fn profile_istiod_issues_to_the_gateway() {
    let Some(tb) = testbed() else { return };
    let _g = lock();
    let rt = runtime();
    let g = gateway(tb);
    let a = rt.block_on(ask_until(&g, Duration::from_secs(10), Answer::is_issued));
    println!(
        "[profile {}] istiod, asked as the gateway (server name {}, audience {}, root {}): {}",
        tb.profile,
        tb.server_name,
        tb.gateway_audience,
        if tb.public_root.is_some() {
            "the public CA"
        } else {
            "the mesh root"
        },
        a.short()
    );
    assert_eq!(
        a,
        Answer::Issued {
            chain_len: CHAIN_LEN,
            uri_sans: vec![tb.gateway_spiffe()],
        },
        "[profile {}] the real istiod did not issue as expected",
        tb.profile
    );
}

/// meshtrace's binary against the test bed, as a user runs it; for an
/// external istiod the public CA is the platform's roots of that process
/// only (`SSL_CERT_FILE`, read by rustls-native-certs).
fn trace_json(tb: &Testbed) -> (Option<i32>, Value, String) {
    trace_json_with_roots(tb, tb.public_root.as_deref())
}

/// [`trace_json`] with `roots` as the platform's roots (`SSL_CERT_FILE`).
fn trace_json_with_roots(
    tb: &Testbed,
    roots: Option<&std::path::Path>,
) -> (Option<i32>, Value, String) {
    let mut cmd = assert_cmd::Command::cargo_bin("meshtrace").expect("binary builds");
    cmd.args([
        "--kubeconfig",
        &tb.kubeconfig.display().to_string(),
        "--primary",
        &tb.primary_ctx,
        "--remote",
        &tb.remote_ctx,
        "--istiod-debug-addr",
        &tb.istiod_monitoring,
        "-o",
        "json",
    ]);
    if let Some(a) = tb.istiod_addr_flag() {
        cmd.args(["--istiod-addr", a]);
    }
    if let Some(a) = tb.webhook_addr_flag() {
        cmd.args(["--istiod-webhook-addr", a.as_str()]);
    }
    if let Some(p) = roots {
        cmd.env("SSL_CERT_FILE", p);
    }
    let out = cmd.output().expect("meshtrace runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "[profile {}] meshtrace's output is not JSON ({e}): exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
            tb.profile,
            out.status.code()
        )
    });
    (out.status.code(), v, stderr)
}

/// `id status` of every step, and each non-passing step's diagnosis.
fn steps(v: &Value) -> Vec<(String, String)> {
    v["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["id"].as_str().unwrap_or("?").to_string(),
                        s["status"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn describe(v: &Value) -> String {
    let mut out = format!(
        "verdict {}, first failure {}",
        v["verdict"], v["first_failure"]
    );
    for s in v["steps"].as_array().into_iter().flatten() {
        if s["status"] != "pass" {
            out.push_str(&format!(
                "\n  {} {}: {}",
                s["status"].as_str().unwrap_or("?"),
                s["id"].as_str().unwrap_or("?"),
                s["diagnosis"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

#[test]
fn profile_healthy_trace_passes_every_step() {
    let Some(tb) = testbed() else { return };
    let _g = lock();
    let (code, v, stderr) = trace_json(tb);
    println!("[profile {}] meshtrace: {}", tb.profile, describe(&v));
    let st = steps(&v);
    assert_eq!(
        st.len(),
        meshtrace::model::STEPS.len(),
        "[profile {}] not every step reported: {}",
        tb.profile,
        describe(&v)
    );
    let not_pass: Vec<_> = st.iter().filter(|(_, s)| s != "pass").collect();
    assert!(
        not_pass.is_empty() && v["verdict"] == "pass" && code == Some(0),
        "[profile {}] the healthy trace does not pass every step (exit {code:?}): {}\nstderr: {stderr}",
        tb.profile,
        describe(&v)
    );
    // The identity meshtrace saw issued is the profile's.
    let chain = v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "issued-chain"))
        .expect("issued-chain step");
    assert_eq!(
        chain["evidence"]["spiffe_id"],
        Value::from(tb.gateway_spiffe()),
        "[profile {}] issued-chain evidence",
        tb.profile
    );
}

#[test]
fn profile_lab_agrees_step_by_step() {
    let Some(tb) = testbed() else { return };
    let _g = lock();
    let (_, bed, _) = trace_json(tb);
    let out = assert_cmd::Command::cargo_bin("meshtrace")
        .expect("binary builds")
        .args(["lab", "--profile", &tb.profile, "-o", "json"])
        .output()
        .expect("meshtrace lab runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lab: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "[profile {}] `meshtrace lab --profile {}` gave no JSON ({e}): exit {:?}\nstdout: {stdout}\nstderr: {}",
            tb.profile,
            tb.profile,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("[profile {}] lab: {}", tb.profile, describe(&lab));
    assert_eq!(
        steps(&lab),
        steps(&bed),
        "[profile {}] LAB AND TEST BED DISAGREE step by step\nlab:      {}\ntest bed: {}",
        tb.profile,
        describe(&lab),
        describe(&bed)
    );
}

/// external-istiod, broken as it breaks for real: the public CA in front
/// of istiod is not among the roots the gateway's agent trusts
/// (`CA_ROOT_CA=SYSTEM` on a machine without it). The gateway, asked with
/// the mesh root as its only root, never reaches istiod's CA; meshtrace,
/// with the same roots as the platform's, fails `istiod-tls` for the same
/// reason and blocks the CSR. Other profiles: nothing to break this way.
#[test]
fn profile_external_istiod_public_ca_not_trusted() {
    let Some(tb) = testbed() else { return };
    let Some(public) = &tb.public_root else {
        return;
    };
    let _g = lock();
    let mesh_root = tb.state.join("pki/istio/root-cert.pem");
    assert!(mesh_root.exists() && mesh_root != *public);
    // The gateway's side, by Go's TLS and gRPC as the agent's (csrcheck),
    // with the mesh root as its only root: the CSR never reaches istiod.
    let out = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/csrcheck-run"),
    )
    .args(["--addr", &tb.dial_addr(), "--tls-root"])
    .arg(&mesh_root)
    .env("MESHTRACE_TESTBED_STATE", &tb.state)
    .output()
    .expect("csrcheck-run runs");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("[profile {}] csrcheck, mesh root only: {said}", tb.profile);
    assert!(
        !out.status.success() && said.contains("certificate signed by unknown authority"),
        "[profile {}] the agent's TLS to the public front, verified with the mesh root only: {said}",
        tb.profile
    );
    // meshtrace with the mesh root as the platform's roots.
    let (code, v, _) = trace_json_with_roots(tb, Some(&mesh_root));
    println!(
        "[profile {}] untrusted public CA: {}",
        tb.profile,
        describe(&v)
    );
    assert_eq!(code, Some(1), "{}", describe(&v));
    assert_eq!(v["first_failure"], "istiod-tls", "{}", describe(&v));
    let tls = v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "istiod-tls"))
        .expect("istiod-tls");
    let diag = tls["diagnosis"].as_str().unwrap_or_default();
    assert!(
        diag.contains("platform's roots (CA_ROOT_CA=SYSTEM)")
            && diag.contains("signed by unknown authority"),
        "{diag}"
    );
    let csr = v["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "csr"))
        .expect("csr");
    assert_eq!(csr["code"], "csr/blocked", "{csr}");
}
