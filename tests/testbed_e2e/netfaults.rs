//! Faults of the network between the hosts (tests/testbed/README.md,
//! "Network hosts"): the load balancer without a port, a firewall that drops,
//! an EndpointSlice holding the wrong address. Real: HAProxy reloaded with
//! another config (`tests/testbed/lb-reload`), nftables in the load
//! balancer's namespace (`tests/testbed/firewall`), the slice rewritten with
//! kubectl. meshtrace runs on the operator host without `--istiod-addr` and is
//! compared with the real istiod (a CSR as the gateway sends it, to the
//! address the gateway dials) and with the real remote API server (a webhook
//! call it makes to istiod's 15017 through the Service's EndpointSlice).
//!
//! Network hosts only: on the loopback bed (`TB_NETNS=0`) each test says so
//! and passes.

use crate::bed::{Cluster, NS, Net, Restore, Session, Testbed, lock, runtime, testbed_default};
use crate::probe::{Answer, GatewayView, ask_istiod, options, summary, trace, wait_healthy};
use meshtrace::model::{Status, StepId, TraceReport, Verdict};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// The test bed with network hosts, or None after saying why the test is skipped.
fn netbed(test: &str) -> Option<(&'static Testbed, &'static Net)> {
    let tb = testbed_default(test)?;
    match &tb.net {
        Some(n) => Some((tb, n)),
        None => {
            println!(
                "{test}: needs the network hosts (TB_NETNS=1; the test bed is the loopback one): skipped"
            );
            None
        }
    }
}

/// Runs one of the test bed's scripts (`tests/testbed/NAME ARGS`).
fn script(tb: &Testbed, name: &str, args: &[&str]) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testbed")
        .join(name);
    let out = std::process::Command::new(&path)
        .args(args)
        .env("MESHTRACE_TESTBED_STATE", &tb.state)
        .output()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "tests/testbed/{name} {} failed ({}): {text}",
            args.join(" "),
            out.status
        ))
    }
}

fn by_hand(tb: &Testbed, name: &str, args: &[&str]) -> String {
    format!(
        "MESHTRACE_TESTBED_STATE={} tests/testbed/{name} {}",
        tb.state.display(),
        args.join(" ")
    )
}

/// `lb-reload --without PORT`, restored (`lb-reload`) by the session.
fn lb_without(s: &mut Session, port: &str) -> Result<(), String> {
    let tb = s.tb;
    script(tb, "lb-reload", &["--without", port])?;
    s.on_revert(
        format!("load balancer forwards {port} again"),
        by_hand(tb, "lb-reload", &[]),
        |tb| script(tb, "lb-reload", &[]).map(|_| ()),
    );
    Ok(())
}

/// `firewall drop PORT` on the load balancer, cleared by the session.
fn firewall_drop(s: &mut Session, port: &str) -> Result<(), String> {
    let tb = s.tb;
    s.on_revert(
        "clear the firewall",
        by_hand(tb, "firewall", &["clear"]),
        |tb| script(tb, "firewall", &["clear"]).map(|_| ()),
    );
    script(tb, "firewall", &["drop", port, "--on", "lb"]).map(|_| ())
}

// ------------------------------------------------------------------ the remote API server's webhook call

const PROBE_NS: &str = "mt-webhook-probe";
const PROBE_LABEL: &str = "meshtrace-testbed/webhook-probe";
const PROBE_WEBHOOK: &str = "meshtrace-testbed-probe";

/// A ValidatingWebhookConfiguration in the remote that sends ConfigMap
/// creations in one namespace to istiod's `/validate` on 15017 through the
/// remote's `istiod` Service (port 443, as Istio's own `istio-validator`
/// webhook does), and that namespace; both deleted by the session. istiod's
/// validation server always serves `/validate` and answers "unrecognized type"
/// for a ConfigMap: that answer in kubectl's error proves the remote API server
/// reached the real istiod.
fn webhook_probe(s: &mut Session) -> Result<(), String> {
    let ca = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        s.tb.root_pem.as_bytes(),
    );
    s.create(
        Cluster::Remote,
        &json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": PROBE_NS, "labels": {PROBE_LABEL: "true"}}
        }),
    )?;
    s.create(
        Cluster::Remote,
        &json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": PROBE_WEBHOOK},
            "webhooks": [{
                "name": "probe.webhook.meshtrace-testbed.io",
                "clientConfig": {
                    "service": {"namespace": NS, "name": "istiod", "port": 443, "path": "/validate"},
                    "caBundle": ca
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
                "namespaceSelector": {"matchLabels": {PROBE_LABEL: "true"}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5
            }]
        }),
    )
}

