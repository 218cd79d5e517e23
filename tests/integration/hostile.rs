//! Hostile peers (docs/security.md): servers on 127.0.0.1 that echo
//! credentials, send huge, endless or trickling bodies, redirect to login
//! pages, answer 429/503 or a 200 that is no Kubernetes object, and a remote
//! secret nested to blow a parser up. Whatever they do: no planted secret in
//! any output (the TUI's screen included), every step ends within its
//! timeout, every answer is named for what it is, and the terminal is
//! restored on any signal.

use crate::support::trace_lab;
use axum::response::{IntoResponse, Response};
use meshtrace::engine::{self, Clusters, TraceOptions, target};
use meshtrace::lab::apiserver::{ApiServer, BoundApiServer};
use meshtrace::lab::{pki::Ca, world::Lab};
use meshtrace::model::{STEPS, Status, StepId, Target, TraceEvent, TraceReport, TraceState};
use meshtrace::render;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The operator's token in the hostile context: a JWT, so its signature is
/// checked on its own as well.
const PLANTED: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InBsYW50ZWQifQ.eyJzdWIiOiJwbGFudGVkLW9wZXJhdG9yIn0.UExBTlRFRC1TSUdOQVRVUkUtbXVzdC1uZXZlci1sZWFrLTAxMjM0NTY3ODk";
/// An opaque token (no shape to find it by, only the exact value).
const PLANTED_OPAQUE: &str = "opaque0operator0token0never0shown0123456789";

type Handler = Arc<dyn Fn(&http::HeaderMap, &str) -> Response + Send + Sync>;

/// An HTTPS "API server" answering every request with `h`, and how many
/// requests it got.
fn hostile(h: Handler) -> (ApiServer, Arc<AtomicUsize>) {
    let ca = Ca::root("hostile peer", "hostile", 1);
    let bound = BoundApiServer::bind(&ca).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let h = h.clone();
        count.fetch_add(1, Ordering::SeqCst);
        async move { h(req.headers(), req.uri().path()) }
    });
    (bound.serve_app(app), hits)
}

/// The request's own credentials, echoed the ways proxies do: the header
/// as is, the token alone, the token split by an escape sequence, and
/// terminal escapes (title, clear screen, clipboard write) around it.
fn echo(headers: &http::HeaderMap) -> String {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let tok = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_string();
    let (a, b) = tok.split_at(tok.len() / 2);
    format!(
        "upstream refused Authorization: {auth} (token {tok}; again {a}\u{1b}[0m{b}) \u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}]52;c;ZXZpbA==\u{7}"
    )
}

fn status_body(code: u16, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": "InternalError", "code": code
    })
    .to_string()
}

/// Trace the lab's primary with the `--remote` context pointing at `server`
/// (the operator's token there is `token`).
async fn trace_remote_at(
    lab: &Lab,
    (url, ca_pem): (&str, &str),
    token: &str,
    opts: TraceOptions,
) -> (TraceReport, Vec<TraceEvent>) {
    let hostile_kc = meshtrace::lab::world::kubeconfig("hostile", url, ca_pem, token);
    let kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml)
        .unwrap()
        .merge(kube::config::Kubeconfig::from_yaml(&hostile_kc).unwrap())
        .unwrap();
    let (p, _) = target::client_for(&kc, "lab-primary", opts.timeout)
        .await
        .unwrap();
    let (r, remote_server) = target::client_for(&kc, "hostile", opts.timeout)
        .await
        .unwrap();
    let mut secrets = target::context_secrets(&kc, "lab-primary");
    secrets.extend(target::context_secrets(&kc, "hostile"));
    assert!(
        secrets.iter().any(|s| s == token),
        "the operator's token is held"
    );
    let clusters = Clusters {
        primary: p,
        remote: r,
        remote_server,
        primary_server: String::new(),
        secrets,
    };
    let t = Target {
        primary: "lab-primary".into(),
        remote: "hostile".into(),
        istio_namespace: "istio-system".into(),
        mode: meshtrace::model::Mode::Clusters,
        fault: None,
        cluster_id: None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let report = engine::run(clusters, opts, t, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (report, events)
}

/// Every output of a run: json, text -v, markdown, mermaid, events, and the
/// TUI's screen with each step selected in turn.
fn outputs(report: &TraceReport, events: &[TraceEvent]) -> Vec<(String, String)> {
    let style = render::text::TextStyle {
        color: false,
        verbose: true,
        ascii: false,
        ..Default::default()
    };
    let mut out = vec![
        ("json".to_string(), render::json::render(report)),
        ("text -v".into(), render::text::render(report, style)),
        ("markdown".into(), render::markdown::render(report)),
        ("mermaid".into(), render::mermaid::render(report)),
        (
            "events".into(),
            events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap() + "\n")
                .collect(),
        ),
    ];
    let mut st = TraceState::default();
    for e in events {
        st.apply(e);
    }
    let mut app = meshtrace::tui::App::new(meshtrace::tui::theme::cycle("mono", true), false);
    let mut screens = String::new();
    for i in 0..STEPS.len() {
        app.selected = i;
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 60)).unwrap();
        t.draw(|f| {
            meshtrace::tui::view::draw(f, &st, &app);
        })
        .unwrap();
        screens.push_str(&t.backend().to_string());
    }
    out.push(("tui".into(), screens));
    out
}

