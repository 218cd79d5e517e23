//! The healthy test bed: every step passes, through the library and through
//! the binary, and the real istiod issues what meshtrace says it issues.

use crate::bed::{
    Cluster, GATEWAY_SA, NS, Restore, Session, lock, runtime, testbed, testbed_default,
};
use crate::probe::{
    Answer, GatewayView, ask_istiod, local_ip, options, passthrough, summary, trace, wait_healthy,
};
use meshtrace::model::{STEPS, Status, StepId, Verdict};
use serde_json::json;
use std::time::Duration;

fn spiffe() -> String {
    format!("spiffe://cluster.local/ns/{NS}/sa/{GATEWAY_SA}")
}

#[test]
fn healthy_testbed_passes_every_step() {
    // The other profiles' healthy traces: profiles.rs.
    let Some(tb) = testbed_default("healthy_testbed_passes_every_step") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    // The previous test may have just reverted: let istiod settle first.
    rt.block_on(wait_healthy(tb, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("test bed not healthy: {e}"));
    let r = rt.block_on(trace(tb, options(tb.istiod_addr_flag())));
    assert_eq!(r.steps.len(), STEPS.len(), "{}", summary(&r));
    for s in &r.steps {
        assert_eq!(
            s.status,
            Status::Pass,
            "{} did not pass: {:?} {:?}",
            s.id,
            s.diagnosis,
            s.evidence
        );
    }
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.first_failure, None);
    let chain = r.step(StepId::IssuedChain).unwrap();
    assert_eq!(chain.evidence["spiffe_id"], json!(spiffe()));
    // What meshtrace saw of the real test bed.
    let secret = r.step(StepId::RemoteSecret).unwrap();
    assert_eq!(secret.evidence["key"], json!(tb.remote_cluster_id));
    assert_eq!(
        secret.evidence["primary_cluster_id"]["value"],
        json!("primary")
    );
    let review = r.step(StepId::TokenReview).unwrap();
    assert_eq!(
        review.evidence["identity"],
        json!({"namespace": NS, "service_account": GATEWAY_SA})
    );
    // The real istiod agrees: it issues for the gateway (leaf, intermediate,
    // root from cert-chain.pem, and the root again: 4, measured).
    let a = rt.block_on(ask_istiod(
        &GatewayView::healthy(tb).expect("gateway token"),
    ));
    assert_eq!(
        a,
        Answer::Issued {
            chain_len: 4,
            uri_sans: vec![spiffe()]
        }
    );
    let csr = r.step(StepId::Csr).unwrap();
    assert_eq!(csr.evidence["cert_chain_length"], json!(4));
    // istiod's own view is evidence only when it came in before istiod's
    // answer (an issued chain is not held up for it), and over xDS it is
    // asked only after a refusal: a debug stream would take the new-stream
    // slot istiod's rate limit gives the gateway's xds step.
    // istiod_view_over_xds below reads it for certain.
    let view = csr.evidence["istiod_clusters"].as_str().unwrap_or_default();
    let source = csr.evidence["istiod_clusters_source"]
        .as_str()
        .unwrap_or_default();
    assert_ne!(source, xds_source(tb));
    assert!(
        view.contains("not waited for: istiod answered the CSR first"),
        "{view} / {source}"
    );
}

fn expected_view(tb: &crate::bed::Testbed) -> String {
    format!(
        "primary synced, {} synced ({NS}/istio-remote-secret-{})",
        tb.remote_cluster_id, tb.remote_cluster_id
    )
}

fn xds_source(tb: &crate::bed::Testbed) -> String {
    format!(
        "istiod's xDS at {} (istio.io/debug clusterz, as istioctl x internal-debug asks it; token of {NS}/default for \"istio-ca\")",
        tb.dial_addr()
    )
}

