//! The one way meshtrace builds a Kubernetes client, for the operator's
//! contexts and for istiod's view through a remote secret alike: kube's
//! client with a guard in front of every response.
//!
//! The guard treats the peer as hostile (docs/security.md#limits):
//! - no hidden retries (kube's default retry turns a failing server into
//!   dozens of requests and a timeout);
//! - every request and its whole body within the step timeout, and a body of
//!   at most [`MAX_BODY`] bytes;
//! - an answer that is not from an API server says what it is: a redirect
//!   or an HTML page (a proxy or a login page in the way), 429/503/504 with
//!   `Retry-After`, a 200 that is not a Kubernetes object;
//! - a server that timed out is not asked again for a while, so a dead peer
//!   costs one timeout, not one per step that talks to it;
//! - a credential the server refused (401) is not sent again at once: the
//!   requests that were waiting get the same refusal, because a
//!   kube-apiserver closes an HTTP/2 connection after every unauthenticated
//!   request (`UnauthenticatedHTTP2DOSMitigation`), and on a connection
//!   shared with the operator's own client each such close would fail the
//!   requests in flight beside it;
//! - a request the server closed the connection on without processing it
//!   (an HTTP/2 GOAWAY with NO_ERROR: RFC 9113 section 6.8 says so) is sent
//!   once more, on a new connection.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use kube::client::{Body, ClientBuilder};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{BoxError, Layer, Service};

// The error words moved to their own module, shared with istiod's view
// (probe::clusterz) and the engine; kept reachable here for existing callers.
pub use super::kube_error::{describe, exec_words};
pub(crate) use super::kube_stack::unwrap_kube;

/// The largest answer read from an API server. A Secret is at most 1 MiB in
/// Kubernetes; a list of them in one namespace fits many times over.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why an answer was not used: each says what the peer did, in words.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{server} did not answer within {}", humantime::format_duration(*.after))]
    Timeout { server: String, after: Duration },
    #[error(
        "{server} did not answer within {} a moment ago, so it was not asked again",
        humantime::format_duration(*.after)
    )]
    Down { server: String, after: Duration },
    #[error("the answer from {server} is larger than {} MiB (HTTP {status}); refused", MAX_BODY / (1024 * 1024))]
    TooLarge { server: String, status: u16 },
    #[error(
        "{server} answered HTTP {status} with a redirect to {location:?}: a proxy or a login page is in the way, not a Kubernetes API server"
    )]
    Redirect {
        server: String,
        status: String,
        location: String,
    },
    #[error(
        "{server} answered HTTP {status} with an HTML page ({page}): a proxy or a login page is in the way, not a Kubernetes API server"
    )]
    Html {
        server: String,
        status: String,
        page: String,
    },
    #[error("{server} answered HTTP {status}{retry}: {message}")]
    Unavailable {
        server: String,
        status: String,
        retry: String,
        message: String,
    },
    #[error(
        "{server} answered HTTP {status} ({content_type}), but the answer is not a Kubernetes object (no \"kind\"): {start}"
    )]
    NotKubernetes {
        server: String,
        status: String,
        content_type: String,
        start: String,
    },
}

/// The limits a client enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Each request with its whole body.
    pub timeout: Duration,
    pub max_body: usize,
}

impl Limits {
    pub fn new(timeout: Duration) -> Self {
        Limits {
            timeout,
            max_body: MAX_BODY,
        }
    }
}

/// A kube client for `cfg` behind the guard.
pub fn build(mut cfg: kube::Config, limits: Limits) -> Result<kube::Client, kube::Error> {
    cfg.default_retry = false;
    // kube's own timeouts are a backstop, a little later than the guard's,
    // so that a timeout is the guard's and marks the server down.
    let backstop = limits.timeout + Duration::from_millis(250);
    cfg.connect_timeout = Some(backstop);
    cfg.read_timeout = Some(backstop);
    cfg.write_timeout = Some(backstop);
    let server = cfg
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let guard = GuardLayer {
        server,
        limits,
        down: Arc::new(Mutex::new(None)),
        first: Arc::new(FirstAnswer::default()),
        refused: Arc::new(Mutex::new(None)),
    };
    let ns = cfg.default_namespace.clone();
    let guarded = if cfg.proxy_url.is_some() {
        // kube's own stack says which proxy scheme it cannot use.
        ClientBuilder::try_from(cfg)?.with_layer(&guard).build()
    } else {
        super::kube_stack::nodelay_builder(&cfg)?
            .with_layer(&guard)
            .build()
    };
    // Above the guard, so the second try has its own time and goes through
    // the guard's refusal memory: a refused credential is not sent twice.
    Ok(super::kube_stack::resending(guarded, ns, 1))
}

