//! An admission webhook call made the way kube-apiserver makes it
//! (k8s.io/apiserver/pkg/util/webhook/client.go, admission/plugin/webhook):
//! TLS to the resolved address with the webhook's caBundle as the only roots
//! and `<service>.<namespace>.svc` (or the URL's host) as the server name,
//! ALPN `http/1.1` only, then one `POST <path>?timeout=10s` of an
//! `admission.k8s.io/v1` AdmissionReview. The answer is read bounded and
//! parsed here, sans IO ([`parse_review`]), so a hostile peer is judged by
//! one function that the tests and fuzzers can call.

use super::tls::{TlsProbe, TlsReport, connect};
use hyper::body::Bytes;
use serde_json::Value;
use std::time::Duration;

/// The largest AdmissionReview answer read: kube-apiserver caps webhook
/// answers far below this; istiod's patch for a pod is a few KiB.
pub const MAX_ANSWER_BYTES: usize = 3 << 20;
/// Patch operations kept from an answer (the rest are counted).
const MAX_OPS: usize = 512;

#[derive(Debug, Clone)]
pub struct ReviewCall {
    pub tls: TlsProbe,
    /// The HTTP path (the webhook's service.path, or the URL's path and query).
    pub path: String,
    /// The Host header: what kube-apiserver sends (`svc.ns.svc:port` or the URL's host).
    pub host: String,
    /// The AdmissionReview, JSON.
    pub body: Vec<u8>,
}

/// What happened: the TLS stage, then the HTTP answer.
#[derive(Debug, Clone, Default)]
pub struct ReviewReport {
    pub tls: TlsReport,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The answer's body, at most [`MAX_ANSWER_BYTES`].
    pub body: Vec<u8>,
    /// Why no answer came after TLS (timeout, reset, too large).
    pub http_error: Option<String>,
}

/// Call the webhook. Never panics; TLS and the call each stay within the
/// probe's timeout.
pub async fn call(c: &ReviewCall) -> ReviewReport {
    let (tls, conn) = connect(&c.tls, &[b"http/1.1"]).await;
    let mut out = ReviewReport {
        tls,
        ..Default::default()
    };
    let Some(conn) = conn else { return out };
    match tokio::time::timeout(c.tls.timeout, post(conn, c)).await {
        Ok(Ok((status, body))) => {
            out.status = Some(status);
            out.body = body;
        }
        Ok(Err(e)) => out.http_error = Some(e),
        Err(_) => {
            out.http_error = Some(format!(
                "no answer to the AdmissionReview within {}",
                humantime::format_duration(c.tls.timeout)
            ))
        }
    }
    out
}

