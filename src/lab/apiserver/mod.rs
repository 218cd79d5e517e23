//! A simulated Kubernetes API server: HTTPS + JSON shaped like kube-apiserver's,
//! so the real kube-rs client and the real `kubectl` talk to it unchanged.
//!
//! It serves objects generically from a [`Store`], authenticates bearer tokens
//! (a static admin token, or service-account JWTs checked against the store as
//! kube-apiserver's service-account authenticator does), authorizes with RBAC
//! read from the store, and implements the auth endpoints the Istio flow uses:
//! TokenRequest, TokenReview, SelfSubjectReview and (Self)SubjectAccessReview.

mod authn;
pub mod controllers;
mod objects;
mod protobuf;
pub mod proxy;
mod rbac;
mod resources;
mod reviews;
#[cfg(test)]
mod tests;

pub use authn::UserInfo;

use crate::lab::pki::Ca;
use crate::lab::store::Store;
use crate::lab::tokens::SigningKeys;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use resources::ResourceDef;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One simulated cluster: its identity, token keys and objects.
pub struct ClusterSim {
    /// e.g. "lab-remote"
    pub name: String,
    pub keys: Arc<SigningKeys>,
    /// Default audiences of this API server (= [issuer]).
    pub api_audiences: Vec<String>,
    /// Static bearer token of a system:masters admin.
    pub admin_token: String,
    pub store: Store,
    /// Pod-proxy backends: `namespace/pod:port` -> the listener that plays
    /// that pod's port (the lab runs no pods of its own).
    pub pod_proxies: BTreeMap<String, SocketAddr>,
    /// The CA of this API server's serving certificate: the `ca.crt` the
    /// token controller writes into service-account-token Secrets.
    pub ca_pem: String,
    /// Told of every pod a Deployment gets (the primary's restarts the
    /// simulated istiod when its Deployment rolls out).
    pub on_rollout: Option<controllers::RolloutHook>,
}

impl std::fmt::Debug for ClusterSim {
    // Hand-written so the admin token never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSim")
            .field("name", &self.name)
            .field("issuer", &self.keys.issuer)
            .field("api_audiences", &self.api_audiences)
            .finish_non_exhaustive()
    }
}

impl ClusterSim {
    /// A cluster with an empty store whose API audiences are `[keys.issuer]`.
    pub fn new(name: &str, keys: Arc<SigningKeys>, admin_token: &str) -> ClusterSim {
        ClusterSim {
            name: name.to_string(),
            api_audiences: vec![keys.issuer.clone()],
            keys,
            admin_token: admin_token.to_string(),
            store: Store::default(),
            pod_proxies: BTreeMap::new(),
            ca_pem: String::new(),
            on_rollout: None,
        }
    }

    /// Authenticate `token` for `audiences` (empty = this server's audiences)
    /// exactly as a TokenReview would. Err is the TokenReview `status.error`.
    pub fn authenticate_token(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<UserInfo, String> {
        authn::authenticate_token(self, token, audiences, now).map(|(u, _)| u)
    }
}

pub type SharedCluster = Arc<RwLock<ClusterSim>>;

/// A listening socket with its serving certificate, not yet serving.
pub struct BoundApiServer {
    pub addr: SocketAddr,
    /// https://127.0.0.1:PORT
    pub url: String,
    /// The CA a client must trust (kubeconfig `certificate-authority-data`).
    pub ca_pem: String,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for BoundApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A running API server. Dropping it does not stop it; call [`ApiServer::shutdown`].
pub struct ApiServer {
    pub addr: SocketAddr,
    pub url: String,
    pub ca_pem: String,
    stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl BoundApiServer {
    /// Bind 127.0.0.1:0 and create a serving cert (SAN IP 127.0.0.1, DNS
    /// localhost, DNS kubernetes.default.svc) from `ca`.
    pub fn bind(ca: &Ca) -> std::io::Result<BoundApiServer> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let cert = ca.server_cert(
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            365,
        );
        // Serve leaf + intermediates; clients trust the root, as with a real
        // cluster whose kubeconfig carries the root CA.
        let mut chain_pem = cert.cert_pem.clone();
        let root = ca
            .chain_pem
            .last()
            .cloned()
            .unwrap_or_else(|| ca.cert_pem.clone());
        for c in &ca.chain_pem[..ca.chain_pem.len().saturating_sub(1)] {
            chain_pem.push_str(c);
        }
        let tls = server_tls(&chain_pem, &cert.key_pem)?;
        Ok(BoundApiServer {
            addr,
            url: format!("https://{addr}"),
            ca_pem: root,
            listener,
            tls,
        })
    }

