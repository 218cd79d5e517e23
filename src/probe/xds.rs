//! The gateway's own xDS stream, opened as its istio-agent opens it
//! upstream (pkg/istio-agent/xds_proxy.go): gRPC over TLS to the proxy
//! config's `discoveryAddress`, istiod verified with the agent's xDS roots,
//! the service-account token as `authorization: Bearer` (caclient's
//! DefaultTokenProvider), the cluster ID as `ClusterID` metadata, and a
//! client certificate only where the agent has one (PROV_CERT,
//! FILE_MOUNTED_CERTS: GetKeyCertsForXDS). One SotW `DiscoveryRequest` for
//! CDS with the node Envoy sends (pkg/bootstrap: id, metadata); the first
//! `DiscoveryResponse` is the answer, then the stream is dropped.
//!
//! The token and the key are never in an error or a Debug print.

use super::ca_client::{ChannelError, chain_words, istiod_channel_with};
use crate::proto::ads::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::proto::ads::{DiscoveryRequest, DiscoveryResponse, Node};
use futures::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::metadata::MetadataValue;

/// Envoy's Cluster type (CDS): the first type Envoy asks for.
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// An xDS answer for a gateway is kilobytes to megabytes; istio-agent reads
/// up to 4 MiB by default too (defaultClientMaxReceiveMessageSize).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The client certificate the agent presents: the chain (leaf first) and
/// its key.
pub struct ClientCert<'a> {
    pub chain_pem: &'a str,
    pub key_pem: &'a SecretString,
}

pub struct AdsRequest<'a> {
    pub addr: &'a str,
    pub server_name: &'a str,
    pub root_pem: &'a str,
    /// None: no authorization header (an agent without a credential fetcher).
    pub token: Option<&'a str>,
    /// The `ClusterID` metadata; sent even when empty, as the agent does.
    pub cluster_id: &'a str,
    pub client_cert: Option<ClientCert<'a>>,
    pub node_id: &'a str,
    /// String metadata (NAMESPACE, SERVICE_ACCOUNT, CLUSTER_ID, NETWORK,
    /// ISTIO_VERSION, every ISTIO_META_*).
    pub metadata: &'a BTreeMap<String, String>,
    /// The pod's labels (metadata LABELS, a Struct).
    pub labels: &'a BTreeMap<String, String>,
    pub type_url: &'a str,
    pub timeout: Duration,
}

impl std::fmt::Debug for AdsRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsRequest")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field(
                "token",
                &format_args!("<{} bytes>", self.token.map(str::len).unwrap_or(0)),
            )
            .field("cluster_id", &self.cluster_id)
            .field("client_cert", &self.client_cert.is_some())
            .field("node_id", &self.node_id)
            .field("type_url", &self.type_url)
            .finish_non_exhaustive()
    }
}

/// istiod's first answer on the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AdsAnswer {
    pub type_url: String,
    pub version_info: String,
    pub resources: usize,
    /// The distinct type URLs of the resources (raw `Any`s, not decoded).
    pub resource_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdsError {
    #[error("cannot connect to istiod: {0}")]
    Connect(String),
    #[error("istiod answered {code}: {message:?}")]
    Rpc { code: String, message: String },
    #[error("istiod ended the stream without an answer")]
    Closed,
    #[error("no answer from istiod within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("not sent: {0}")]
    BadInput(String),
}

/// The request Envoy sends first through the agent: the node as
/// pkg/bootstrap builds it, one type URL, no resource names (a wildcard).
pub fn request(
    node_id: &str,
    metadata: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    type_url: &str,
) -> DiscoveryRequest {
    use prost_types::value::Kind;
    let s = |v: &str| prost_types::Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let mut fields: BTreeMap<String, prost_types::Value> =
        metadata.iter().map(|(k, v)| (k.clone(), s(v))).collect();
    if !labels.is_empty() {
        fields.insert(
            "LABELS".into(),
            prost_types::Value {
                kind: Some(Kind::StructValue(prost_types::Struct {
                    fields: labels.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
                })),
            },
        );
    }
    DiscoveryRequest {
        node: Some(Node {
            id: node_id.to_string(),
            cluster: String::new(),
            metadata: Some(prost_types::Struct { fields }),
        }),
        type_url: type_url.to_string(),
        ..Default::default()
    }
}

/// One request, then a send side held open until the returned guard is
/// dropped, when it ends (END_STREAM). An ADS client holds its send side
/// open until the answer came; one held open for ever (`pending()`) keeps
/// its HTTP/2 stream, the connection to istiod and their tasks alive for the
/// life of the process, one more with every `--watch` run and every fleet
/// remote.
pub(crate) fn one_request<T: Send + 'static>(
    first: T,
) -> (
    impl futures::Stream<Item = T> + Send + 'static,
    tokio::sync::oneshot::Sender<()>,
) {
    let (guard, closed) = tokio::sync::oneshot::channel::<()>();
    let rest = futures::stream::once(closed).filter_map(|_| async { None });
    (
        futures::stream::once(async move { first }).chain(rest),
        guard,
    )
}

pub fn answer_of(resp: &DiscoveryResponse) -> AdsAnswer {
    let mut types: Vec<String> = Vec::new();
    for r in &resp.resources {
        if !types.contains(&r.type_url) && types.len() < 8 {
            types.push(r.type_url.clone());
        }
    }
    AdsAnswer {
        type_url: resp.type_url.clone(),
        version_info: resp.version_info.clone(),
        resources: resp.resources.len(),
        resource_types: types,
    }
}

