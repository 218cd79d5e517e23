//! The running install profile (`TB_PROFILE`, docs/profiles.md), end to
//! end: (a) the real istiod issues the gateway's certificate when asked as
//! that profile's gateway asks (server name, token audience, root), for the
//! profile's SPIFFE ID; (b) meshtrace's binary traces the test bed and every
//! step passes; (c) `meshtrace lab --profile NAME` reports the same status
//! for every step. On every profile, the default one included; `.ci/run`
//! brings up each other profile and runs only these (`profiles::`).

use crate::bed::{GATEWAY, GATEWAY_SA, Testbed, lock, runtime, testbed};
use crate::probe::{Answer, GatewayView, ask_until};
use serde_json::Value;
use std::time::Duration;

/// What the profile's gateway sends: a token with its istio-token's
/// audience, bound to its pod; TLS for its server name, verified with its
/// root (the public CA when its root is SYSTEM, else the mesh root).
fn gateway(tb: &Testbed) -> GatewayView {
    let token = tb
        .token(
            crate::bed::Cluster::Remote,
            GATEWAY_SA,
            Some(&tb.gateway_audience),
            Some(GATEWAY),
            "10m",
        )
        .unwrap_or_else(|e| panic!("gateway token: {e}"));
    let root_pem = match &tb.public_root {
        Some(p) => std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("TB_PUBLIC_ROOT {}: {e}", p.display())),
        None => tb.root_pem.clone(),
    };
    GatewayView {
        token,
        cluster_id: tb.remote_cluster_id.clone(),
        root_pem,
        addr: tb.istiod_addr.clone(),
        server_name: tb.server_name.clone(),
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
    let mut cmd = assert_cmd::Command::cargo_bin("meshtrace").expect("binary builds");
    cmd.args([
        "--kubeconfig",
        &tb.kubeconfig.display().to_string(),
        "--primary",
        &tb.primary_ctx,
        "--remote",
        &tb.remote_ctx,
        "--istiod-addr",
        &tb.istiod_addr,
        "--istiod-debug-addr",
        &tb.istiod_monitoring,
        "-o",
        "json",
    ]);
    if let Some(p) = &tb.public_root {
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
