//! The connection stack under every kube client meshtrace builds, and
//! under the lab's simulated istiod's: kube's own layers on a connector
//! that sets TCP_NODELAY. Shared (not one probe's internals), so the lab
//! may use it too.

use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ClientBuilder, ConfigExt};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{BoxError, Service, ServiceBuilder};

/// A kube client without the guard, on the same TCP_NODELAY stack: for the
/// lab's simulated istiod, whose client-go has no such guard either.
/// Unprocessed requests are sent again, as client-go's transport does.
pub fn build_unguarded(cfg: kube::Config) -> Result<kube::Client, kube::Error> {
    let ns = cfg.default_namespace.clone();
    let client = if cfg.proxy_url.is_some() {
        ClientBuilder::try_from(cfg)?.build()
    } else {
        nodelay_builder(&cfg)?.build()
    };
    Ok(resending(client, ns, 3))
}

type Stack = tower::util::BoxService<Request<Body>, Response<hyper::body::Incoming>, BoxError>;

/// kube's default stack leaves Nagle's algorithm on, so the first request
/// on each connection waits ~40 ms for a delayed ACK (issue 10). This is
/// the same stack as kube's (base URI, auth, extra headers), on a connector
/// that sets TCP_NODELAY.
pub fn nodelay_builder(cfg: &kube::Config) -> Result<ClientBuilder<Stack>, kube::Error> {
    let client = shared_http_client(cfg)?;
    let service = ServiceBuilder::new()
        .layer(cfg.base_uri_layer())
        .option_layer(cfg.auth_layer()?)
        .layer(cfg.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(client);
    Ok(ClientBuilder::new(
        tower::util::BoxService::new(service),
        cfg.default_namespace.clone(),
    ))
}

type HttpClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// One HTTP client (and so one connection pool) per API server and TLS
/// identity, for the whole process: the operator's context and istiod's
/// view through a remote secret reach the same server over the same TLS
/// and differ only in the Authorization header, which each kube client's
/// own auth layer adds. So one connection per server, not one per client
/// (issue 10). The path itself is still checked each run by the TLS probes
/// (remote-api-tls, istiod-tls), which always handshake afresh. A config
/// whose identity comes from an exec plugin or auth provider gets a client
/// of its own: its certificate may change from one call to the next.
fn shared_http_client(cfg: &kube::Config) -> Result<HttpClient, kube::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<[u8; 32], HttpClient>>> = OnceLock::new();
    let Some(key) = pool_key(cfg) else {
        return new_http_client(cfg);
    };
    let pools = POOLS.get_or_init(Default::default);
    if let Some(c) = pools.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let c = new_http_client(cfg)?;
    pools
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(c.clone());
    Ok(c)
}

/// What decides a connection's TLS: the server, its roots, the client's
/// certificate and key, the server name, skip-verify. A digest, so no key
/// material is kept as a map key.
fn pool_key(cfg: &kube::Config) -> Option<[u8; 32]> {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    let a = &cfg.auth_info;
    if a.exec.is_some() || a.auth_provider.is_some() {
        return None;
    }
    let mut h = sha2::Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    part(cfg.cluster_url.to_string().as_bytes());
    for c in cfg.root_cert.iter().flatten() {
        part(c);
    }
    part(format!("{:?}", cfg.root_cert_file).as_bytes());
    part(
        a.client_certificate
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    part(
        a.client_certificate_data
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    part(a.client_key.as_deref().unwrap_or_default().as_bytes());
    part(
        a.client_key_data
            .as_ref()
            .map(|k| k.expose_secret().as_bytes())
            .unwrap_or_default(),
    );
    part(
        cfg.tls_server_name
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    part(&[cfg.accept_invalid_certs as u8]);
    Some(h.finalize().into())
}

fn new_http_client(cfg: &kube::Config) -> Result<HttpClient, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    // No connect timeout here: the guard bounds the whole request, and with
    // one set, hyper-util's connector made the lab trace's CSR wait ~300 ms
    // longer (measured: csr 248 ms with it, 85 ms without).
    // kube's own connector offers only http/1.1 (ALPN): each concurrent
    // request then opens a connection of its own (11 to one API server in a
    // lab trace). The same TLS settings as kube's (its rustls config: roots,
    // client identity, insecure-skip; the kubeconfig's tls-server-name), with
    // h2 offered too.
    let tls = cfg.rustls_client_config()?;
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &cfg.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
            kube::Error::Service(
                format!("tls-server-name {name:?} is not a valid server name: {e}").into(),
            )
        })?;
        builder =
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = builder.enable_http1().enable_http2().wrap_connector(http);
    Ok(hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(https))
}

