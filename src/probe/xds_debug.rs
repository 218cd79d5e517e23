//! istiod's debug types over xDS, as `istioctl x internal-debug clusterz
//! --xds-address ...` reads them: one `DiscoveryRequest` on the ADS stream
//! of istiod's secure port (15012) with type URL `istio.io/debug` and the
//! debug path as the one resource name (`clusterz`). istiod answers one
//! `DiscoveryResponse` whose one resource is an `Any` of type `istio.io/debug`
//! holding the HTTP handler's body (the same JSON as `/debug/clusterz`)
//! (pilot/pkg/xds/debuggen.go).
//!
//! istiod serves it only to a caller it authenticated (`authentication
//! required`, Unauthenticated, otherwise) and, for every type but
//! config_dump, ndsz and edsz, only to an identity in its own namespace
//! (PermissionDenied). So the caller sends `authorization: Bearer <token>`
//! with a token of a service account in istiod's namespace (istioctl uses
//! `default`, for audience istio-ca), a node as istioctl's ADS client sets
//! it (istioctl/pkg/xds/client.go, pkg/adsc/adsc.go), and verifies istiod's
//! certificate.
//! Failures are errors with short reasons; the token is never in them.

use super::ca_client::{ChannelError, chain_words, istiod_channel};
use crate::proto::ads::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::proto::ads::{DiscoveryRequest, DiscoveryResponse, Node};
use std::time::Duration;
use tonic::metadata::MetadataValue;

/// istiod's debug type URL (`model.DebugType`, pkg/model/xds.go).
pub const DEBUG_TYPE: &str = "istio.io/debug";
/// The node ID: istioctl's request names `debug~0.0.0.0~istioctl~cluster.local`,
/// but its ADS client replaces the node with its own,
/// `sidecar~<IP>~<workload>.<ns>~<ns>.svc.cluster.local` (pkg/adsc/adsc.go
/// nodeID), and istiod accepts only the types sidecar, router, waypoint and
/// ztunnel (`invalid node type`, InvalidArgument, measured on a real istiod).
pub fn node_id(namespace: &str) -> String {
    format!("sidecar~0.0.0.0~meshtrace.{namespace}~{namespace}.svc.cluster.local")
}
/// The ISTIO_VERSION istioctl's ADS client sends when none is set.
const ISTIO_VERSION: &str = "65536.65536.65536";
/// A debug answer is a few kilobytes; anything this large is not one.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

pub struct DebugRequest<'a> {
    pub addr: &'a str,
    pub server_name: &'a str,
    pub root_pem: &'a str,
    pub token: &'a str,
    /// The token's service account and its namespace (node metadata
    /// NAMESPACE and SERVICE_ACCOUNT, as istioctl sends them).
    pub namespace: &'a str,
    pub service_account: &'a str,
    /// The debug path: `clusterz`, `syncz`, ...
    pub resource: &'a str,
    pub timeout: Duration,
}

impl std::fmt::Debug for DebugRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugRequest")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("namespace", &self.namespace)
            .field("service_account", &self.service_account)
            .field("resource", &self.resource)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum XdsError {
    #[error("cannot connect to istiod: {0}")]
    Connect(String),
    #[error("istiod answered {code}: {message:?}")]
    Rpc { code: String, message: String },
    #[error("no answer from istiod within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("not sent: {0}")]
    BadInput(String),
    #[error("istiod's answer is not a debug answer: {0}")]
    Malformed(String),
}

/// The request istioctl sends, for `resource`.
pub fn request(resource: &str, namespace: &str, service_account: &str) -> DiscoveryRequest {
    let s = |v: &str| prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(v.to_string())),
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("GENERATOR".to_string(), s("event"));
    fields.insert("SERVICE_ACCOUNT".to_string(), s(service_account));
    fields.insert("NAMESPACE".to_string(), s(namespace));
    fields.insert("ISTIO_VERSION".to_string(), s(ISTIO_VERSION));
    DiscoveryRequest {
        node: Some(Node {
            id: node_id(namespace),
            cluster: String::new(),
            metadata: Some(prost_types::Struct { fields }),
        }),
        resource_names: vec![resource.to_string()],
        type_url: DEBUG_TYPE.into(),
        ..Default::default()
    }
}

/// The body istiod's debug handler wrote, from its answer.
pub fn body(resp: &DiscoveryResponse) -> Result<Vec<u8>, XdsError> {
    let Some(any) = resp.resources.first() else {
        return Err(XdsError::Malformed(format!(
            "a DiscoveryResponse of type {:?} with no resource",
            crate::inspect::sanitize::quote(&resp.type_url)
        )));
    };
    if any.type_url != DEBUG_TYPE {
        return Err(XdsError::Malformed(format!(
            "its resource is of type {:?}, not {DEBUG_TYPE:?}",
            crate::inspect::sanitize::quote(&any.type_url)
        )));
    }
    Ok(any.value.clone())
}

/// Ask istiod for one debug type; bounded by `timeout` as a whole.
pub async fn get(req: &DebugRequest<'_>) -> Result<Vec<u8>, XdsError> {
    validate(req)?;
    match tokio::time::timeout(req.timeout, send(req)).await {
        Ok(r) => r,
        Err(_) => Err(XdsError::Timeout(req.timeout)),
    }
}