    /// Start serving `cluster` (spawns on the current tokio runtime).
    pub fn serve(self, cluster: SharedCluster) -> ApiServer {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let state = AppState {
            cluster,
            stop: stop_rx,
            addr: self.addr,
        };
        let app = axum::Router::new().fallback(dispatch).with_state(state);
        self.serve_router(app, stop)
    }

    /// Serve any router on this listener and TLS identity (the hostile-peer
    /// tests serve misbehaving "API servers" this way).
    pub fn serve_app(self, app: axum::Router) -> ApiServer {
        let (stop, _) = tokio::sync::watch::channel(false);
        self.serve_router(app, stop)
    }

    /// Each connection on a task of its own, as kube-apiserver's Go server
    /// does, so that one can be closed after an unauthenticated request
    /// ([`CloseAfter`]).
    fn serve_router(self, app: axum::Router, stop: tokio::sync::watch::Sender<bool>) -> ApiServer {
        let url = self.url.clone();
        match tokio::net::TcpListener::from_std(self.listener) {
            Ok(listener) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
                let stopped = stop.subscribe();
                tokio::spawn(accept_loop(listener, acceptor, app, stopped, url));
            }
            Err(e) => {
                tracing::error!(url = %self.url, error = %e, "lab API server could not start")
            }
        }
        ApiServer {
            addr: self.addr,
            url: self.url,
            ca_pem: self.ca_pem,
            stop,
        }
    }
}

/// Set on each request: closes its connection (HTTP/2 GOAWAY) once the
/// requests in flight on it are answered.
#[derive(Clone)]
struct CloseAfter(Arc<tokio::sync::Notify>);

/// Whether a wait for shutdown is over (a dropped sender never stops it).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    url: String,
) {
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(%url, error = %e, "lab API server: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        // Answers are small writes: without TCP_NODELAY each waits for the
        // client's delayed ACK (~40 ms), which the lab's numbers would then
        // measure instead of meshtrace.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            tcp,
            acceptor.clone(),
            app.clone(),
            stop.clone(),
        ));
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tower::Service;
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
    else {
        return;
    };
    let close = Arc::new(tokio::sync::Notify::new());
    let mark = CloseAfter(close.clone());
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(mark.clone());
        let mut app = app.clone();
        async move { app.call(req.map(Body::new)).await }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc);
    tokio::pin!(conn);
    // After a 401 the connection closes once the streams in flight end;
    // a stop gives every connection 2 s more.
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = close.notified(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stopped(&mut stop) => {
                if !closing {
                    conn.as_mut().graceful_shutdown();
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                return;
            }
        }
    }
}

impl ApiServer {
    /// Graceful shutdown; returns immediately. Open watches end at once,
    /// other connections get a short grace period.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

pub(crate) fn server_tls(
    chain_pem: &str,
    key_pem: &str,
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    // An explicit provider, so serving does not depend on which process-wide
    // default someone installed.
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad(&e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Clone)]
struct AppState {
    cluster: SharedCluster,
    stop: tokio::sync::watch::Receiver<bool>,
    addr: SocketAddr,
}

/// A parsed request, handed to the synchronous handlers under the lock.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub server_addr: SocketAddr,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }
    pub fn accept(&self) -> &str {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn dry_run(&self) -> bool {
        self.query.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
    /// The body as JSON (or YAML when the content type says so).
    pub fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty".into()));
        }
        let ct = self.content_type();
        if ct.contains("protobuf") {
            return protobuf::decode(&self.body)
                .map_err(|e| ApiError::new(415, "UnsupportedMediaType", e));
        }
        if ct.contains("yaml") {
            serde_saphyr::from_slice::<Value>(&self.body).map_err(|e| {
                ApiError::bad_request(format!("error decoding YAML request body: {e}"))
            })
        } else {
            serde_json::from_slice::<Value>(&self.body).map_err(|e| {
                ApiError::bad_request(format!("error decoding JSON request body: {e}"))
            })
        }
    }
}

/// What a handler produces.
pub(crate) enum Reply {
    Json {
        code: StatusCode,
        body: Value,
        content_type: Option<String>,
    },
    Text(&'static str),
    /// A watch: send `initial` events, then keep the stream open and silent
    /// (the lab has no event log) until `timeout` or shutdown.
    Watch {
        timeout: Option<Duration>,
        initial: Vec<Value>,
    },
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply::Json {
            code: StatusCode::OK,
            body,
            content_type: None,
        }
    }
    pub fn created(body: Value) -> Reply {
        Reply::Json {
            code: StatusCode::CREATED,
            body,
            content_type: None,
        }
    }
}

