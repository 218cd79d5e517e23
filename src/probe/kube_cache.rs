//! One read, many readers: a kube client whose GETs are shared by every
//! trace of a fleet run (`meshtrace --primary CTX` without `--remote`).
//!
//! Fifty remotes ask the primary the same questions (istiod's Deployments,
//! its mesh config, the remote secrets, the CA): the first asker's request
//! goes out, the others wait for its answer and get a copy. Only GETs
//! (reads) are shared, keyed by URL and `Accept`; a write (a review, a
//! TokenRequest) always goes out. A transport error is not kept, so the
//! next asker tries again (and the guard underneath stops a dead server
//! from costing more than one timeout). The cache lives as long as the
//! client: one fleet run, never across `--watch` runs.

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use kube::client::Body;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::OnceCell;
use tower::{BoxError, Service};

/// An answer as it came: status, headers and the whole body (already
/// bounded by the guard of the client underneath).
#[derive(Clone)]
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

type Cells = Arc<Mutex<HashMap<String, Arc<OnceCell<Answer>>>>>;

/// What the cache saw: requests answered from it, and requests sent.
#[derive(Clone, Default)]
pub struct Stats {
    cells: Cells,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl Stats {
    /// (reads asked, requests sent), reads and writes together.
    pub fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.asked.load(Relaxed), self.sent.load(Relaxed))
    }
}

/// `inner`, with its reads shared; the [`Stats`] count what it saved.
pub fn shared_reads(inner: kube::Client) -> (kube::Client, Stats) {
    let stats = Stats::default();
    let ns = inner.default_namespace().to_string();
    let svc = Shared {
        inner,
        stats: stats.clone(),
    };
    (kube::Client::new(svc, ns), stats)
}

#[derive(Clone)]
struct Shared {
    inner: kube::Client,
    stats: Stats,
}

async fn fetch(inner: &kube::Client, req: Request<Body>) -> Result<Answer, BoxError> {
    let resp = inner
        .send(req)
        .await
        .map_err(crate::probe::kube_client::unwrap_kube)?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

impl Service<Request<Body>> for Shared {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use std::sync::atomic::Ordering::Relaxed;
        let this = self.clone();
        Box::pin(async move {
            this.stats.asked.fetch_add(1, Relaxed);
            if req.method() != Method::GET {
                this.stats.sent.fetch_add(1, Relaxed);
                return fetch(&this.inner, req).await.map(respond);
            }
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let key = format!("{} {accept}", req.uri());
            let cell = {
                let mut cells = this.stats.cells.lock().unwrap_or_else(|e| e.into_inner());
                cells.entry(key).or_default().clone()
            };
            // The first asker sends; the others wait for its answer. A
            // request is not Clone, so a waiter whose sender failed sends
            // its own.
            let mut req = Some(req);
            let got = cell
                .get_or_try_init(|| async {
                    this.stats.sent.fetch_add(1, Relaxed);
                    fetch(&this.inner, req.take().expect("one request")).await
                })
                .await;
            match got {
                Ok(a) => Ok(respond(a.clone())),
                Err(e) => Err(e),
            }
        })
    }
}

fn respond(a: Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(a.body));
    *r.status_mut() = a.status;
    *r.headers_mut() = a.headers;
    r
}