fn validate(req: &DebugRequest<'_>) -> Result<(), XdsError> {
    if req.addr.trim().is_empty() {
        return Err(XdsError::BadInput("istiod address is empty".into()));
    }
    if !req.root_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(XdsError::BadInput(
            "the root certificate contains no PEM certificate".into(),
        ));
    }
    if req.token.trim().is_empty() {
        return Err(XdsError::BadInput("the token is empty".into()));
    }
    Ok(())
}

async fn send(req: &DebugRequest<'_>) -> Result<Vec<u8>, XdsError> {
    // A stream: no per-request timeout on the channel; the caller bounds it.
    let channel = istiod_channel(req.addr, req.server_name, req.root_pem, req.timeout, None)
        .await
        .map_err(|e| match e {
            ChannelError::BadInput(m) => XdsError::BadInput(m),
            ChannelError::Connect(m) => XdsError::Connect(m),
        })?;
    let first = request(req.resource, req.namespace, req.service_account);
    // The send side stays open until the answer came, as an ADS client's
    // does, and ends when this returns (`_open` dropped): a stream left
    // open keeps its connection to istiod for the life of the process.
    let (outbound, _open) = super::xds::one_request(first);
    let mut request = tonic::Request::new(outbound);
    let auth = MetadataValue::try_from(format!("Bearer {}", req.token)).map_err(|_| {
        XdsError::BadInput("the token holds characters not allowed in an HTTP header".into())
    })?;
    request.metadata_mut().insert("authorization", auth);
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
    let rpc = |status: tonic::Status| {
        let mut message = crate::inspect::sanitize::quote(status.message());
        if let Some(src) = std::error::Error::source(&status) {
            let cause = crate::inspect::sanitize::quote(&chain_words(src));
            if !message.contains(&cause) {
                message = if message.is_empty() {
                    cause
                } else {
                    format!("{message}: {cause}")
                };
            }
        }
        XdsError::Rpc {
            code: format!("{:?}", status.code()),
            message,
        }
    };
    let mut inbound = client
        .stream_aggregated_resources(request)
        .await
        .map_err(rpc)?
        .into_inner();
    match inbound.message().await {
        Ok(Some(resp)) => body(&resp),
        Ok(None) => Err(XdsError::Malformed(
            "istiod ended the stream without an answer".into(),
        )),
        Err(status) => Err(rpc(status)),
    }
}

/// The reason, in words, for evidence: what istiod's answer means.
pub fn describe(e: &XdsError, namespace: &str) -> String {
    match e {
        XdsError::Rpc { code, message } if code == "Unauthenticated" => format!(
            "istiod answered Unauthenticated ({message:?}): it did not authenticate the token (a debug request needs a verified identity)"
        ),
        XdsError::Rpc { code, message } if code == "PermissionDenied" => format!(
            "istiod answered PermissionDenied ({message:?}): the token's identity is not in istiod's namespace {namespace}"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn the_request_is_istioctls() {
        let r = request("clusterz", "istio-system", "default");
        assert_eq!(r.type_url, "istio.io/debug");
        assert_eq!(r.resource_names, ["clusterz"]);
        let node = r.node.as_ref().unwrap();
        assert_eq!(
            node.id,
            "sidecar~0.0.0.0~meshtrace.istio-system~istio-system.svc.cluster.local"
        );
        let md = &node.metadata.as_ref().unwrap().fields;
        let get = |k: &str| match &md[k].kind {
            Some(prost_types::value::Kind::StringValue(s)) => s.clone(),
            _ => panic!("{k}"),
        };
        assert_eq!(get("GENERATOR"), "event");
        assert_eq!(get("NAMESPACE"), "istio-system");
        assert_eq!(get("SERVICE_ACCOUNT"), "default");
        // Envoy's field numbers: node = 2, resource_names = 3, type_url = 4.
        let bytes = r.encode_to_vec();
        assert_eq!(bytes[0], 2 << 3 | 2);
        assert_eq!(get("ISTIO_VERSION"), "65536.65536.65536");
        assert!(bytes.windows(2).any(|w| w == [3 << 3 | 2, 8]));
        assert!(bytes.windows(2).any(|w| w == [4 << 3 | 2, 14]));
    }

    #[test]
    fn the_body_is_the_one_debug_resource() {
        let ok = DiscoveryResponse {
            resources: vec![prost_types::Any {
                type_url: DEBUG_TYPE.into(),
                value: b"[]".to_vec(),
            }],
            type_url: DEBUG_TYPE.into(),
            ..Default::default()
        };
        assert_eq!(body(&ok).unwrap(), b"[]");
        assert!(matches!(
            body(&DiscoveryResponse::default()),
            Err(XdsError::Malformed(_))
        ));
        let other = DiscoveryResponse {
            resources: vec![prost_types::Any {
                type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                value: vec![],
            }],
            ..Default::default()
        };
        assert!(matches!(body(&other), Err(XdsError::Malformed(_))));
    }

    #[tokio::test]
    async fn bad_input_is_not_sent_and_never_shows_the_token() {
        let req = DebugRequest {
            addr: "127.0.0.1:1",
            server_name: "istiod.istio-system.svc",
            root_pem: "nope",
            token: "super-secret",
            namespace: "istio-system",
            service_account: "default",
            resource: "clusterz",
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{req:?}").contains("super-secret"));
        let e = get(&req).await.unwrap_err();
        assert!(matches!(e, XdsError::BadInput(_)), "{e:?}");
        assert!(!e.to_string().contains("super-secret"));
    }
}