/// What the remote API server got from its webhook call.
#[derive(Debug, PartialEq)]
enum Webhook {
    /// istiod answered (its words).
    IstiodAnswered(String),
    Refused(String),
    TimedOut(String),
    /// No route to the address (nothing there).
    Unreachable(String),
    Other(String),
}

/// A server-side dry-run ConfigMap create in the probe namespace: the API
/// server calls the webhook (sideEffects None) and nothing is stored.
fn api_server_calls_webhook(tb: &Testbed) -> (Webhook, Duration) {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": PROBE_NS}
    });
    let t0 = Instant::now();
    let r = tb.kubectl_stdin(
        Cluster::Remote,
        &["create", "--dry-run=server", "-f", "-"],
        serde_json::to_string(&cm).expect("JSON").as_bytes(),
    );
    let took = t0.elapsed();
    let w = match r {
        Ok(out) => Webhook::Other(format!("admitted without istiod's answer: {out}")),
        Err(e) => {
            let line = e
                .lines()
                .find(|l| l.contains("webhook"))
                .unwrap_or(&e)
                .to_string();
            if line.contains("unrecognized type") {
                Webhook::IstiodAnswered(line)
            } else if line.contains("connection refused") {
                Webhook::Refused(line)
            } else if line.contains("no route to host") || line.contains("host is unreachable") {
                Webhook::Unreachable(line)
            // (not "timeout": the webhook URL carries ?timeout=5s)
            } else if line.contains("i/o timeout") || line.contains("deadline exceeded") {
                Webhook::TimedOut(line)
            } else {
                Webhook::Other(line)
            }
        }
    };
    (w, took)
}

