//! injection-webhook on the real test bed: the remote's
//! MutatingWebhookConfiguration as the remote profile installs it
//! (`tests/testbed/up` renders it with istioctl), the real istiod's
//! `/inject` (its template from the primary's `istio-sidecar-injector`
//! ConfigMap), each broken with kubectl and restored by the guard. Besides
//! meshtrace, the lab and istiod's CSR answer (check.rs), the real remote
//! API server is asked too on the network hosts: a server-side dry-run Pod
//! that the injector's `rev.object.` webhook selects, so the API server
//! calls istiod through the webhook's Service and EndpointSlice, as for any
//! new pod, and nothing is stored.

use crate::bed::*;
use crate::check::{Plan, Want, lab, run_case};
use crate::probe::{GatewayView, wait_healthy};
use meshtrace::model::StepId;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The injector's configuration for the default revision (the fault tests
/// run on the default profile).
pub const INJECTOR: &str = "istio-sidecar-injector";

/// What the real remote API server did with a new pod of the revision.
#[derive(Debug, PartialEq)]
pub enum Admitted {
    /// Admitted with istiod's patch: the pod's init containers and containers.
    Injected(Vec<String>),
    /// Admitted, but no webhook added the proxy.
    NotInjected(Vec<String>),
    /// Refused: the API server's words (the webhook call failed).
    Refused(String),
}

/// A server-side dry-run create of a Pod labelled `istio.io/rev=<rev>` in
/// the remote's istio-system (no namespace label: the chart's `rev.object.`
/// webhook selects it), as a ReplicaSet would create the gateway's.
pub fn api_server_admits(tb: &Testbed) -> Admitted {
    let rev = &tb.revision;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "meshtrace-injection-dry-run", "namespace": NS,
            "labels": {"app": "meshtrace-injection-dry-run", "istio.io/rev": rev}},
        // serviceAccountName set as the ServiceAccount admission plugin (off
        // here) would: the injected istio-token volume requires one.
        "spec": {"serviceAccountName": "default",
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    });
    let out = tb.kubectl_stdin(
        Cluster::Remote,
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        serde_json::to_string(&pod).expect("JSON").as_bytes(),
    );
    match out {
        Ok(o) => {
            let v: Value = serde_json::from_str(&o).unwrap_or(Value::Null);
            // istio-proxy is a native sidecar (an init container with
            // restartPolicy Always) where the injector's values say so.
            let names: Vec<String> = ["initContainers", "containers"]
                .iter()
                .filter_map(|k| v["spec"][k].as_array())
                .flatten()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect();
            if names.iter().any(|n| n == "istio-proxy") {
                Admitted::Injected(names)
            } else {
                Admitted::NotInjected(names)
            }
        }
        Err(e) => Admitted::Refused(
            e.lines()
                .find(|l| l.contains("webhook"))
                .unwrap_or(&e)
                .to_string(),
        ),
    }
}

