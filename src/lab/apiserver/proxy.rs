//! The pod proxy: `/api/v1/namespaces/{ns}/pods/{name}[:{port}]/proxy/{path}`,
//! as kube-apiserver serves it (authn, then RBAC on `pods/proxy` with the
//! verb of the HTTP method, then the pod's address), forwarding plain HTTP.
//!
//! The lab runs no pods: a request reaches a backend only where the lab
//! registered one for that pod and port, or for the Deployment that owns the
//! pod ([`super::ClusterSim::pod_proxies`]: the simulated istiod's monitoring
//! listener for the istiod Deployment's pods and 15014). Any other port of an
//! existing pod answers 503 as a refused dial does.

use super::{ApiError, ApiResult, ClusterSim, Req, authn, rbac};
use axum::http::{HeaderValue, Method, header};
use k8s_openapi::api::core::v1::Pod;
use std::net::SocketAddr;

/// The largest answer the proxy forwards from a backend (the lab's backends
/// serve a few hundred bytes).
const MAX_BACKEND_BODY: usize = 4 << 20;

/// A parsed pod-proxy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyPath {
    pub namespace: String,
    /// The path segment as sent: `name`, `name:port` or `scheme:name:port`.
    pub name_port: String,
    /// What follows `/proxy`, with its leading `/` (`/` when nothing does).
    pub rest: String,
}

/// The pod-proxy path, if `path` is one.
pub(crate) fn parse(path: &str) -> Option<ProxyPath> {
    let tail = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, tail) = tail.split_once('/')?;
    let tail = tail.strip_prefix("pods/")?;
    let (name_port, tail) = tail.split_once('/')?;
    let rest = match tail.strip_prefix("proxy")? {
        "" => "/".to_string(),
        r if r.starts_with('/') => r.to_string(),
        _ => return None,
    };
    if ns.is_empty() || name_port.is_empty() {
        return None;
    }
    Some(ProxyPath {
        namespace: ns.to_string(),
        name_port: name_port.to_string(),
        rest,
    })
}

/// Where the request goes: the backend, and the `podIP:port` the real API
/// server would dial (for its error messages). Runs under the cluster lock.
pub(crate) fn resolve(
    cl: &ClusterSim,
    req: &Req,
    p: &ProxyPath,
) -> ApiResult<(Option<SocketAddr>, String)> {
    let user = authn::authenticate_request(cl, &req.headers)?;
    let user = authn::impersonate(cl, user, &req.headers)?;
    let verb = match req.method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    // RequestInfo keeps the whole segment (with the port) as the name.
    let attrs = rbac::Attrs {
        verb: verb.into(),
        group: String::new(),
        resource: "pods".into(),
        subresource: "proxy".into(),
        name: p.name_port.clone(),
        namespace: p.namespace.clone(),
        path: None,
    };
    if !rbac::authorize(&cl.store, &user, &attrs).allowed {
        return Err(rbac::forbidden(&user, &attrs));
    }
    // utilnet.SplitSchemeNamePort: name, name:port or scheme:name:port.
    let parts: Vec<&str> = p.name_port.split(':').collect();
    let (name, port) = match parts.as_slice() {
        [n] => (*n, ""),
        [n, port] => (*n, *port),
        ["http" | "https", n, port] => (*n, *port),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid pod request {:?}",
                p.name_port
            )));
        }
    };
    let pod: Pod = cl
        .store
        .get(&p.namespace, name)
        .ok_or_else(|| ApiError::not_found("pods", "", name))?;
    // No port given: the first container port, as kube-apiserver picks it.
    let port = if port.is_empty() {
        pod.spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| p.container_port.to_string())
            .next()
            .unwrap_or_default()
    } else {
        port.to_string()
    };
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    if ip.is_empty() {
        return Err(ApiError::bad_request("address not allowed".into()));
    }
    let dial = if port.is_empty() {
        ip
    } else {
        format!("{ip}:{port}")
    };
    let key = format!("{}/{name}:{port}", p.namespace);
    // A backend registered for a Deployment serves whichever pod it has now
    // (the simulated process moves with a rollout).
    let backend = cl.pod_proxies.get(&key).copied().or_else(|| {
        let d = super::controllers::owning_deployment(&cl.store, &p.namespace, &pod)?;
        cl.pod_proxies
            .get(&deployment_key(&p.namespace, &d, &port))
            .copied()
    });
    Ok((backend, dial))
}

/// The [`ClusterSim::pod_proxies`] key of a backend for every pod of a
/// Deployment.
pub fn deployment_key(ns: &str, deployment: &str, port: &str) -> String {
    format!("{ns}/deployment/{deployment}:{port}")
}

/// kube-apiserver's answer when the dial to the pod fails.
pub(crate) fn unreachable(dial: &str) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!("error trying to reach service: dial tcp {dial}: connect: connection refused"),
    )
}

/// Forward the request to `backend` and hand back what it answered: status,
/// content type and body, as a reverse proxy does. Credentials are not
/// forwarded (kube-apiserver strips them once it has authenticated).
pub(crate) async fn forward(
    backend: SocketAddr,
    dial: &str,
    req: &Req,
    rest: &str,
    raw_query: Option<&str>,
) -> ApiResult<axum::response::Response> {
    let uri = match raw_query {
        Some(q) if !q.is_empty() => format!("{rest}?{q}"),
        _ => rest.to_string(),
    };
    let mut out = http::Request::builder()
        .method(req.method.clone())
        .uri(&uri)
        .header(header::HOST, backend.to_string());
    for h in [header::ACCEPT, header::CONTENT_TYPE, header::USER_AGENT] {
        if let Some(v) = req.headers.get(&h) {
            out = out.header(h, v.clone());
        }
    }
    let out = out
        .body(req.body.to_vec())
        .map_err(|e| ApiError::bad_request(format!("proxy request {uri:?}: {e}")))?;
    let resp = crate::probe::http1::request(&backend.to_string(), out, MAX_BACKEND_BODY)
        .await
        .map_err(|_| unreachable(dial))?;
    let (parts, body) = resp.into_parts();
    let mut r = axum::response::Response::new(axum::body::Body::from(body));
    *r.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    } else {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pod_proxy_paths_only() {
        assert_eq!(
            parse("/api/v1/namespaces/istio-system/pods/istiod-lab:15014/proxy/debug/clusterz"),
            Some(ProxyPath {
                namespace: "istio-system".into(),
                name_port: "istiod-lab:15014".into(),
                rest: "/debug/clusterz".into()
            })
        );
        assert_eq!(
            parse("/api/v1/namespaces/ns/pods/p/proxy").map(|p| p.rest),
            Some("/".into())
        );
        assert_eq!(
            parse("/api/v1/namespaces/ns/pods/p/proxy/").map(|p| p.rest),
            Some("/".into())
        );
        assert_eq!(parse("/api/v1/namespaces/ns/pods/p"), None);
        assert_eq!(parse("/api/v1/namespaces/ns/pods/p/status"), None);
        assert_eq!(parse("/api/v1/namespaces/ns/pods/p/proxyx"), None);
        assert_eq!(parse("/api/v1/namespaces/ns/services/s/proxy/x"), None);
        assert_eq!(parse("/api/v1/pods"), None);
    }
}