/// A failure, rendered as a meta/v1 Status like kube-apiserver's.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// "secrets" or "clusterroles.rbac.authorization.k8s.io", as GroupResource.String().
pub(crate) fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = serde_json::Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    d.insert("kind".into(), json!(kind));
    Value::Object(d)
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized".into())
    }
    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn not_found(resource: &str, group: &str, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} {name:?} not found", qualified(resource, group)),
            details: Some(details(name, group, resource)),
        }
    }
    pub fn no_route() -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(
                json!({"causes":[{"reason":"UnexpectedServerResponse","message":"404 page not found"}]}),
            ),
        }
    }
    pub fn already_exists(resource: &str, group: &str, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} {name:?} already exists", qualified(resource, group)),
            details: Some(details(name, group, resource)),
        }
    }
    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                qualified(resource, group)
            ),
            details: Some(details(name, group, resource)),
        }
    }
    /// 422, as apierrors.NewInvalid: `Kind.group "name" is invalid: field: Invalid value: v: why`.
    pub fn invalid(
        kind: &str,
        group: &str,
        name: &str,
        field: &str,
        value: &str,
        why: &str,
    ) -> ApiError {
        let cause = format!("Invalid value: {value}: {why}");
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "{} {name:?} is invalid: {field}: {cause}",
                qualified(kind, group)
            ),
            details: Some(json!({
                "name": name, "group": group, "kind": kind,
                "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": field}],
            })),
        }
    }
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        )
    }
    pub fn unsupported_media_type(ct: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
            ),
        )
    }

    pub fn to_status(&self) -> Value {
        let mut s = serde_json::Map::new();
        s.insert("kind".into(), json!("Status"));
        s.insert("apiVersion".into(), json!("v1"));
        s.insert("metadata".into(), json!({}));
        s.insert("status".into(), json!("Failure"));
        s.insert("message".into(), json!(self.message));
        s.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            s.insert("details".into(), d.clone());
        }
        s.insert("code".into(), json!(self.code));
        Value::Object(s)
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Single entry point: axum routes every path here and the lab routes itself,
/// since Kubernetes paths are too regular (and too many) for a route table.
async fn dispatch(State(st): State<AppState>, req: Request) -> Response {
    // kube-apiserver closes an HTTP/2 connection after an unauthenticated
    // request (UnauthenticatedHTTP2DOSMitigation, on by default; the lab
    // has no anonymous user, so that is every 401): the lab does too, so a
    // client that sends a refused credential beside other requests meets
    // here what it meets there.
    let close = (req.version() == axum::http::Version::HTTP_2)
        .then(|| req.extensions().get::<CloseAfter>().cloned())
        .flatten();
    let resp = dispatch_request(st, req).await;
    if let Some(CloseAfter(c)) = close
        && resp.status() == StatusCode::UNAUTHORIZED
    {
        c.notify_one();
    }
    resp
}