/// The API server keeps an idle connection to the webhook's address and
/// redials only once the load balancer closes it (5 s idle on 15017): asks
/// until `done` holds, at most 20 s.
pub fn admits_until(tb: &Testbed, done: impl Fn(&Admitted) -> bool) -> (Admitted, Duration) {
    let t0 = Instant::now();
    loop {
        let a = api_server_admits(tb);
        if done(&a) || t0.elapsed() > Duration::from_secs(20) {
            return (a, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The real remote API server's verdict, asked on the network hosts only
/// (on the loopback bed the webhook's slice address answers nothing).
fn api_server_check(s: &Session, what: &str, done: impl Fn(&Admitted) -> bool) {
    if s.tb.net.is_none() {
        println!("[{what}] loopback test bed: the remote API server's own call is not checked");
        return;
    }
    let (a, took) = admits_until(s.tb, &done);
    println!(
        "[{what}] the real remote API server, creating a pod of the revision (dry run, {} ms): {a:?}",
        took.as_millis()
    );
    assert!(done(&a), "[{what}] the remote API server: {a:?}");
}

fn injector_hooks(cfg: &mut Value) -> Result<Vec<&mut Value>, String> {
    Ok(cfg["webhooks"]
        .as_array_mut()
        .ok_or("no webhooks")?
        .iter_mut()
        .filter(|w| {
            w["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("sidecar-injector.istio.io"))
        })
        .collect())
}

/// The healthy bed: meshtrace's dry AdmissionReview gets istiod's patch,
/// and the real remote API server injects a new pod of the revision through
/// the same webhook (network hosts).
#[test]
fn webhook_healthy_api_server_injects() {
    let Some(tb) = testbed() else { return };
    let _g = lock();
    let rt = runtime();
    let r = rt
        .block_on(wait_healthy(tb, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("test bed not healthy: {e}"));
    let w = r.step(StepId::InjectionWebhook).expect("injection-webhook");
    println!(
        "[webhook-healthy] profile {}: meshtrace {}; {}",
        tb.profile, w.evidence["answer"], w.evidence["resolved"]
    );
    assert_eq!(
        w.status,
        meshtrace::model::Status::Pass,
        "{:?}",
        w.diagnosis
    );
    assert!(
        w.evidence["answer"]
            .as_str()
            .is_some_and(|a| a.starts_with("allowed") && a.contains("istio-proxy")),
        "{:?}",
        w.evidence
    );
    if tb.net.is_some() && tb.istiod_service.is_some() {
        let (a, took) = admits_until(tb, |a| matches!(a, Admitted::Injected(_)));
        println!(
            "[webhook-healthy] the real remote API server ({} ms): {a:?}",
            took.as_millis()
        );
        assert!(matches!(a, Admitted::Injected(_)), "{a:?}");
    }
}

/// The revision's MutatingWebhookConfiguration deleted: the remote API
/// server calls no injector and admits pods without the proxy.
#[test]
fn webhook_missing() {
    run_case(lab("webhook-missing"), |s| {
        s.delete(
            Cluster::Remote,
            "mutatingwebhookconfiguration",
            None,
            INJECTOR,
        )?;
        api_server_check(s, "webhook-missing", |a| {
            matches!(a, Admitted::NotInjected(_))
        });
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued)
            .says("no MutatingWebhookConfiguration"))
    });
}

/// The webhook's caBundle from another CA (the primary API server's). The
/// real istiod, leading the remote, patches its own CA bundle back
/// (pkg/webhooks/webhookpatch.go): measured first. An istiod that does not
/// manage the webhook (`INJECTION_WEBHOOK_CONFIG_NAME=""`: "a low-priv Istiod
/// should not attempt to patch", sidecarinjector.go) leaves it, and the
/// remote API server refuses the call.
#[test]
fn webhook_ca_bundle_mismatch() {
    run_case(lab("webhook-ca-bundle-mismatch"), |s| {
        let other = std::fs::read(s.tb.state.join("pki/primary/ca.crt"))
            .map_err(|e| format!("the primary API server's CA: {e}"))?;
        let other = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, other);
        s.on_revert(
            "restart istiod with its webhook patcher",
            restart_istiod_by_hand(s.tb),
            |tb| restart_istiod(tb, &[]),
        );
        let cfg = s.save(
            Cluster::Remote,
            "mutatingwebhookconfiguration",
            None,
            INJECTOR,
            Restore::Replace,
        )?;
        let mut bad = cfg.clone();
        for w in injector_hooks(&mut bad)? {
            w["clientConfig"]["caBundle"] = json!(other);
        }
        let bundle = |tb: &Testbed| -> Result<Value, String> {
            let c = tb
                .get(
                    Cluster::Remote,
                    "mutatingwebhookconfiguration",
                    None,
                    INJECTOR,
                )?
                .ok_or("gone")?;
            Ok(c["webhooks"][0]["clientConfig"]["caBundle"].clone())
        };
        // (1) istiod's patcher at work.
        s.write(Cluster::Remote, &bad, Restore::Replace)?;
        let t0 = Instant::now();
        while bundle(s.tb)? == json!(other) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let healed = bundle(s.tb)? != json!(other);
        println!(
            "[webhook-ca-bundle-mismatch] istiod leading the remote patched its CA bundle back: {healed} after {} ms",
            t0.elapsed().as_millis()
        );
        assert!(healed, "istiod did not patch the caBundle back within 10 s");
        // (2) istiod not managing the webhook: the foreign caBundle stays.
        restart_istiod(s.tb, &["INJECTION_WEBHOOK_CONFIG_NAME="])?;
        s.write(Cluster::Remote, &bad, Restore::Replace)?;
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(bundle(s.tb)?, json!(other), "istiod still patched it");
        api_server_check(
            s,
            "webhook-ca-bundle-mismatch",
            |a| matches!(a, Admitted::Refused(e) if e.contains("x509")),
        );
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).says("caBundle"))
    });
}

/// The webhook's Service reference names a Service the remote does not
/// have (`istiod-canary`).
#[test]
fn webhook_wrong_service() {
    run_case(lab("webhook-wrong-service"), |s| {
        let cfg = s.save(
            Cluster::Remote,
            "mutatingwebhookconfiguration",
            None,
            INJECTOR,
            Restore::Replace,
        )?;
        let mut bad = cfg.clone();
        for w in injector_hooks(&mut bad)? {
            w["clientConfig"]["service"]["name"] = json!("istiod-canary");
        }
        s.write(Cluster::Remote, &bad, Restore::Replace)?;
        api_server_check(
            s,
            "webhook-wrong-service",
            |a| matches!(a, Admitted::Refused(e) if e.contains("istiod-canary")),
        );
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).says("istiod-canary"))
    });
}

