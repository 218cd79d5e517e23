//! Secrets audit and misbehaving peers: no output format ever carries a
//! token, a signature or a private key; a peer that hangs costs at most the
//! step timeout.

use crate::support::{silent_peer, trace_lab};
use meshtrace::engine::{self, TraceOptions};
use meshtrace::lab::{faults, world::Lab};
use meshtrace::model::{Status, StepId, TraceEvent};
use meshtrace::render;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Every secret the lab holds that meshtrace reads or could read.
fn lab_secrets(lab: &Lab) -> Vec<String> {
    use k8s_openapi::api::core::v1::Secret;
    let mut out = Vec::new();
    let p = lab.primary_state.read().unwrap();
    let r = lab.remote_state.read().unwrap();
    out.push(p.admin_token.clone());
    out.push(r.admin_token.clone());
    for s in p.store.list::<Secret>() {
        for (k, v) in s.data.unwrap_or_default() {
            let text = String::from_utf8_lossy(&v.0).to_string();
            if k == "ca-key.pem" {
                // The key body, without the PEM armour every PEM shares.
                out.extend(
                    text.lines()
                        .filter(|l| !l.starts_with("-----") && l.len() > 20)
                        .map(str::to_string),
                );
            }
            for line in text.lines() {
                if let Some(tok) = line.trim().strip_prefix("token: ") {
                    out.push(tok.to_string());
                    // The signature alone must not leak either.
                    if let Some(sig) = tok.rsplit('.').next() {
                        out.push(sig.to_string());
                    }
                }
            }
        }
    }
    out.retain(|s| s.len() >= 16);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_format_leaks_a_secret() {
    for fault in [
        None,
        faults::find("no-tokenreview-rbac"),
        faults::find("reader-token-expired"),
        faults::find("gateway-audience"),
    ] {
        let lab = Lab::start(fault).await.unwrap();
        let secrets = lab_secrets(&lab);
        assert!(
            secrets.len() >= 4,
            "the audit must have secrets to look for: {}",
            secrets.len()
        );
        let opts = TraceOptions::default();
        let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let report = engine::run(clusters, opts, target, tx).await;
        let mut events = String::new();
        while let Ok(e) = rx.try_recv() {
            events.push_str(&serde_json::to_string(&e).unwrap());
        }
        lab.shutdown();
        let style = render::text::TextStyle {
            color: false,
            verbose: true,
            ascii: false,
            ..Default::default()
        };
        let outputs = [
            ("json", render::json::render(&report)),
            ("text -v", render::text::render(&report, style)),
            ("markdown", render::markdown::render(&report)),
            ("mermaid", render::mermaid::render(&report)),
            ("events", events),
        ];
        for (name, out) in &outputs {
            assert!(
                !out.contains("PRIVATE KEY"),
                "{name}: private key armour in output"
            );
            for s in &secrets {
                assert!(
                    !out.contains(s.as_str()),
                    "{name} ({:?}): a secret of {} chars leaked",
                    fault.map(|f| f.name),
                    s.len()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_that_accepts_but_never_answers_costs_one_timeout() {
    let (addr, holder) = silent_peer().await;
    let opts = TraceOptions {
        istiod_addr: Some(addr.to_string()),
        timeout: Duration::from_millis(600),
        ..Default::default()
    };
    let started = Instant::now();
    let (r, _) = trace_lab(None, opts).await;
    holder.abort();
    let tls = r.step(StepId::IstiodTls).unwrap();
    assert_eq!(tls.status, Status::Fail, "{:?}", tls.diagnosis);
    assert!(
        tls.diagnosis.as_deref().unwrap_or("").contains("timed out"),
        "{:?}",
        tls.diagnosis
    );
    assert_eq!(
        r.step(StepId::Csr).unwrap().blocked_by,
        vec![StepId::IstiodTls]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_that_never_answers_fails_within_the_timeout() {
    // The remote secret points at a silent peer: remote-api-tls must fail by
    // timeout, and everything istiod's view needs is blocked, not hung.
    let (addr, holder) = silent_peer().await;
    let lab = Lab::start(None).await.unwrap();
    {
        use k8s_openapi::api::core::v1::Secret;
        let mut p = lab.primary_state.write().unwrap();
        p.store
            .modify::<Secret>("istio-system", "istio-remote-secret-remote", |s| {
                let data = s.data.as_mut().unwrap();
                let kc = String::from_utf8(data["remote"].0.clone()).unwrap();
                let server = kc
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("server: "))
                    .unwrap()
                    .to_string();
                data.insert(
                    "remote".into(),
                    k8s_openapi::ByteString(
                        kc.replace(&server, &format!("https://{addr}")).into_bytes(),
                    ),
                );
            });
    }
    let opts = TraceOptions {
        timeout: Duration::from_millis(600),
        ..Default::default()
    };
    let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let r = engine::run(clusters, opts, target, tx).await;
    lab.shutdown();
    holder.abort();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let tls = r.step(StepId::RemoteApiTls).unwrap();
    assert_eq!(tls.status, Status::Fail, "{:?}", tls.diagnosis);
    assert_eq!(
        r.step(StepId::TokenReview).unwrap().blocked_by,
        vec![StepId::RemoteApiTls]
    );
    // The stream ended with a finish for every step, none left running.
    let mut finished = 0;
    while let Ok(e) = rx.try_recv() {
        if matches!(e, TraceEvent::StepFinished { .. }) {
            finished += 1;
        }
    }
    assert_eq!(finished, meshtrace::model::STEPS.len());
}

/// istiod's monitoring port accepts and never answers: an issued certificate
/// does not wait for istiod's view; a refusal waits at most one timeout for
/// it, and says it is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_istiod_debug_port_costs_a_refusal_one_timeout_and_a_pass_nothing() {
    let (addr, holder) = silent_peer().await;
    let timeout = Duration::from_millis(1500);
    let opts = |t| TraceOptions {
        istiod_debug_addr: Some(addr.to_string()),
        timeout: t,
        ..Default::default()
    };

    let (r, _) = trace_lab(None, opts(timeout)).await;
    let csr = r.step(StepId::Csr).unwrap();
    assert_eq!(csr.status, Status::Pass, "{:?}", csr.diagnosis);
    assert!(
        csr.duration_ms < 1000.0,
        "the CSR passed, yet the step waited {} ms for istiod's view",
        csr.duration_ms
    );
    assert!(
        csr.evidence["istiod_clusters"]
            .as_str()
            .unwrap_or("")
            .contains("not waited for"),
        "{:?}",
        csr.evidence["istiod_clusters"]
    );

    let fault = meshtrace::lab::faults::find("istiod-token-audiences").unwrap();
    let started = Instant::now();
    let mut o = opts(timeout);
    // The operator's audience: the trace reaches the CSR istiod refuses.
    o.token_audience = Some("istio-ca".into());
    let (r, _) = trace_lab(Some(fault), o).await;
    holder.abort();
    let csr = r.step(StepId::Csr).unwrap();
    assert_eq!(csr.status, Status::Fail);
    // The silent debug port is not needed: istiod answered over xDS.
    let source = csr.evidence["istiod_clusters_source"]
        .as_str()
        .unwrap_or("");
    assert!(source.starts_with("istiod's xDS at "), "{source}");
    assert!(
        started.elapsed() < timeout * 4,
        "took {:?}",
        started.elapsed()
    );
}

/// The body of every P-256 PKCS#8 key PEM begins so (the DER's fixed
/// prefix, base64): the key the CSR was made with, if it leaked.
const P256_PKCS8_PREFIX: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH";

/// A gateway whose agent presents a client certificate (PROV_CERT): the
/// xds step presents the issued chain with the CSR's key, and no output
/// holds any key material.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_trace_holds_no_key_material() {
    use k8s_openapi::api::apps::v1::Deployment;
    let lab = Lab::start(None).await.unwrap();
    let opts = TraceOptions::default();
    let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts).await.unwrap();
    let deployments: kube::Api<Deployment> =
        kube::Api::namespaced(clusters.remote.clone(), "istio-system");
    let mut d = deployments.get("istio-eastwestgateway").await.unwrap();
    let c = &mut d.spec.template.spec.as_mut().unwrap().containers[0];
    c.env
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "PROV_CERT".into(),
            value: Some("/etc/certs".into()),
            ..Default::default()
        });
    d.metadata.managed_fields = None;
    deployments
        .replace("istio-eastwestgateway", &Default::default(), &d)
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let report = engine::run(clusters, opts, target, tx).await;
    let mut events = String::new();
    while let Ok(e) = rx.try_recv() {
        events.push_str(&serde_json::to_string(&e).unwrap());
    }
    lab.shutdown();
    let xds = report.step(StepId::Xds).unwrap();
    assert_eq!(
        xds.status,
        Status::Pass,
        "{:?} {:?}",
        xds.diagnosis,
        xds.evidence
    );
    assert!(
        xds.evidence["identity"].as_str().is_some_and(
            |i| i.contains("client certificate spiffe://cluster.local/ns/istio-system/sa/")
        ),
        "{:?}",
        xds.evidence["identity"]
    );
    let style = render::text::TextStyle {
        color: false,
        verbose: true,
        ascii: false,
        ..Default::default()
    };
    for (name, out) in [
        ("json", render::json::render(&report)),
        ("text -v", render::text::render(&report, style)),
        ("events", events),
    ] {
        assert!(!out.contains("PRIVATE KEY"), "{name}: key armour");
        assert!(!out.contains(P256_PKCS8_PREFIX), "{name}: a P-256 key");
        assert!(
            !out.contains("[redacted private key]"),
            "{name}: a key reached the sanitizer"
        );
    }
}