async fn dispatch_request(st: AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 32 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let raw_query = parts.uri.query().map(str::to_string);
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
        body,
        server_addr: st.addr,
    };
    // The pod proxy forwards over the network, so it cannot answer under
    // the cluster lock: resolve under it, forward after.
    if let Some(p) = proxy::parse(&req.path) {
        let resolved = {
            let cluster = st.cluster.read().unwrap_or_else(|e| e.into_inner());
            proxy::resolve(&cluster, &req, &p)
        };
        let result = match resolved {
            Ok((Some(backend), dial)) => {
                proxy::forward(backend, &dial, &req, &p.rest, raw_query.as_deref()).await
            }
            Ok((None, dial)) => Err(proxy::unreachable(&dial)),
            Err(e) => Err(e),
        };
        return match result {
            Ok(r) => {
                tracing::debug!(method = %req.method, path = %req.path, code = r.status().as_u16(), "lab apiserver proxy");
                r
            }
            Err(e) => {
                tracing::debug!(method = %req.method, path = %req.path, code = e.code, reason = e.reason, "lab apiserver proxy");
                error_response(&e)
            }
        };
    }
    // Reads under the read lock; writes, reviews and token requests (and a
    // read route_read leaves to them) under the write lock.
    let read = if matches!(req.method, Method::GET | Method::HEAD) {
        let cluster = st.cluster.read().unwrap_or_else(|e| e.into_inner());
        route_read(&cluster, &req)
    } else {
        None
    };
    let result = match read {
        Some(r) => r,
        None => {
            let mut cluster = st.cluster.write().unwrap_or_else(|e| e.into_inner());
            route(&mut cluster, &req)
        }
    };
    // Tokens never reach the log: only method, path and outcome.
    match result {
        Ok(Reply::Json {
            code,
            body,
            content_type,
        }) => {
            tracing::debug!(method = %req.method, path = %req.path, code = code.as_u16(), "lab apiserver");
            let mut resp = (code, body.to_string()).into_response();
            let ct = content_type.unwrap_or_else(|| "application/json".into());
            if let Ok(v) = HeaderValue::from_str(&ct) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp
        }
        Ok(Reply::Text(t)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            t,
        )
            .into_response(),
        Ok(Reply::Watch { timeout, initial }) => {
            let mut stop = st.stop.clone();
            let wait = async move {
                let stopped = async {
                    // Ends when shutdown is signalled. A dropped ApiServer
                    // handle leaves the server running, so watches stay open
                    // too (ending them would make watchers reconnect in a loop).
                    while !*stop.borrow_and_update() {
                        if stop.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                match timeout {
                    Some(d) => {
                        tokio::select! { _ = tokio::time::sleep(d) => {}, _ = stopped => {} }
                    }
                    None => stopped.await,
                }
                Ok::<Bytes, std::io::Error>(Bytes::new())
            };
            let mut first = String::new();
            for e in &initial {
                first.push_str(&e.to_string());
                first.push('\n');
            }
            let head =
                futures::stream::once(
                    async move { Ok::<Bytes, std::io::Error>(Bytes::from(first)) },
                );
            let stream = futures::StreamExt::chain(head, futures::stream::once(wait));
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => {
            tracing::debug!(method = %req.method, path = %req.path, code = e.code, reason = e.reason, "lab apiserver");
            error_response(&e)
        }
    }
}

fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        e.to_status().to_string(),
    )
        .into_response()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A resource request, parsed from the path.
pub(crate) struct Target {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// A request past authentication and authorization: either answered
/// already (health, discovery) or a verb on a resource.
enum Admitted {
    Done(Reply),
    Resource {
        target: Target,
        verb: &'static str,
        user: UserInfo,
        now: i64,
    },
}

/// get, list or watch of a stored resource, answered from a shared borrow;
/// None when the request needs the write path (a subresource that writes).
fn route_read(cl: &ClusterSim, req: &Req) -> Option<ApiResult<Reply>> {
    let (target, verb, now) = match admit(cl, req) {
        Ok(Admitted::Done(r)) => return Some(Ok(r)),
        Ok(Admitted::Resource {
            target, verb, now, ..
        }) => (target, verb, now),
        Err(e) => return Some(Err(e)),
    };
    match (&target.def.storage, target.sub.as_deref(), verb) {
        (resources::Storage::Stored(_), None | Some("status"), "get" | "list" | "watch") => {
            Some(objects::read(&cl.store, &target, verb, req, now))
        }
        _ => None,
    }
}

fn route(cl: &mut ClusterSim, req: &Req) -> ApiResult<Reply> {
    let (target, verb, user, now) = match admit(cl, req)? {
        Admitted::Done(r) => return Ok(r),
        Admitted::Resource {
            target,
            verb,
            user,
            now,
        } => (target, verb, user, now),
    };
    route_resource(cl, req, target, verb, user, now)
}

fn admit(cl: &ClusterSim, req: &Req) -> ApiResult<Admitted> {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Health and version are public, as kube-apiserver's
    // system:public-info-viewer makes them.
    match segs.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => return Ok(Admitted::Done(Reply::Text("ok"))),
        ["version"] => return Ok(Admitted::Done(Reply::ok(resources::version_info()))),
        // Service-account issuer discovery, public as with
        // system:service-account-issuer-discovery bound to everyone.
        [".well-known", "openid-configuration"] => {
            return Ok(Admitted::Done(Reply::ok(serde_json::json!({
                "issuer": cl.keys.issuer,
                "jwks_uri": format!("{}/openid/v1/jwks", cl.keys.issuer),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            }))));
        }
        _ => {}
    }
    let user = authn::authenticate_request(cl, &req.headers)?;
    let user = authn::impersonate(cl, user, &req.headers)?;
    let now = crate::lab::tokens::now_unix();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] | ["apis"] | ["apis", _] | ["api", _] | ["apis", _, _] => {
            non_resource_allowed(cl, &user, req, path)?;
            return resources::discovery(&segs, req).map(Admitted::Done);
        }
        ["openapi", ..] => {
            non_resource_allowed(cl, &user, req, path)?;
            return resources::openapi_v3(&segs).map(Admitted::Done);
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            non_resource_allowed(cl, &user, req, path)?;
            return Err(ApiError::no_route());
        }
    };
    let target = parse_target(group, version, rest)?;
    let verb = verb_for(req, &target)?;
    let attrs = rbac::Attrs {
        verb: verb.to_string(),
        group: target.def.group.to_string(),
        resource: target.def.plural.to_string(),
        subresource: target.sub.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
        namespace: target.namespace.clone().unwrap_or_default(),
        path: None,
    };
    let decision = rbac::authorize(&cl.store, &user, &attrs);
    if !decision.allowed {
        return Err(rbac::forbidden(&user, &attrs));
    }
    Ok(Admitted::Resource {
        target,
        verb,
        user,
        now,
    })
}