async fn post(conn: super::tls::TlsConn, c: &ReviewCall) -> Result<(u16, Vec<u8>), String> {
    use http_body_util::BodyExt;
    let (mut sender, driver) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(conn))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = driver.await;
    });
    // kube-apiserver appends the webhook's timeoutSeconds (Istio's chart
    // leaves the default, 10s).
    let sep = if c.path.contains('?') { '&' } else { '?' };
    let uri = format!("{}{sep}timeout=10s", c.path);
    let req = http::Request::post(uri)
        .header(http::header::HOST, &c.host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, */*")
        .header(
            http::header::USER_AGENT,
            "meshtrace (as kube-apiserver's admission webhook client)",
        )
        .body(http_body_util::Full::new(Bytes::from(c.body.clone())))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP request: {e}"))?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer (at most {MAX_ANSWER_BYTES} bytes): {e}"))?
        .to_bytes();
    task.abort();
    Ok((status, body.to_vec()))
}

/// One operation of the JSONPatch, as much as a judge needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    /// For a value that is a container (or a list of them): their names.
    pub containers: Vec<String>,
}

/// An AdmissionReview answer, parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReviewAnswer {
    pub allowed: bool,
    /// The answer's uid is the request's (kube-apiserver refuses it otherwise).
    pub uid_matches: bool,
    pub api_version: String,
    pub patch_type: Option<String>,
    /// The decoded JSONPatch's operations (at most 512 kept).
    pub ops: Vec<PatchOp>,
    pub op_count: usize,
    /// Why the patch could not be read, when there was one.
    pub patch_error: Option<String>,
    /// `response.status.message` / `.code`: why a webhook denied.
    pub message: Option<String>,
    pub code: Option<i64>,
}

/// Parse an AdmissionReview answer for the request `uid`. An Err says in
/// words why it is not one (kube-apiserver's own errors say the same).
pub fn parse_review(body: &[u8], uid: &str) -> Result<ReviewAnswer, String> {
    use base64::Engine as _;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let kind = v["kind"].as_str().unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(format!(
            "the answer is not an AdmissionReview (kind {:?})",
            crate::inspect::sanitize::cap(kind, 64)
        ));
    }
    let r = &v["response"];
    if !r.is_object() {
        return Err("the AdmissionReview has no response".into());
    }
    let mut a = ReviewAnswer {
        allowed: r["allowed"].as_bool().unwrap_or(false),
        uid_matches: r["uid"].as_str() == Some(uid),
        api_version: crate::inspect::sanitize::cap(
            v["apiVersion"].as_str().unwrap_or_default(),
            64,
        ),
        patch_type: r["patchType"]
            .as_str()
            .map(|s| crate::inspect::sanitize::cap(s, 64)),
        message: r["status"]["message"]
            .as_str()
            .map(|s| crate::inspect::sanitize::cap(s, 400)),
        code: r["status"]["code"].as_i64(),
        ..Default::default()
    };
    if let Some(p) = r["patch"].as_str() {
        match base64::engine::general_purpose::STANDARD
            .decode(p.as_bytes())
            .map_err(|e| format!("the patch is not base64 ({e})"))
            .and_then(|raw| {
                serde_json::from_slice::<Value>(&raw)
                    .map_err(|e| format!("the patch is not JSON ({e})"))
            }) {
            Ok(Value::Array(ops)) => {
                a.op_count = ops.len();
                a.ops = ops.iter().take(MAX_OPS).map(op_of).collect();
            }
            Ok(_) => a.patch_error = Some("the patch is not a JSON array of operations".into()),
            Err(e) => a.patch_error = Some(e),
        }
    }
    Ok(a)
}

fn op_of(v: &Value) -> PatchOp {
    let cap = |s: &str| crate::inspect::sanitize::cap(s, 200);
    let name = |c: &Value| c["name"].as_str().map(&cap);
    let containers = match &v["value"] {
        Value::Array(list) => list.iter().take(64).filter_map(name).collect(),
        c @ Value::Object(_) => name(c).into_iter().collect(),
        _ => vec![],
    };
    PatchOp {
        op: cap(v["op"].as_str().unwrap_or_default()),
        path: cap(v["path"].as_str().unwrap_or_default()),
        containers,
    }
}

/// Whether the patch injects the proxy as istiod's injector does: it adds
/// or changes the `istio-proxy` container (a gateway's template already
/// names one, which the patch then fills in), and `sample_containers` is
/// the pod's own container list, to map `/spec/containers/N` to a name.
pub fn injects_proxy(ops: &[PatchOp], sample_containers: &[String]) -> bool {
    ops.iter().any(|o| {
        if o.containers.iter().any(|c| c == "istio-proxy") {
            return o.path.starts_with("/spec/containers")
                || o.path.starts_with("/spec/initContainers");
        }
        let Some(rest) = o.path.strip_prefix("/spec/containers/") else {
            return false;
        };
        let idx = rest.split('/').next().unwrap_or_default();
        idx.parse::<usize>()
            .ok()
            .and_then(|i| sample_containers.get(i))
            .is_some_and(|n| n == "istio-proxy")
    })
}

/// Milliseconds, for evidence.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn answer(patch: &Value, uid: &str) -> Vec<u8> {
        let p = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": p}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_patch_that_adds_the_proxy() {
        let patch = serde_json::json!([
            {"op": "add", "path": "/metadata/annotations/sidecar.istio.io~1status", "value": "{}"},
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "istio-proxy", "image": "proxyv2"}},
        ]);
        let a = parse_review(&answer(&patch, "u1"), "u1").unwrap();
        assert!(a.allowed && a.uid_matches);
        assert_eq!(a.patch_type.as_deref(), Some("JSONPatch"));
        assert_eq!(a.op_count, 2);
        assert!(injects_proxy(&a.ops, &["app".into()]));
        // The same answer for another request is not this request's.
        assert!(
            !parse_review(&answer(&patch, "u1"), "u2")
                .unwrap()
                .uid_matches
        );
    }

    #[test]
    fn a_gateway_patch_fills_its_istio_proxy_container() {
        let patch = serde_json::json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": "proxyv2"},
        ]);
        let a = parse_review(&answer(&patch, "u"), "u").unwrap();
        assert!(injects_proxy(&a.ops, &["istio-proxy".into()]));
        assert!(!injects_proxy(&a.ops, &["app".into()]));
    }

    #[test]
    fn hostile_answers_are_words() {
        for (body, want) in [
            (&b"<html>login</html>"[..], "not JSON"),
            (
                br#"{"kind":"Status","status":"Failure"}"#,
                "not an AdmissionReview",
            ),
            (br#"{"kind":"AdmissionReview"}"#, "no response"),
        ] {
            let e = parse_review(body, "u").unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let bad =
            br#"{"kind":"AdmissionReview","response":{"uid":"u","allowed":true,"patch":"!!"}}"#;
        let a = parse_review(bad, "u").unwrap();
        assert!(a.patch_error.unwrap().contains("not base64"));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_review(deep.as_bytes(), "u").is_err());
    }
}
