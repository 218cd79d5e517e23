//! The lab istiod's webhook port (the 15017 role): HTTPS with istiod's own
//! serving certificate and istiod's sidecar injector at `/inject` and
//! `/inject/...`, answering `admission.k8s.io/v1` AdmissionReviews as
//! pkg/kube/inject/webhook.go does: `application/json` only, the path's
//! `/cluster/<id>/net/<network>` pairs as the proxy's env, pods that opt out
//! (annotation `sidecar.istio.io/inject: "false"`, hostNetwork, already
//! injected, kube-system/kube-public) allowed without a patch, every other
//! pod allowed with a JSONPatch that adds (or, for a gateway's placeholder,
//! fills in) the `istio-proxy` container and the `sidecar.istio.io/status`
//! annotation. Minimal, but the same contract.

use crate::lab::pki::ServerCert;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// istiod reads at most this much of a request (kube.HTTPConfigReader's limit is larger; any pod fits).
const MAX_BODY: usize = 4 << 20;
/// The proxy image the lab's injector writes.
const PROXY_IMAGE: &str = "docker.io/istio/proxyv2:lab";

/// The webhook listener; its certificate follows istiod's restarts.
pub struct WebhookServer {
    pub addr: SocketAddr,
    config: axum_server::tls_rustls::RustlsConfig,
    handle: axum_server::Handle<SocketAddr>,
    /// Serve leaf + these intermediates (not the root), as istiod does.
    intermediates: String,
}

impl WebhookServer {
    /// Serve on 127.0.0.1 (a port of its own) with `serving` + `intermediates`.
    pub async fn start(
        serving: &ServerCert,
        intermediates: String,
    ) -> std::io::Result<WebhookServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let config =
            axum_server::tls_rustls::RustlsConfig::from_config(tls(serving, &intermediates)?);
        let handle = axum_server::Handle::<SocketAddr>::new();
        let app = axum::Router::new()
            .fallback(
                |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| async move {
                    route(uri.path(), &headers, &body)
                },
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
        // As the lab's API servers: without TCP_NODELAY the answer's second
        // write waited for the caller's delayed ACK, and injection-webhook
        // took ~44 ms of a 22 ms lab trace.
        let server = axum_server::tls_rustls::from_tcp_rustls(listener, config.clone())?
            .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor::new()))
            .handle(handle.clone());
        tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::warn!(error = %e, "lab istiod webhook listener stopped");
            }
        });
        Ok(WebhookServer {
            addr,
            config,
            handle,
            intermediates,
        })
    }

    /// Serve a new certificate from now on (istiod restarted with it).
    pub fn reload(&self, serving: &ServerCert) {
        if let Ok(cfg) = tls(serving, &self.intermediates) {
            self.config.reload_from_config(cfg);
        }
    }

    pub fn shutdown(&self) {
        self.handle.shutdown();
    }
}

fn tls(serving: &ServerCert, intermediates: &str) -> std::io::Result<Arc<rustls::ServerConfig>> {
    // Go's net/http server offers h2 and http/1.1, as the lab API server does.
    let chain = format!("{}{intermediates}", serving.cert_pem);
    crate::lab::apiserver::server_tls(&chain, &serving.key_pem)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

fn route(path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if path != "/inject" && !path.starts_with("/inject/") {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    }
    if body.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "no body found");
    }
    if body.len() > MAX_BODY {
        return plain(StatusCode::BAD_REQUEST, "request entity too large");
    }
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/json")
    {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid Content-Type, want `application/json`",
        );
    }
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return answer(
                &Value::Null,
                json!({"allowed": false, "status": {"message": format!("couldn't get version/kind; json parse error: {e}")}}),
            );
        }
    };
    let resp = inject(&review, path);
    answer(&review, resp)
}

fn answer(review: &Value, mut resp: Value) -> Response {
    let uid = review["request"]["uid"].clone();
    if !uid.is_null() {
        resp["uid"] = uid;
    }
    let api_version = review["apiVersion"]
        .as_str()
        .unwrap_or("admission.k8s.io/v1");
    let out = json!({"kind": "AdmissionReview", "apiVersion": api_version, "response": resp});
    (
        [(header::CONTENT_TYPE, "application/json")],
        out.to_string(),
    )
        .into_response()
}