/// istiod's view of its clusters, read from the real istiod as the csr step
/// reads it (and as `istioctl x internal-debug clusterz --xds-address` does):
/// its debug type over xDS on 15012 with a token of istiod's namespace's
/// `default` service account. Both clusters, synced.
#[test]
fn istiod_view_over_xds() {
    let Some(tb) = testbed_default("istiod_view_over_xds") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    rt.block_on(wait_healthy(tb, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("test bed not healthy: {e}"));
    let token = tb
        .token(Cluster::Primary, "default", Some("istio-ca"), None, "10m")
        .expect("debug token");
    let addr = tb.dial_addr();
    let req = meshtrace::probe::xds_debug::DebugRequest {
        addr: &addr,
        server_name: &tb.server_name,
        root_pem: &tb.root_pem,
        token: &token.0,
        namespace: NS,
        service_account: "default",
        resource: "clusterz",
        timeout: Duration::from_secs(10),
    };
    let (view, err) = rt.block_on(meshtrace::probe::clusterz::fetch_xds_with_error(&req));
    assert!(err.is_none(), "istiod refused the debug request: {err:?}");
    assert_eq!(
        meshtrace::probe::clusterz::evidence(&view),
        expected_view(tb)
    );
}

/// The binary, as a user runs it: `-o json`, exit 0.
#[test]
fn healthy_testbed_cli_json() {
    let Some(tb) = testbed_default("healthy_testbed_cli_json") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    rt.block_on(wait_healthy(tb, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("test bed not healthy: {e}"));
    let out = assert_cmd::Command::cargo_bin("meshtrace")
        .expect("binary builds")
        .args([
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
        ])
        .args(
            tb.istiod_addr_flag()
                .map(|a| vec!["--istiod-addr".to_string(), a.to_string()])
                .unwrap_or_default(),
        )
        .args(
            tb.webhook_addr_flag()
                .map(|a| vec!["--istiod-webhook-addr".to_string(), a])
                .unwrap_or_default(),
        )
        .output()
        .expect("meshtrace runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["target"]["mode"], "clusters");
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(STEPS.len()));
    assert!(v.get("first_failure").is_none());
    let csr = v["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "csr"))
        .expect("csr step");
    // istiod's view never delays a passing CSR (issue 10) and is asked over
    // xDS only after a refusal: the evidence says which, and
    // istiod_view_over_xds proves the view itself.
    let view = csr["evidence"]["istiod_clusters"]
        .as_str()
        .unwrap_or_default();
    let source = csr["evidence"]["istiod_clusters_source"]
        .as_str()
        .unwrap_or_default();
    assert!(
        view.contains("not waited for: istiod answered the CSR first"),
        "{view} / {source}"
    );
}

/// Without --istiod-addr meshtrace dials what the remote's EndpointSlice
/// holds, as the gateway does. The EndpointSlice cannot hold 127.0.0.1 (the
/// API server refuses loopback addresses), so it holds a TCP pass-through on
/// this machine's own address to istiod, the east-west gateway's role: every
/// step passes.
#[test]
fn endpointslice_to_istiod_passes_without_istiod_addr() {
    let Some(tb) = testbed() else { return };
    // Any profile with a remote istiod Service (its name from TB_ISTIOD_SERVICE).
    let Some(svc) = tb.istiod_service.clone() else {
        println!(
            "profile {:?} has no istiod Service in the remote (the gateway dials a public name): skipped",
            tb.profile
        );
        return;
    };
    if tb.public_root.is_some() {
        println!(
            "profile {:?}: istiod's certificate is from a public CA: skipped",
            tb.profile
        );
        return;
    }
    let _g = lock();
    let rt = runtime();
    rt.block_on(wait_healthy(tb, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("test bed not healthy: {e}"));
    let mut s = Session::new(tb, &rt, "endpointslice-to-istiod");
    let selector = format!("kubernetes.io/service-name={svc}");
    let out = tb
        .kubectl(
            Cluster::Remote,
            &[
                "-n",
                NS,
                "get",
                "endpointslices",
                "-l",
                selector.as_str(),
                "-o",
                "jsonpath={.items[0].metadata.name}",
            ],
        )
        .expect("list EndpointSlices");
    let name = out.trim().to_string();
    let slice = s
        .save(
            Cluster::Remote,
            "endpointslice",
            Some(NS),
            &name,
            Restore::Replace,
        )
        .expect("save EndpointSlice");
    let ip = local_ip().unwrap_or_else(|e| panic!("{e}"));
    let gw = rt.block_on(passthrough(ip, tb.istiod_addr.clone()));
    // The slice's tcp-webhook too: the injection webhook's Service resolves to it.
    let hook = rt.block_on(passthrough(ip, tb.istiod_webhook.clone()));
    let mut n = slice.clone();
    n["endpoints"] = json!([{"addresses": [ip.to_string()], "conditions": {"ready": true}}]);
    for p in n["ports"].as_array_mut().expect("ports") {
        if p["name"] == "tcp-istiod" {
            p["port"] = json!(gw.port());
        }
        if p["name"] == "tcp-webhook" {
            p["port"] = json!(hook.port());
        }
    }
    s.write(Cluster::Remote, &n, Restore::Replace)
        .expect("patch EndpointSlice");
    let r = rt.block_on(trace(tb, options(None)));
    assert_eq!(r.verdict, Verdict::Pass, "{}", summary(&r));
    let ep = r.step(StepId::RemoteIstiodEndpoint).unwrap();
    assert_eq!(ep.evidence["address"], json!(gw.to_string()));
    assert_eq!(ep.evidence["address_source"], json!("EndpointSlice"));
    drop(s);
}