/// Fails when any output holds `secret`, or any 16-character piece of it
/// (a token wrapped across lines of the TUI still shows its pieces).
fn assert_absent(outs: &[(String, String)], secret: &str) {
    let chars: Vec<char> = secret.chars().collect();
    for (name, text) in outs {
        assert!(!text.contains(secret), "{name}: the whole secret leaked");
        for w in chars.windows(16) {
            let piece: String = w.iter().collect();
            assert!(
                !text.contains(&piece),
                "{name}: a piece of a secret leaked: {piece}"
            );
        }
    }
}

fn assert_no_escapes(outs: &[(String, String)]) {
    for (name, text) in outs {
        if let Some(c) = text
            .chars()
            .find(|c| meshtrace::inspect::sanitize::is_unsafe_char(*c, true))
        {
            panic!("{name}: control character {c:?} reached the output");
        }
    }
}

fn diagnosis(r: &TraceReport, id: StepId) -> String {
    r.step(id)
        .and_then(|s| s.diagnosis.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tokens_echoed_by_the_remote_api_never_reach_any_output() {
    for (token, code) in [(PLANTED, 500), (PLANTED_OPAQUE, 403)] {
        let (server, _) = hostile(Arc::new(move |h, _| {
            let body = if code == 500 {
                status_body(500, &echo(h))
            } else {
                echo(h) // text/plain: kube wraps it in a Status itself
            };
            (http::StatusCode::from_u16(code).unwrap(), body).into_response()
        }));
        let lab = Lab::start(None).await.unwrap();
        let (report, events) = trace_remote_at(
            &lab,
            (&server.url, &server.ca_pem),
            token,
            TraceOptions::default(),
        )
        .await;
        lab.shutdown();
        let outs = outputs(&report, &events);
        assert_absent(&outs, token);
        assert_absent(&outs, token.rsplit('.').next().unwrap());
        assert_no_escapes(&outs);
        // The echo did reach meshtrace, and was redacted, not dropped.
        let gw = diagnosis(&report, StepId::GatewayPod);
        assert!(gw.contains("[redacted"), "{gw}");
        assert!(gw.contains("upstream refused"), "{gw}");
    }
}

/// The secrets of the lab's remote secret (the reader token and its signature).
fn reader_token(lab: &Lab) -> String {
    use k8s_openapi::api::core::v1::Secret;
    let p = lab.primary_state.read().unwrap();
    let s = p
        .store
        .list::<Secret>()
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some("istio-remote-secret-remote"))
        .unwrap();
    let kc = String::from_utf8(s.data.unwrap()["remote"].0.clone()).unwrap();
    kc.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string()
}

/// Point the lab's remote secret at `server` (its CA too, so TLS passes and
/// the request with the reader token is sent).
fn repoint_remote_secret(lab: &Lab, server: &str, ca_pem: &str) {
    use base64::Engine;
    use k8s_openapi::api::core::v1::Secret;
    let mut p = lab.primary_state.write().unwrap();
    p.store
        .modify::<Secret>("istio-system", "istio-remote-secret-remote", |s| {
            let data = s.data.as_mut().unwrap();
            let kc = String::from_utf8(data["remote"].0.clone()).unwrap();
            let mut out = String::new();
            for line in kc.lines() {
                let t = line.trim_start();
                let indent = &line[..line.len() - t.len()];
                if t.starts_with("server: ") {
                    out.push_str(&format!("{indent}server: {server}\n"));
                } else if t.starts_with("certificate-authority-data: ") {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
                    out.push_str(&format!("{indent}certificate-authority-data: {b64}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            data.insert("remote".into(), k8s_openapi::ByteString(out.into_bytes()));
        });
}

async fn trace(lab: &Lab, opts: TraceOptions) -> (TraceReport, Vec<TraceEvent>) {
    let (clusters, target) = meshtrace::cli::lab_target(lab, &opts).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let report = engine::run(clusters, opts, target, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (report, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_secrets_token_echoed_by_its_server_never_reaches_any_output() {
    let (server, hits) = hostile(Arc::new(|h, _| {
        (http::StatusCode::UNAUTHORIZED, status_body(401, &echo(h))).into_response()
    }));
    let lab = Lab::start(None).await.unwrap();
    let token = reader_token(&lab);
    repoint_remote_secret(&lab, &server.url, &server.ca_pem);
    let (report, events) = trace(&lab, TraceOptions::default()).await;
    lab.shutdown();
    assert!(
        hits.load(Ordering::SeqCst) > 0,
        "the echoing server was asked"
    );
    let outs = outputs(&report, &events);
    assert_absent(&outs, &token);
    assert_absent(&outs, token.rsplit('.').next().unwrap());
    assert_no_escapes(&outs);
    let id = diagnosis(&report, StepId::RemoteIdentity);
    assert_eq!(
        report.step(StepId::RemoteIdentity).unwrap().status,
        Status::Fail
    );
    assert!(id.contains("401"), "{id}");
}

/// Any JWT at all in a text: `eyJ` with two dots after it.
fn holds_a_jwt(text: &str) -> bool {
    text.match_indices("eyJ").any(|(i, _)| {
        let rest: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        rest.matches('.').count() >= 2 && rest.len() > 40
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_token_echoed_by_istiod_never_reaches_any_output() {
    let lab = Lab::start_with(None, |q| q.echo_metadata = true)
        .await
        .unwrap();
    let (report, events) = trace(&lab, TraceOptions::default()).await;
    lab.shutdown();
    let csr = report.step(StepId::Csr).unwrap();
    assert_eq!(csr.status, Status::Fail);
    let d = csr.diagnosis.clone().unwrap_or_default();
    let grpc = csr.evidence["grpc_status"].to_string();
    assert!(
        grpc.contains("authorization"),
        "the echo reached meshtrace: {grpc}"
    );
    assert!(grpc.contains("[redacted"), "{grpc}");
    for (name, text) in outputs(&report, &events) {
        assert!(!holds_a_jwt(&text), "{name} holds a JWT");
    }
    assert!(!holds_a_jwt(&d));
}

/// A body of `total` bytes (None: endless) in 64 KiB chunks, `gap` apart.
fn stream_body(total: Option<usize>, chunk: usize, gap: Duration) -> axum::body::Body {
    let stream = futures::stream::unfold(0usize, move |sent| async move {
        if total.is_some_and(|t| sent >= t) {
            return None;
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; chunk])),
            sent + chunk,
        ))
    });
    axum::body::Body::from_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_endless_and_trickling_bodies_end_within_the_timeout() {
    let timeout = Duration::from_millis(1500);
    let cases: [(&str, Handler, &str); 4] = [
        (
            "64 MiB",
            Arc::new(|_, _| {
                let body = stream_body(Some(64 << 20), 64 << 10, Duration::ZERO);
                ([("content-type", "application/json")], body).into_response()
            }),
            "larger than 16 MiB",
        ),
        (
            "endless",
            Arc::new(|_, _| {
                let body = stream_body(None, 64 << 10, Duration::ZERO);
                ([("content-type", "application/json")], body).into_response()
            }),
            "larger than 16 MiB",
        ),
        (
            "trickle",
            Arc::new(|_, _| {
                let body = stream_body(None, 1, Duration::from_millis(100));
                ([("content-type", "application/json")], body).into_response()
            }),
            "did not answer within 1s 500ms",
        ),
        (
            "20 MB error",
            Arc::new(|_, _| {
                (
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "x".repeat(20 << 20),
                )
                    .into_response()
            }),
            "larger than 16 MiB",
        ),
    ];
    for (name, h, want) in cases {
        let (server, _) = hostile(h);
        let lab = Lab::start(None).await.unwrap();
        let opts = TraceOptions {
            timeout,
            ..Default::default()
        };
        let started = Instant::now();
        let (report, _) = trace_remote_at(&lab, (&server.url, &server.ca_pem), PLANTED, opts).await;
        let took = started.elapsed();
        lab.shutdown();
        let gw = diagnosis(&report, StepId::GatewayPod);
        assert!(gw.contains(want), "{name}: {gw}");
        // Every step that talks to the remote waits at most one timeout,
        // plus the engine's margin; the trace as a whole likewise.
        assert!(
            took < timeout * 2 + Duration::from_secs(1),
            "{name}: took {took:?}"
        );
        let json = render::json::render(&report);
        assert!(
            json.len() < 128 << 10,
            "{name}: a {} byte report",
            json.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_login_pages_busy_servers_and_non_objects_are_named_without_retries() {
    let cases: [(&str, Handler, &str); 6] = [
        (
            "302",
            Arc::new(|_, _| {
                (
                    http::StatusCode::FOUND,
                    [("location", "https://login.example/sso")],
                    "",
                )
                    .into_response()
            }),
            "answered HTTP 302 Found with a redirect to \"https://login.example/sso\": a proxy or a login page is in the way",
        ),
        (
            "html",
            Arc::new(|_, _| {
                (
                    [("content-type", "text/html")],
                    "<!DOCTYPE html><html><head><title>Corporate Sign In</title></head></html>",
                )
                    .into_response()
            }),
            "answered HTTP 200 OK with an HTML page (title \"Corporate Sign In\")",
        ),
        (
            "429",
            Arc::new(|_, _| {
                (
                    http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "7"), ("content-type", "application/json")],
                    status_body(429, "too many requests, slow down"),
                )
                    .into_response()
            }),
            "answered HTTP 429 Too Many Requests (Retry-After: 7): too many requests, slow down",
        ),
        (
            "503",
            Arc::new(|_, _| {
                (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "upstream connect error",
                )
                    .into_response()
            }),
            "answered HTTP 503 Service Unavailable: upstream connect error",
        ),
        (
            "200 not an object",
            Arc::new(|_, _| {
                ([("content-type", "application/json")], "{\"ok\":true}").into_response()
            }),
            "but the answer is not a Kubernetes object (no \"kind\"): {\"ok\":true}",
        ),
        (
            "502 text",
            Arc::new(|_, _| (http::StatusCode::BAD_GATEWAY, "bad gateway").into_response()),
            "HTTP 502 Bad Gateway without a Kubernetes Status (a proxy in front of the API server?): bad gateway",
        ),
    ];
    for (name, h, want) in cases {
        let (server, hits) = hostile(h);
        let lab = Lab::start(None).await.unwrap();
        let (report, _) = trace_remote_at(
            &lab,
            (&server.url, &server.ca_pem),
            PLANTED,
            TraceOptions::default(),
        )
        .await;
        lab.shutdown();
        let gw = diagnosis(&report, StepId::GatewayPod);
        assert!(gw.contains(want), "{name}: {gw}");
        // One request per question meshtrace asks, no retry storm.
        let n = hits.load(Ordering::SeqCst);
        assert!(n <= 12, "{name}: the server got {n} requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_kubernetes_answer_from_the_remote_secrets_server_fails_where_it_was_got() {
    // 200 `{}` to SelfSubjectReview: before, remote-identity passed with a
    // null user and remote-rbac blamed istiod for an error that never was.
    let (server, _) = hostile(Arc::new(|_, path| {
        let body = if path == "/version" {
            "{\"major\":\"1\",\"minor\":\"30\"}"
        } else {
            "{}"
        };
        ([("content-type", "application/json")], body).into_response()
    }));
    let lab = Lab::start(None).await.unwrap();
    repoint_remote_secret(&lab, &server.url, &server.ca_pem);
    let (report, _) = trace(&lab, TraceOptions::default()).await;
    lab.shutdown();
    let id = report.step(StepId::RemoteIdentity).unwrap();
    assert_eq!(id.status, Status::Fail, "{:?}", id.diagnosis);
    assert!(diagnosis(&report, StepId::RemoteIdentity).contains("not a Kubernetes object"));
    assert_eq!(
        report.step(StepId::RemoteRbac).unwrap().blocked_by,
        vec![StepId::RemoteIdentity]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_answered_without_status_fails_at_the_review() {
    // Objects of the right kind with no answer in them: each review step
    // says so itself instead of passing with a null user.
    let (server, _) = hostile(Arc::new(|_, path| {
        let kind = if path.contains("selfsubjectreviews") {
            "SelfSubjectReview"
        } else {
            "Status"
        };
        (
            [("content-type", "application/json")],
            format!("{{\"kind\":\"{kind}\",\"apiVersion\":\"authentication.k8s.io/v1\"}}"),
        )
            .into_response()
    }));
    let lab = Lab::start(None).await.unwrap();
    repoint_remote_secret(&lab, &server.url, &server.ca_pem);
    let (report, _) = trace(&lab, TraceOptions::default()).await;
    lab.shutdown();
    let d = diagnosis(&report, StepId::RemoteIdentity);
    assert_eq!(
        report.step(StepId::RemoteIdentity).unwrap().status,
        Status::Fail,
        "{d}"
    );
    assert!(d.contains("without status.userInfo"), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_remote_secret_is_refused_within_the_timeout() {
    let lab = Lab::start(None).await.unwrap();
    {
        use k8s_openapi::api::core::v1::Secret;
        let deep = format!("{}1{}", "{\"a\":".repeat(150_000), "}".repeat(150_000));
        let mut p = lab.primary_state.write().unwrap();
        p.store
            .modify::<Secret>("istio-system", "istio-remote-secret-remote", |s| {
                s.data
                    .as_mut()
                    .unwrap()
                    .insert("remote".into(), k8s_openapi::ByteString(deep.into_bytes()));
            });
    }
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let (report, _) = trace(
        &lab,
        TraceOptions {
            timeout,
            ..Default::default()
        },
    )
    .await;
    let took = started.elapsed();
    lab.shutdown();
    let kc = diagnosis(&report, StepId::RemoteKubeconfig);
    assert!(kc.contains("nests deeper than 64 levels"), "{kc}");
    assert!(took < timeout, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_remote_api_costs_one_timeout_and_blocks_what_needs_it() {
    // Accepts TCP, never says a word: before, gateway-pod and then
    // remote-secret each waited out a timeout, and remote-secret blamed a
    // gateway "that sets none".
    let (addr, holder) = crate::support::silent_peer().await;
    let lab = Lab::start(None).await.unwrap();
    let url = format!("https://{addr}");
    let ca = Ca::root("nobody", "nobody", 1).cert_pem;
    let timeout = Duration::from_secs(1);
    let opts = TraceOptions {
        timeout,
        ..Default::default()
    };
    let started = Instant::now();
    let (report, _) = trace_remote_at(&lab, (&url, &ca), PLANTED, opts).await;
    let took = started.elapsed();
    lab.shutdown();
    holder.abort();
    let timings: Vec<String> = report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {:?} at {} for {}",
                s.id, s.status, s.started_ms, s.duration_ms
            )
        })
        .collect();
    assert!(took < timeout * 2, "took {took:?}: {timings:#?}");
    let rs = report.step(StepId::RemoteSecret).unwrap();
    assert_eq!(
        rs.blocked_by,
        vec![StepId::GatewayPod],
        "{:?}",
        rs.diagnosis
    );
    assert!(!diagnosis(&report, StepId::RemoteSecret).contains("sets none"));
    assert!(diagnosis(&report, StepId::GatewayPod).contains("did not answer within 1s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_thousands_of_certificates_gives_a_bounded_report() {
    let lab = Lab::start_with(None, |q| q.pad_chain = 6_500)
        .await
        .unwrap();
    let (report, _) = trace(&lab, TraceOptions::default()).await;
    lab.shutdown();
    let failed: Vec<_> = report
        .steps
        .iter()
        .filter(|s| s.status == Status::Fail)
        .map(|s| s.id)
        .collect();
    assert!(
        failed == vec![StepId::Csr] || failed == vec![StepId::IssuedChain],
        "{failed:?}"
    );
    let json = render::json::render(&report);
    assert!(json.len() < 64 << 10, "a {} byte report", json.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_with_escape_sequences_replays_clean() {
    let (report, events) = trace_lab(None, TraceOptions::default()).await;
    assert_eq!(report.count(Status::Fail), 0);
    let mut lines = String::new();
    for mut e in events {
        if let TraceEvent::StepFinished { result } = &mut e {
            result.status = Status::Fail;
            result.diagnosis = Some(format!(
                "\u{1b}]0;owned\u{7}\u{1b}[2Jsee Authorization: Bearer {PLANTED}\u{1b}]52;c;ZXZpbA==\u{7}"
            ));
        }
        lines.push_str(&serde_json::to_string(&e).unwrap());
        lines.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.jsonl");
    std::fs::write(&file, lines).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrace"))
        .args(["replay", file.to_str().unwrap(), "-o", "text", "-v"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("see Authorization: Bearer [redacted"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "an escape reached the terminal");
    assert!(!text.contains(PLANTED.rsplit('.').next().unwrap()));
}

/// In a real terminal (tmux): each of SIGTERM, SIGINT, SIGHUP and SIGQUIT
/// ends the TUI through the restore path (stty sane again, cursor shown,
/// main screen) and meshtrace exits 128 + the signal.
#[test]
fn every_signal_leaves_the_terminal_sane_in_tmux() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        // CI installs tmux and sets this, so there the test cannot skip.
        assert!(
            std::env::var_os("MESHTRACE_REQUIRE_TMUX").is_none(),
            "tmux is needed for this test (apt-get install tmux)"
        );
        eprintln!("no tmux: the terminal test runs on a bare pseudo-terminal only");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_meshtrace");
    let dir = tempfile::tempdir().unwrap();
    for (sig, n) in [("TERM", 15), ("INT", 2), ("HUP", 1), ("QUIT", 3)] {
        // A server of its own per signal: a client that reaches the last
        // one's server as it shuts down fails.
        let socket = dir.path().join(format!("{sig}.sock"));
        let tmux = |args: &[&str]| {
            std::process::Command::new("tmux")
                .arg("-S")
                .arg(&socket)
                .args(args)
                .output()
                .unwrap()
        };
        let done = dir.path().join(format!("{sig}.done"));
        let pidfile = dir.path().join(format!("{sig}.pid"));
        let script = format!(
            "echo $$ > {pid}; exec {bin} lab --step",
            pid = pidfile.display()
        );
        // The pane's shell runs meshtrace, then reports its exit code and the
        // terminal's modes.
        let shell = format!(
            "sh -c '{script}'; echo \"exit=$?\" > {d}; stty -a >> {d}; sleep 30",
            d = done.display()
        );
        let out = tmux(&["new-session", "-d", "-x", "120", "-y", "40", &shell]);
        assert!(out.status.success(), "{out:?}");
        let started = Instant::now();
        // Wait for the UI to be drawn (the alternate screen shows the header).
        loop {
            let pane = tmux(&["capture-pane", "-p"]);
            if String::from_utf8_lossy(&pane.stdout).contains("teaching") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the TUI never drew"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        std::process::Command::new("kill")
            .args([&format!("-{sig}"), pid.trim()])
            .status()
            .unwrap();
        while !done.exists() || !std::fs::read_to_string(&done).unwrap().contains("icanon") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "meshtrace did not end on SIG{sig}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = std::fs::read_to_string(&done).unwrap();
        tmux(&["kill-server"]);
        assert!(
            report.contains(&format!("exit={}", 128 + n)),
            "SIG{sig}: {report}"
        );
        assert!(
            report.contains(" icanon") && report.contains(" echo "),
            "SIG{sig}: terminal left raw: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_refusal_is_said_in_words_not_rust_debug_names() {
    let (server, _) = hostile(Arc::new(|_, _| "never reached".into_response()));
    let lab = Lab::start(None).await.unwrap();
    let other_ca = Ca::root("someone else", "else", 1).cert_pem;
    let (report, _) = trace_remote_at(
        &lab,
        (&server.url, &other_ca),
        PLANTED,
        TraceOptions::default(),
    )
    .await;
    lab.shutdown();
    let gw = diagnosis(&report, StepId::GatewayPod);
    assert!(
        gw.contains("TLS: certificate signed by unknown authority"),
        "{gw}"
    );
    for debug_name in ["InvalidCertificate(", "Other(", "UnknownIssuer"] {
        assert!(!gw.contains(debug_name), "{gw}");
    }
}

/// The same on a bare pseudo-terminal (no tmux needed): meshtrace's TUI on
/// the pty's slave; after each signal the slave's modes are cooked again.
#[test]
// libc: open a pseudo-terminal, signal the child, read its termios.
#[allow(unsafe_code)]
fn every_signal_leaves_a_pseudo_terminal_sane() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    for (sig, n) in [
        (libc::SIGTERM, 15),
        (libc::SIGINT, 2),
        (libc::SIGHUP, 1),
        (libc::SIGQUIT, 3),
    ] {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds it opened into the given ints.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both fds were just opened by openpty and are owned here only.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrace"))
            .args(["lab", "--step"])
            .env("TERM", "xterm-256color")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap())
            .spawn()
            .unwrap();
        // Read the screen on a thread, so the child never blocks on a full pty.
        let screen = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = screen.clone();
        let mut reader = std::fs::File::from(master);
        let mut answer = reader.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut buf = [0u8; 4096];
            while let Ok(k) = reader.read(&mut buf) {
                if k == 0 {
                    break;
                }
                let got = String::from_utf8_lossy(&buf[..k]).to_string();
                // Answer a cursor position request as a terminal does.
                if got.contains("\u{1b}[6n") {
                    let _ = answer.write_all(b"\x1b[1;1R");
                }
                sink.lock().unwrap().push_str(&got);
            }
        });
        let started = Instant::now();
        while !screen.lock().unwrap().contains("teaching") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the TUI never drew: {:?}",
                crate::support::tail(&screen.lock().unwrap(), 600)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "meshtrace did not end on signal {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(128 + n), "signal {n}");
        // SAFETY: tcgetattr fills a termios for an open tty fd.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) }, 0);
        assert!(
            t.c_lflag & libc::ICANON != 0,
            "signal {n}: left raw (no ICANON)"
        );
        assert!(t.c_lflag & libc::ECHO != 0, "signal {n}: left without echo");
        std::thread::sleep(Duration::from_millis(100));
        let out = screen.lock().unwrap().clone();
        assert!(
            out.contains("\u{1b}[?1049l"),
            "signal {n}: still on the alternate screen"
        );
        assert!(
            out.contains("\u{1b}[?25h"),
            "signal {n}: cursor left hidden"
        );
    }
}

/// A terminal that goes away without a signal (the pty's master closed,
/// and the TUI is not in that terminal's session, so no SIGHUP comes):
/// meshtrace notices the hang-up and exits instead of spinning for ever
/// (crossterm's default reader loops on EIO inside its poll).
#[test]
// libc: open a pseudo-terminal and read the child's CPU time.
#[allow(unsafe_code)]
fn a_terminal_that_goes_away_ends_the_tui() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds it opened into the given ints.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty");
    // The child must not inherit the master (openpty does not set
    // close-on-exec), or closing ours would not hang the terminal up.
    // SAFETY: fcntl on an fd openpty just opened.
    assert_eq!(
        unsafe { libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC) },
        0
    );
    // SAFETY: both fds were just opened by openpty and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshtrace"))
        .args(["lab", "--step"])
        .env("TERM", "xterm-256color")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    drop(slave);
    // Read until the TUI drew, then close the master: the terminal is gone.
    let reader = std::thread::spawn(move || {
        use std::io::Write;
        let mut m = std::fs::File::from(master);
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let started = Instant::now();
        while !seen.contains("teaching") && started.elapsed() < Duration::from_secs(20) {
            match m.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    let got = String::from_utf8_lossy(&buf[..k]).to_string();
                    if got.contains("\u{1b}[6n") {
                        let _ = m.write_all(b"\x1b[1;1R");
                    }
                    seen.push_str(&got);
                }
            }
        }
        seen.contains("teaching")
    });
    assert!(reader.join().unwrap(), "the TUI never drew");
    let hung_up = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if hung_up.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meshtrace was still running 10 s after its terminal went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // As SIGHUP would end it (128 + 1), not a panic (101) on the dead stderr.
    assert_eq!(status.code(), Some(129), "{status:?}");
}