/// Test bed only: the remote's injector is another revision's. The default
/// revision's configuration is gone and `istio-sidecar-injector-canary`
/// (label `istio.io/rev: canary`, Service `istiod-canary`) is there, as
/// after a canary upgrade that removed the old revision's webhook too
/// early. meshtrace keeps only the revision istiod runs (`belongs`: the
/// label, or the chart's name), so the canary one does not count; the real
/// API server finds no webhook for a pod of revision default. istiod
/// (revision default) leaves the canary configuration alone
/// (webhookpatch.go: errWrongRevision).
#[test]
fn webhook_only_another_revision() {
    run_case(
        crate::check::testbed_only(
            "webhook-only-another-revision",
            StepId::InjectionWebhook,
            meshtrace::model::Status::Fail,
            "istio-sidecar-injector-canary",
        ),
        |s| {
            let cfg = s.delete(
                Cluster::Remote,
                "mutatingwebhookconfiguration",
                None,
                INJECTOR,
            )?;
            let mut other = crate::bed::clean(&cfg);
            other["metadata"]["name"] = json!(format!("{INJECTOR}-canary"));
            other["metadata"]["labels"]["istio.io/rev"] = json!("canary");
            // A revision's own configuration has the chart's rev.* webhooks only.
            let revs: Vec<Value> = other["webhooks"]
                .as_array()
                .ok_or("no webhooks")?
                .iter()
                .filter(|w| w["name"].as_str().is_some_and(|n| n.starts_with("rev.")))
                .cloned()
                .collect();
            let mut text = serde_json::to_string(&revs).map_err(|e| e.to_string())?;
            // The canary revision's selectors and Service, as the chart renders them.
            text = text
                .replace(r#""values":["default"]"#, r#""values":["canary"]"#)
                .replace(r#""name":"istiod""#, r#""name":"istiod-canary""#);
            other["webhooks"] = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            s.create(Cluster::Remote, &other)?;
            api_server_check(s, "webhook-only-another-revision", |a| {
                matches!(a, Admitted::NotInjected(_))
            });
            Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued)
                .says("no MutatingWebhookConfiguration"))
        },
    );
}