/// The API server dials the slice's address again only when its idle
/// keep-alive connection closes (the load balancer's 5 s idle timeout on
/// 15017, tests/testbed/lib.sh): asks until `done` holds (at most 20 s);
/// returns the last answer and the time until it came.
fn webhook_until(tb: &Testbed, done: impl Fn(&Webhook) -> bool) -> (Webhook, Duration) {
    let t0 = Instant::now();
    loop {
        let (w, _) = api_server_calls_webhook(tb);
        if done(&w) || t0.elapsed() > Duration::from_secs(20) {
            return (w, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

// ------------------------------------------------------------------ helpers

fn healthy_first(tb: &'static Testbed, rt: &tokio::runtime::Runtime) {
    rt.block_on(wait_healthy(tb, Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("test bed not healthy before the test: {e}"));
}

/// The gateway's CSR, sent where the gateway dials (`addr`).
fn gateway_at(tb: &Testbed, addr: String) -> GatewayView {
    GatewayView {
        addr,
        ..GatewayView::healthy(tb).expect("gateway token")
    }
}

fn step(r: &TraceReport, id: StepId) -> &meshtrace::model::StepResult {
    r.step(id)
        .unwrap_or_else(|| panic!("no {} step: {}", id.as_str(), summary(r)))
}

fn diag(r: &TraceReport, id: StepId) -> String {
    step(r, id).diagnosis.clone().unwrap_or_default()
}

// ------------------------------------------------------------------ healthy

/// The healthy network bed, seen from each side: meshtrace (no
/// `--istiod-addr`) dials the load balancer the remote's EndpointSlice holds;
/// the real istiod issues through it; the remote API server's webhook call
/// travels through it to istiod's 15017 and istiod answers.
#[test]
fn network_hosts_healthy_path_through_the_load_balancer() {
    let Some((tb, net)) = netbed("network_hosts_healthy_path_through_the_load_balancer") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    healthy_first(tb, &rt);
    let mut s = Session::new(tb, &rt, "net-healthy");
    webhook_probe(&mut s).expect("webhook probe");
    let r = rt.block_on(trace(tb, options(None)));
    assert_eq!(r.verdict, Verdict::Pass, "{}", summary(&r));
    let ep = step(&r, StepId::RemoteIstiodEndpoint);
    assert_eq!(
        ep.evidence["address"],
        json!(format!("{}:15012", net.lb_addr))
    );
    assert_eq!(ep.evidence["address_source"], json!("EndpointSlice"));
    let a = rt.block_on(ask_istiod(&gateway_at(
        tb,
        format!("{}:15012", net.lb_addr),
    )));
    assert!(
        a.is_issued(),
        "istiod through the load balancer: {}",
        a.short()
    );
    let (w, took) = webhook_until(tb, |w| matches!(w, Webhook::IstiodAnswered(_)));
    println!(
        "[net-healthy] meshtrace: pass; istiod via {}:15012: {}; remote API server's webhook call via the load balancer ({} ms): {w:?}",
        net.lb_addr,
        a.short(),
        took.as_millis()
    );
    assert!(matches!(w, Webhook::IstiodAnswered(_)), "{w:?}");
    drop(s);
}

// ------------------------------------------------------------------ (1) LB without 15017

#[test]
fn lb_without_15017() {
    let Some((tb, net)) = netbed("lb_without_15017") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    healthy_first(tb, &rt);
    let mut s = Session::new(tb, &rt, "lb-without-15017");
    webhook_probe(&mut s).expect("webhook probe");
    lb_without(&mut s, "15017").expect("lb-reload --without 15017");
    // The real remote API server: its webhook call to istiod is refused at the LB.
    let (w, took) = webhook_until(tb, |w| matches!(w, Webhook::Refused(_)));
    // The real istiod still issues through 15012.
    let a = rt.block_on(ask_istiod(&gateway_at(
        tb,
        format!("{}:15012", net.lb_addr),
    )));
    let r = rt.block_on(trace(tb, options(None)));
    println!(
        "[lb-without-15017] remote API server's webhook call (after {} ms): {w:?}; istiod via 15012: {}; meshtrace: {}",
        took.as_millis(),
        a.short(),
        summary(&r)
    );
    assert!(matches!(w, Webhook::Refused(_)), "{w:?}");
    assert!(a.is_issued(), "{}", a.short());
    // meshtrace dials the webhook's Service as the remote API server does
    // (its EndpointSlice: LB:15017) and is refused there too; every other
    // step passes, as in the lab's webhook-port-closed (a closed port in
    // the slice standing in for the load balancer).
    let expect = crate::check::lab("webhook-port-closed");
    crate::check::assert_report(&expect, &r, &format!("\nmeshtrace: {}", summary(&r)));
    let web = step(&r, StepId::InjectionWebhook);
    assert_eq!(
        web.finding.as_ref().map(|f| f.code.as_str()),
        Some("injection-webhook/unreachable"),
        "{}",
        summary(&r)
    );
    assert!(
        diag(&r, StepId::InjectionWebhook).contains(&format!("{}:15017", net.lb_addr)),
        "{}",
        summary(&r)
    );
    let lab = rt.block_on(crate::probe::lab_trace(
        tb,
        expect.lab.expect("a lab fault"),
    ));
    crate::check::assert_lab_agrees(&expect, &r, &lab, &[]);
    drop(s);
}

// ------------------------------------------------------------------ (2) firewall drops 15012

#[test]
fn firewall_drops_15012() {
    let Some((tb, net)) = netbed("firewall_drops_15012") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    healthy_first(tb, &rt);
    let mut s = Session::new(tb, &rt, "firewall-drops-15012");
    firewall_drop(&mut s, "15012").expect("firewall drop 15012");
    let lb = format!("{}:15012", net.lb_addr);
    let t0 = Instant::now();
    let a = rt.block_on(ask_istiod(&gateway_at(tb, lb.clone())));
    let istiod_ms = t0.elapsed().as_millis();
    let opts = options(None);
    let timeout = opts.timeout;
    let r = rt.block_on(trace(tb, opts));
    let tls = step(&r, StepId::IstiodTls);
    println!(
        "[firewall-drops-15012] istiod asked as the gateway: {} after {istiod_ms} ms; meshtrace: {}; istiod-tls took {:.0} ms (timeout {} ms)",
        a.short(),
        summary(&r),
        tls.duration_ms,
        timeout.as_millis()
    );
    // The CSR client's own deadline (5 s) ends the dial: no answer, no refusal.
    assert!(
        !a.is_issued() && !a.short().to_lowercase().contains("refused"),
        "{}",
        a.short()
    );
    assert!(
        istiod_ms >= 4900,
        "the gateway's CSR gave up after {istiod_ms} ms"
    );
    assert_eq!(r.first_failure, Some(StepId::IstiodTls), "{}", summary(&r));
    assert_eq!(tls.status, Status::Fail);
    assert_eq!(
        tls.finding.as_ref().map(|f| f.code.as_str()),
        Some("istiod-tls/unreachable")
    );
    let d = diag(&r, StepId::IstiodTls);
    assert!(d.contains("timed out"), "a drop is a timeout: {d}");
    assert!(!d.contains("refused"), "a drop is not a refusal: {d}");
    assert!(d.contains(&lb), "at the slice's address: {d}");
    // Within the step's own timeout (plus scheduling), and not early.
    let ms = tls.duration_ms;
    let limit = timeout.as_millis() as f64;
    assert!(
        ms >= limit - 50.0 && ms <= limit + 1500.0,
        "istiod-tls took {ms:.0} ms, timeout {limit} ms"
    );
    drop(s);
}

// ------------------------------------------------------------------ (3) the slice holds another address

#[test]
fn slice_holds_an_unused_address() {
    let Some((tb, net)) = netbed("slice_holds_an_unused_address") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    healthy_first(tb, &rt);
    let mut s = Session::new(tb, &rt, "slice-unused-address");
    webhook_probe(&mut s).expect("webhook probe");
    let slice = s
        .save(
            Cluster::Remote,
            "endpointslice",
            Some(NS),
            "istiod",
            Restore::Replace,
        )
        .expect("save the istiod EndpointSlice");
    let mut n: Value = slice.clone();
    n["endpoints"][0]["addresses"] = json!([net.unused_addr]);
    s.write(Cluster::Remote, &n, Restore::Replace)
        .expect("rewrite the slice");
    let at = format!("{}:15012", net.unused_addr);
    // The real gateway dials what the slice holds; the real API server sends
    // its webhook call there too (it resolves the slice itself).
    let a = rt.block_on(ask_istiod(&gateway_at(tb, at.clone())));
    let (w, took) = webhook_until(tb, |w| matches!(w, Webhook::Unreachable(_)));
    let r = rt.block_on(trace(tb, options(None)));
    println!(
        "[slice-unused-address] istiod via {at}: {}; remote API server's webhook call (after {} ms): {w:?}; meshtrace: {}",
        a.short(),
        took.as_millis(),
        summary(&r)
    );
    assert!(matches!(a, Answer::NotReached(_)), "{}", a.short());
    let hook_at = format!("{}:15017", net.unused_addr);
    assert!(
        matches!(&w, Webhook::Unreachable(m) if m.contains(&hook_at)),
        "the remote API server should dial {hook_at}, the slice's address: {w:?}"
    );
    // The east-west gateway's address (the LB) is not the one the slice
    // holds: istiod-exposure says so first; istiod-tls fails at the slice's
    // address as the real API server and istiod's CSR path do.
    assert_eq!(
        r.first_failure,
        Some(StepId::IstiodExposure),
        "{}",
        summary(&r)
    );
    assert_eq!(
        step(&r, StepId::IstiodExposure)
            .finding
            .as_ref()
            .map(|f| f.code.as_str()),
        Some("istiod-exposure/address-mismatch")
    );
    let tls = step(&r, StepId::IstiodTls);
    assert_eq!(
        tls.finding.as_ref().map(|f| f.code.as_str()),
        Some("istiod-tls/unreachable")
    );
    assert_eq!(tls.evidence["address"], json!(at));
    assert!(diag(&r, StepId::IstiodTls).contains(&at));
    drop(s);
}

// ------------------------------------------------------------------ (4) LB without 15012

#[test]
fn lb_without_15012() {
    let Some((tb, net)) = netbed("lb_without_15012") else {
        return;
    };
    let _g = lock();
    let rt = runtime();
    healthy_first(tb, &rt);
    let mut s = Session::new(tb, &rt, "lb-without-15012");
    lb_without(&mut s, "15012").expect("lb-reload --without 15012");
    let lb = format!("{}:15012", net.lb_addr);
    let a = rt.block_on(ask_istiod(&gateway_at(tb, lb.clone())));
    let r = rt.block_on(trace(tb, options(None)));
    println!(
        "[lb-without-15012] istiod via the LB: {}; meshtrace: {}",
        a.short(),
        summary(&r)
    );
    assert!(
        matches!(&a, Answer::NotReached(m) if m.to_lowercase().contains("refused")),
        "{}",
        a.short()
    );
    assert_eq!(r.first_failure, Some(StepId::IstiodTls), "{}", summary(&r));
    let tls = step(&r, StepId::IstiodTls);
    assert_eq!(
        tls.finding.as_ref().map(|f| f.code.as_str()),
        Some("istiod-tls/unreachable")
    );
    let d = diag(&r, StepId::IstiodTls);
    assert!(d.contains("refused"), "{d}");
    assert!(d.contains(&lb), "{d}");
    drop(s);
}