#[derive(Clone)]
struct GuardLayer {
    server: String,
    limits: Limits,
    /// When a request to this server last timed out.
    down: Arc<Mutex<Option<Instant>>>,
    first: Arc<FirstAnswer>,
    /// The 401 this client's credential last got, and when.
    refused: Arc<Mutex<Option<(Instant, Refusal)>>>,
}

/// A 401 as it came, to answer the requests that were about to send the
/// same credential again. Authentication comes before everything else a
/// kube-apiserver does with a request and reads only the credential, so
/// the answer to those requests is this one; sending them would only make
/// the server close a connection each time. Kept for one timeout: long
/// enough for the requests of one trace that were sent together, short
/// enough that a `--watch` run with a renewed credential asks afresh.
#[derive(Clone)]
struct Refusal {
    headers: http::HeaderMap,
    body: Bytes,
}

impl GuardLayer {
    fn refusal(&self) -> Option<Response<Full<Bytes>>> {
        let r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let (at, refusal) = r.as_ref()?;
        if at.elapsed() >= self.limits.timeout {
            return None;
        }
        let mut resp = Response::new(Full::new(refusal.body.clone()));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        *resp.headers_mut() = refusal.headers.clone();
        Some(resp)
    }
}

/// Until this client's first request is answered, the others wait for it.
/// Sent together they would each dial a connection of their own (whether the
/// server multiplexes over HTTP/2 is known only after the first TLS
/// handshake), and each handshake costs the API server CPU: with the
/// preflight beside the trace, 6 connections to the lab's primary instead of 1.
struct FirstAnswer {
    taken: std::sync::atomic::AtomicBool,
    answered: tokio::sync::watch::Sender<bool>,
}

impl Default for FirstAnswer {
    fn default() -> Self {
        FirstAnswer {
            taken: Default::default(),
            answered: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl FirstAnswer {
    /// Whether this request goes first (then it holds an [`Opens`] until
    /// it is answered); else waits, at most `limit`, for the first one's answer.
    async fn wait_turn(&self, limit: Duration) -> bool {
        use std::sync::atomic::Ordering;
        if *self.answered.borrow() {
            return false;
        }
        if !self.taken.swap(true, Ordering::AcqRel) {
            return true;
        }
        let mut rx = self.answered.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|a| *a)).await;
        false
    }
}

/// Lets the others go when the first request ends, however it ends.
struct Opens<'a>(&'a FirstAnswer);

impl Drop for Opens<'_> {
    fn drop(&mut self) {
        self.0.answered.send_replace(true);
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            cfg: self.clone(),
        }
    }
}

pub struct Guard<S> {
    inner: S,
    cfg: GuardLayer,
}

impl<S, B> Service<Request<Body>> for Guard<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let cfg = self.cfg.clone();
        let after = cfg.limits.timeout;
        // A server that just timed out is not asked again for two timeouts.
        let recently_down = cfg
            .down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < after * 2);
        if recently_down {
            let server = cfg.server.clone();
            return Box::pin(async move { Err(PeerError::Down { server, after }.into()) });
        }
        let path = req.uri().path().to_string();
        let fut = self.inner.call(req);
        Box::pin(async move {
            // The wait for the first answer is within this request's time.
            let work = async {
                let first = cfg.first.wait_turn(after).await;
                // Answered, failed or timed out (dropped): the others go.
                let mut opens = first.then(|| Opens(&cfg.first));
                if let Some(refused) = cfg.refusal() {
                    // Not sent: `fut` is dropped before it is polled.
                    return Ok(refused);
                }
                let resp = fut.await.map_err(Into::into)?;
                let unauthorized = resp.status() == StatusCode::UNAUTHORIZED;
                if !unauthorized {
                    opens.take();
                }
                let answer = judge(resp, &path, &cfg).await;
                if let (true, Ok(a)) = (unauthorized, &answer) {
                    // Kept before the others waiting for this first answer go.
                    let refusal = Refusal {
                        headers: a.headers().clone(),
                        body: a.body().clone().collect().await?.to_bytes(),
                    };
                    *cfg.refused.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((Instant::now(), refusal));
                }
                drop(opens);
                answer
            };
            match tokio::time::timeout(after, work).await {
                Ok(r) => r,
                Err(_) => {
                    *cfg.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    Err(PeerError::Timeout {
                        server: cfg.server.clone(),
                        after,
                    }
                    .into())
                }
            }
        })
    }
}