/// Open the stream, send the request, read the first answer; bounded by
/// `timeout` as a whole.
pub async fn discover(req: &AdsRequest<'_>) -> Result<AdsAnswer, AdsError> {
    if req.addr.trim().is_empty() {
        return Err(AdsError::BadInput("istiod address is empty".into()));
    }
    if !req.root_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(AdsError::BadInput(
            "the roots contain no PEM certificate".into(),
        ));
    }
    match tokio::time::timeout(req.timeout, send(req)).await {
        Ok(r) => r,
        Err(_) => Err(AdsError::Timeout(req.timeout)),
    }
}

fn rpc(status: tonic::Status) -> AdsError {
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
    AdsError::Rpc {
        code: format!("{:?}", status.code()),
        message,
    }
}

async fn send(req: &AdsRequest<'_>) -> Result<AdsAnswer, AdsError> {
    let identity = req
        .client_cert
        .as_ref()
        .map(|c| tonic::transport::Identity::from_pem(c.chain_pem, c.key_pem.expose_secret()));
    let channel = istiod_channel_with(
        req.addr,
        req.server_name,
        req.root_pem,
        identity,
        req.timeout,
        None,
    )
    .await
    .map_err(|e| match e {
        ChannelError::BadInput(m) => AdsError::BadInput(m),
        ChannelError::Connect(m) => AdsError::Connect(m),
    })?;
    let first = request(req.node_id, req.metadata, req.labels, req.type_url);
    // The send side stays open until the answer came, as Envoy's does, and
    // ends when this returns (`_open` dropped).
    let (outbound, _open) = one_request(first);
    let mut request = tonic::Request::new(outbound);
    if let Some(token) = req.token {
        let auth = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            AdsError::BadInput("the token holds characters not allowed in an HTTP header".into())
        })?;
        request.metadata_mut().insert("authorization", auth);
    }
    let cid = MetadataValue::try_from(req.cluster_id).map_err(|_| {
        AdsError::BadInput(format!(
            "cluster ID {:?} is not a valid header value",
            req.cluster_id
        ))
    })?;
    // gRPC lowercases metadata keys: the agent's "ClusterID" arrives as clusterid.
    request.metadata_mut().insert("clusterid", cid);
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
    let mut inbound = client
        .stream_aggregated_resources(request)
        .await
        .map_err(rpc)?
        .into_inner();
    match inbound.message().await {
        Ok(Some(resp)) => Ok(answer_of(&resp)),
        Ok(None) => Err(AdsError::Closed),
        Err(status) => Err(rpc(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_send_side_ends_when_its_guard_is_dropped() {
        let (s, guard) = one_request(7);
        let mut s = Box::pin(s);
        assert_eq!(s.next().await, Some(7));
        // Held open while the answer is awaited...
        let waiting = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
        assert!(waiting.is_err(), "the send side ended before the answer");
        // ...and ended once the call returns.
        drop(guard);
        let ended = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
        assert_eq!(ended, Ok(None));
    }

    #[test]
    fn the_request_carries_the_node_as_envoy_sends_it() {
        let mut md = BTreeMap::new();
        md.insert("NAMESPACE".to_string(), "istio-system".to_string());
        md.insert("CLUSTER_ID".to_string(), "remote".to_string());
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "gw".to_string());
        let r = request(
            "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local",
            &md,
            &labels,
            CLUSTER_TYPE,
        );
        let node = r.node.unwrap();
        assert!(node.id.starts_with("router~10.0.0.1~"));
        let f = node.metadata.unwrap().fields;
        assert!(
            matches!(&f["NAMESPACE"].kind, Some(prost_types::value::Kind::StringValue(s)) if s == "istio-system")
        );
        assert!(
            matches!(&f["LABELS"].kind, Some(prost_types::value::Kind::StructValue(s)) if s.fields.len() == 1)
        );
        assert_eq!(r.type_url, CLUSTER_TYPE);
        assert!(r.resource_names.is_empty());
    }

    #[test]
    fn the_answer_counts_raw_resources() {
        let any = |t: &str| prost_types::Any {
            type_url: t.into(),
            value: vec![10, 1, b'a'],
        };
        let a = answer_of(&DiscoveryResponse {
            resources: vec![any(CLUSTER_TYPE), any(CLUSTER_TYPE)],
            type_url: CLUSTER_TYPE.into(),
            version_info: "2026-12-02T16:00:00Z/1".into(),
            nonce: "n".into(),
        });
        assert_eq!(a.resources, 2);
        assert_eq!(a.resource_types, [CLUSTER_TYPE]);
    }

    #[tokio::test]
    async fn bad_input_is_not_sent_and_never_shows_the_token() {
        let md = BTreeMap::new();
        let req = AdsRequest {
            addr: "127.0.0.1:1",
            server_name: "istiod.istio-system.svc",
            root_pem: "nope",
            token: Some("super-secret"),
            cluster_id: "remote",
            client_cert: None,
            node_id: "router~0.0.0.0~a.b~b.svc.cluster.local",
            metadata: &md,
            labels: &md,
            type_url: CLUSTER_TYPE,
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{req:?}").contains("super-secret"));
        let e = discover(&req).await.unwrap_err();
        assert!(matches!(e, AdsError::BadInput(_)), "{e:?}");
    }
}