/// `client`, sending a request again (at most `tries` times) when the
/// server closed the connection without processing it (an HTTP/2 GOAWAY
/// with NO_ERROR: RFC 9113 section 6.8 says such a request may be retried,
/// whatever its method). Go's HTTP/2 transport, under client-go, does the
/// same; hyper does not.
pub fn resending(client: kube::Client, default_namespace: String, tries: u8) -> kube::Client {
    kube::Client::new(
        Resend {
            inner: client,
            tries,
        },
        default_namespace,
    )
}

#[derive(Clone)]
struct Resend {
    inner: kube::Client,
    tries: u8,
}

impl Service<Request<Body>> for Resend {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (inner, tries) = (self.inner.clone(), self.tries);
        Box::pin(async move {
            let mut req = req;
            let mut left = tries;
            loop {
                let again = (left > 0).then(|| copy_request(&req)).flatten();
                match inner.send(req).await.map_err(unwrap_kube) {
                    Err(e) if closed_gracefully(&*e) => match again {
                        Some(a) => {
                            req = a;
                            left -= 1;
                        }
                        None => return Err(e),
                    },
                    other => return other,
                }
            }
        })
    }
}

/// A copy of a request whose body is in memory (every request kube makes
/// for meshtrace: reads, reviews, a TokenRequest, a dry-run create).
fn copy_request(req: &Request<Body>) -> Option<Request<Body>> {
    let mut again = Request::new(req.body().try_clone()?);
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    Some(again)
}

/// kube's error for a request, as the service under the client gives it:
/// the guard's own error unwrapped, so its words survive the client above.
pub fn unwrap_kube(e: kube::Error) -> BoxError {
    match e {
        kube::Error::Service(b) => b,
        other => Box::new(other),
    }
}

/// h2's words for a GOAWAY with NO_ERROR, anywhere in the error's chain:
/// the server says it did not process the request.
pub fn closed_gracefully(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .to_string()
            .contains("connection error received: not a result of an error")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};

    /// An error whose source is `inner`, as hyper wraps h2's.
    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<Wrapped>>);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn only_a_graceful_goaway_is_sent_again() {
        let goaway = Wrapped(
            "client error (SendRequest)",
            Some(Box::new(Wrapped(
                "connection error received: not a result of an error",
                None,
            ))),
        );
        assert!(closed_gracefully(&goaway));
        let reset = Wrapped(
            "client error (SendRequest)",
            Some(Box::new(Wrapped(
                "connection error received: unspecific protocol error detected",
                None,
            ))),
        );
        assert!(!closed_gracefully(&reset));
        assert!(!closed_gracefully(&Wrapped("timed out", None)));
    }

    /// Each request's method and body, in order.
    type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

    /// A server stand-in: answers with the given errors first (true: a
    /// graceful GOAWAY, false: a reset), then 200; records each request's
    /// method and body.
    fn server(fails: Vec<bool>) -> (kube::Client, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fails = Arc::new(Mutex::new(fails));
        let log = seen.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let (log, fails) = (log.clone(), fails.clone());
            async move {
                let method = req.method().to_string();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                log.lock().unwrap().push((method, body));
                let next = {
                    let mut f = fails.lock().unwrap();
                    (!f.is_empty()).then(|| f.remove(0))
                };
                match next {
                    Some(true) => Err::<Response<http_body_util::Full<Bytes>>, BoxError>(Box::new(
                        Wrapped("connection error received: not a result of an error", None),
                    )),
                    Some(false) => Err("connection reset by peer".into()),
                    None => Ok(Response::new(http_body_util::Full::new(
                        Bytes::from_static(
                            br#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#,
                        ),
                    ))),
                }
            }
        });
        (kube::Client::new(svc, "default"), seen)
    }

    fn post() -> Request<Body> {
        let mut r = Request::new(Body::from(b"{\"kind\":\"TokenReview\"}".to_vec()));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = "/apis/authentication.k8s.io/v1/tokenreviews"
            .parse()
            .unwrap();
        r
    }

    #[tokio::test]
    async fn an_unprocessed_request_is_sent_again_whole_and_nothing_else_is() {
        // A write refused unprocessed once: sent again, with the same body.
        let (inner, seen) = server(vec![true]);
        let client = resending(inner, "default".into(), 1);
        client
            .send(post())
            .await
            .expect("answered on the second try");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[1].0, "POST");
        assert_eq!(&seen[1].1[..], b"{\"kind\":\"TokenReview\"}");

        // Refused unprocessed more times than allowed: the last error.
        let (inner, seen) = server(vec![true, true, true]);
        let client = resending(inner, "default".into(), 1);
        let e = client.send(post()).await.expect_err("gives up");
        assert!(closed_gracefully(&*unwrap_kube(e)));
        assert_eq!(seen.lock().unwrap().len(), 2, "one try and one resend");

        // Any other failure may have been processed: never sent again.
        let (inner, seen) = server(vec![false]);
        let client = resending(inner, "default".into(), 3);
        client
            .send(post())
            .await
            .expect_err("a reset is not resent");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