/// Reads the whole answer within the body limit and refuses what no API
/// server sends.
async fn judge<B>(
    resp: Response<B>,
    path: &str,
    cfg: &GuardLayer,
) -> Result<Response<Full<Bytes>>, BoxError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let server = cfg.server.as_str();
    let status = parts.status;
    let header =
        |name: http::header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let head = Head {
        status: status.as_u16(),
        content_type: header(http::header::CONTENT_TYPE),
        location: header(http::header::LOCATION),
        retry_after: header(http::header::RETRY_AFTER),
        path,
    };
    if status.is_redirection() {
        // Not worth reading: classify refuses a redirect on its head alone.
        classify(server, &head, b"")?;
    }
    let bytes = match Limited::new(body, cfg.limits.max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(PeerError::TooLarge {
                    server: server.to_string(),
                    status: status.as_u16(),
                }
                .into());
            }
            return Err(e);
        }
    };
    classify(server, &head, &bytes)?;
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

/// What of an answer's head [`classify`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub location: Option<&'a str>,
    pub retry_after: Option<&'a str>,
    /// The request path (`/api/...`, `/version`).
    pub path: &'a str,
}

/// Whether a whole answer is one an API server would send; if not, what it
/// is instead. Pure, so it is fuzzed and table-tested.
pub fn classify(server: &str, head: &Head, body: &[u8]) -> Result<(), PeerError> {
    use crate::inspect::sanitize::quote;
    let server = server.to_string();
    let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let status_words = status_words(status);
    if status.is_redirection() {
        return Err(PeerError::Redirect {
            server,
            status: status_words,
            location: quote(head.location.unwrap_or("nowhere")),
        });
    }
    let content_type = quote(head.content_type.unwrap_or_default());
    let text = || String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).to_string();
    if content_type.to_ascii_lowercase().contains("html")
        || (content_type.is_empty() && looks_like_html(body))
    {
        return Err(PeerError::Html {
            server,
            status: status_words,
            page: html_title(&text()),
        });
    }
    if matches!(status.as_u16(), 429 | 503 | 504) {
        let retry = head
            .retry_after
            .map(|r| format!(" (Retry-After: {})", quote(r)))
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(text);
        return Err(PeerError::Unavailable {
            server,
            status: status_words,
            retry,
            message: quote(&message),
        });
    }
    // A success on a Kubernetes API path must be a Kubernetes object. Pod
    // proxy paths carry what the pod says, not the API server.
    let api_path = (head.path.starts_with("/api/") || head.path.starts_with("/apis/"))
        && !head.path.contains("/proxy");
    if status.is_success() && api_path && !is_kubernetes_object(body) {
        return Err(PeerError::NotKubernetes {
            server,
            status: status_words,
            content_type: if content_type.is_empty() {
                "no content type".into()
            } else {
                content_type
            },
            start: quote(&crate::inspect::head(&text(), 120).0),
        });
    }
    Ok(())
}

fn status_words(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

fn looks_like_html(b: &[u8]) -> bool {
    let start = String::from_utf8_lossy(&b[..b.len().min(256)]).to_ascii_lowercase();
    let start = start.trim_start();
    start.starts_with("<!doctype html") || start.starts_with("<html")
}

/// The page's `<title>`, else its first words: what a user recognises.
fn html_title(page: &str) -> String {
    let lower = page.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|s| {
        let from = s + "<title>".len();
        lower[from..]
            .find("</title>")
            .map(|e| &page[from..from + e])
    });
    match title {
        Some(t) if !t.trim().is_empty() => {
            format!(
                "title {:?}",
                crate::inspect::head(&crate::inspect::sanitize::quote(t), 80).0
            )
        }
        _ => format!(
            "starting {:?}",
            crate::inspect::head(&crate::inspect::sanitize::quote(page), 80).0
        ),
    }
}