fn route_resource(
    cl: &mut ClusterSim,
    req: &Req,
    target: Target,
    verb: &'static str,
    user: UserInfo,
    now: i64,
) -> ApiResult<Reply> {
    match (&target.def.storage, target.sub.as_deref()) {
        (resources::Storage::Review, None) if target.name.is_none() => {
            reviews::handle(cl, &user, &target, req, now)
        }
        (resources::Storage::Stored(_), Some("token"))
            if target.def.plural == "serviceaccounts" =>
        {
            reviews::token_request(cl, &target, req, now)
        }
        // status is stored with the object in the lab; scale is a view of
        // spec.replicas.
        (resources::Storage::Stored(_), None | Some("status" | "scale")) => {
            let reply = if target.sub.as_deref() == Some("scale") {
                objects::scale(&mut cl.store, &target, verb, req)?
            } else {
                objects::handle(&mut cl.store, &target, verb, req, now)?
            };
            let write = matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            );
            if write && !req.dry_run() {
                let namespaces = match &target.namespace {
                    Some(ns) => vec![ns.clone()],
                    None if !target.def.namespaced => vec![String::new()],
                    // A write across namespaces: every namespace.
                    None => cl
                        .store
                        .list::<k8s_openapi::api::core::v1::Namespace>()
                        .into_iter()
                        .filter_map(|n| n.metadata.name)
                        .collect(),
                };
                for ns in namespaces {
                    controllers::after_write(cl, target.def.group, target.def.plural, &ns);
                }
            }
            Ok(reply)
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Discovery, version and health are granted to every authenticated user by
/// kube-apiserver's bootstrap ClusterRoles (system:discovery,
/// system:public-info-viewer); the lab builds them in instead of storing them.
fn non_resource_allowed(cl: &ClusterSim, user: &UserInfo, req: &Req, path: &str) -> ApiResult<()> {
    let verb = match req.method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let attrs = rbac::Attrs {
        verb: verb.into(),
        path: Some(if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        }),
        ..Default::default()
    };
    if rbac::authorize(&cl.store, user, &attrs).allowed {
        Ok(())
    } else {
        Err(rbac::forbidden(user, &attrs))
    }
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => (
            Some(ns.to_string()),
            *plural,
            tail.first().map(|s| s.to_string()),
            tail.get(1).map(|s| s.to_string()),
        ),
        [plural, tail @ ..] if tail.len() <= 2 => (
            None,
            *plural,
            tail.first().map(|s| s.to_string()),
            tail.get(1).map(|s| s.to_string()),
        ),
        _ => return Err(ApiError::no_route()),
    };
    let def = resources::find(group, version, plural).ok_or_else(ApiError::no_route)?;
    // A namespaced resource by name needs its namespace in the path; a
    // cluster-scoped one never has one.
    if (def.namespaced && namespace.is_none() && name.is_some())
        || (!def.namespaced && namespace.is_some())
    {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        def,
        namespace,
        name,
        sub,
    })
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

fn verb_for(req: &Req, t: &Target) -> ApiResult<&'static str> {
    let named = t.name.is_some();
    let verb = match req.method {
        Method::GET | Method::HEAD if is_true(req.param("watch")) => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST if named && t.sub.is_none() => return Err(ApiError::method_not_allowed()),
        Method::POST => "create",
        Method::PUT if named => "update",
        Method::PATCH if named => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    let allowed = match t.sub.as_deref() {
        None => t.def.verbs.contains(&verb),
        Some(sub) => match t.def.subresources.iter().find(|s| s.name == sub) {
            Some(s) => s.verbs.contains(&verb),
            None => return Err(ApiError::no_route()),
        },
    };
    if !allowed {
        return Err(ApiError::method_not_allowed());
    }
    // Creating through a namespaced collection needs a namespace.
    if verb == "create" && t.def.namespaced && t.namespace.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    Ok(verb)
}