/// The path's env pairs (parseInjectEnvs): `/inject/cluster/c1/net/n1`.
pub fn path_env(path: &str) -> Vec<(String, String)> {
    let rest = path
        .trim_end_matches('/')
        .splitn(3, '/')
        .nth(2)
        .unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| {
            let k = match c[0] {
                "cluster" => "ISTIO_META_CLUSTER_ID".to_string(),
                "net" => "ISTIO_META_NETWORK".to_string(),
                other => other.to_ascii_uppercase(),
            };
            (k, c[1].replace("--slash--", "/"))
        })
        .collect()
}

fn inject(review: &Value, path: &str) -> Value {
    let req = &review["request"];
    let pod = &req["object"];
    if !pod.is_object() {
        return json!({"allowed": false, "status": {"message": "Could not unmarshal raw object: no object"}});
    }
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .or(req["namespace"].as_str())
        .unwrap_or_default();
    let ann = &pod["metadata"]["annotations"];
    let opted_out = ann["sidecar.istio.io/inject"].as_str() == Some("false")
        || pod["metadata"]["labels"]["sidecar.istio.io/inject"].as_str() == Some("false");
    if opted_out
        || pod["spec"]["hostNetwork"] == true
        || ann.get("sidecar.istio.io/status").is_some()
        || ["kube-system", "kube-public"].contains(&ns)
    {
        // "Skipping due to policy check"
        return json!({"allowed": true});
    }
    let mut env = vec![json!({"name": "ISTIO_META_POD_NAMESPACE", "value": ns})];
    for (k, v) in path_env(path) {
        env.push(json!({"name": k, "value": v}));
    }
    let proxy = json!({
        "name": "istio-proxy",
        "image": PROXY_IMAGE,
        "args": ["proxy", if ann["inject.istio.io/templates"] == "gateway" { "router" } else { "sidecar" }],
        "env": env,
    });
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut ops = Vec::new();
    if ann.is_null() || !ann.is_object() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    let status = json!({"containers": ["istio-proxy"]}).to_string();
    ops.push(json!({"op": "add", "path": "/metadata/annotations/sidecar.istio.io~1status", "value": status}));
    match containers.iter().position(|c| c["name"] == "istio-proxy") {
        // A gateway names its proxy with the placeholder image "auto": fill it in.
        Some(i) => ops.push(
            json!({"op": "replace", "path": format!("/spec/containers/{i}"), "value": proxy}),
        ),
        None => ops.push(json!({"op": "add", "path": "/spec/containers/-", "value": proxy})),
    }
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD.encode(Value::Array(ops).to_string());
    json!({"allowed": true, "patch": patch, "patchType": "JSONPatch"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_gives_the_proxys_env() {
        assert_eq!(
            path_env("/inject/cluster/remote/net/network2"),
            vec![
                ("ISTIO_META_CLUSTER_ID".to_string(), "remote".to_string()),
                ("ISTIO_META_NETWORK".to_string(), "network2".to_string())
            ]
        );
        assert!(path_env("/inject").is_empty());
        assert!(path_env("/inject/").is_empty());
    }

    #[test]
    fn pods_that_opt_out_get_no_patch() {
        let review = |ann: Value, ns: &str| json!({"request": {"uid": "u", "namespace": ns, "object": {"metadata": {"namespace": ns, "annotations": ann}, "spec": {"containers": [{"name": "app"}]}}}});
        for (ann, ns) in [
            (json!({"sidecar.istio.io/inject": "false"}), "default"),
            (json!({"sidecar.istio.io/status": "{}"}), "default"),
            (json!({}), "kube-system"),
        ] {
            let r = inject(&review(ann, ns), "/inject");
            assert_eq!(r, json!({"allowed": true}));
        }
        let r = inject(&review(json!({}), "default"), "/inject");
        assert_eq!(r["patchType"], "JSONPatch");
    }
}