/// Whether `b` is a JSON object with a string `kind`: what every Kubernetes
/// object, list and Status has.
fn is_kubernetes_object(b: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: Option<String>,
    }
    serde_json::from_slice::<Kind>(b).is_ok_and(|k| k.kind.is_some_and(|k| !k.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_objects_have_a_kind() {
        assert!(is_kubernetes_object(br#"{"kind":"Pod","apiVersion":"v1"}"#));
        assert!(!is_kubernetes_object(br#"{"ok":true}"#));
        assert!(!is_kubernetes_object(b"[1,2]"));
        assert!(!is_kubernetes_object(b"<html>"));
        assert!(!is_kubernetes_object(br#"{"kind":""}"#));
    }

    #[test]
    fn html_pages_are_named_by_their_title() {
        assert_eq!(
            html_title("<html><head><TITLE>Sign in \x1b[2J- Okta</TITLE>"),
            "title \"Sign in - Okta\""
        );
        assert!(html_title("<html><body>Access denied</body>").starts_with("starting"));
        assert!(looks_like_html(b"  <!DOCTYPE html><html>"));
        assert!(!looks_like_html(b"{\"kind\":\"Status\"}"));
    }

    /// A kube-apiserver's answer to an unauthenticated HTTP/2 request:
    /// 401, then GOAWAY (`UnauthenticatedHTTP2DOSMitigation`, Go's
    /// `Connection: close`). Answers a valid token after a moment, so
    /// requests of both credentials are in flight together.
    async fn apiserver_that_closes_after_401()
    -> (String, String, Arc<std::sync::atomic::AtomicUsize>) {
        use hyper::service::service_fn;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ca = crate::lab::pki::Ca::root("goaway test ca", "test", 1);
        let cert = ca.server_cert("apiserver", &["localhost"], &[], 1);
        let tls = crate::lab::apiserver::server_tls(&cert.cert_pem, &cert.key_pem).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let close = Arc::new(tokio::sync::Notify::new());
                    let notify = close.clone();
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let notify = notify.clone();
                        let count = count.clone();
                        async move {
                            let good = req
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v == "Bearer good");
                            let resp = if good {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Response::new(Full::new(Bytes::from_static(
                                    br#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"ns"}}"#,
                                )))
                            } else {
                                count.fetch_add(1, Ordering::SeqCst);
                                notify.notify_one();
                                let mut r = Response::new(Full::new(Bytes::from_static(
                                    br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
                                )));
                                *r.status_mut() = StatusCode::UNAUTHORIZED;
                                r
                            };
                            r_json(resp)
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = close.notified() => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
        });
        (url, ca.cert_pem.clone(), refused)
    }

    fn r_json(
        mut r: Response<Full<Bytes>>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }

    fn client(url: &str, ca_pem: &str, token: &str) -> kube::Client {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect();
        let mut cfg = kube::Config::new(url.parse().unwrap());
        cfg.root_cert = Some(der);
        cfg.auth_info.token = Some(token.to_string().into());
        build(cfg, Limits::new(Duration::from_secs(5))).unwrap()
    }

    /// The operator's client and a refused remote-secret credential share a
    /// connection (same server, same TLS): the refused one's requests, sent
    /// together, cost one 401 (the rest get the same refusal unsent), and
    /// the operator's requests in flight when the server closed the
    /// connection are sent again and answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_credential_is_sent_once_and_its_goaway_fails_no_other_request() {
        use k8s_openapi::api::core::v1::Namespace;
        let (url, ca, refused) = apiserver_that_closes_after_401().await;
        let operator: kube::Api<Namespace> = kube::Api::all(client(&url, &ca, "good"));
        let secret: kube::Api<Namespace> = kube::Api::all(client(&url, &ca, "expired"));
        // The operator's connection is up and shared before the secret's requests.
        operator.get("ns").await.expect("the operator's first read");
        let ours = futures::future::join_all((0..8).map(|_| operator.get("ns")));
        let theirs = futures::future::join_all((0..8).map(|_| secret.get("ns")));
        let (ours, theirs) = tokio::join!(ours, theirs);
        for a in &ours {
            assert!(a.is_ok(), "the operator's read failed: {a:?}");
        }
        for a in &theirs {
            assert!(
                matches!(a, Err(kube::Error::Api(s)) if s.code == 401),
                "the refused credential's read: {a:?}"
            );
        }
        assert_eq!(
            refused.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "401s the server sent"
        );
    }
}
