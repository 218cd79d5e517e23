//! The gateway's certificate request to istiod, sent the way istio-agent
//! sends it: gRPC over TLS on 15012, verified against `istio-ca-root-cert`,
//! with the service-account token as a bearer credential and the cluster ID
//! in both the gRPC metadata (which istiod's authenticator reads) and the
//! request's metadata Struct.

use crate::proto::IstioCertificateRequest;
use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

pub struct CsrRequest<'a> {
    /// host:port of istiod's gRPC TLS port.
    pub addr: &'a str,
    /// Name istiod's serving cert must be valid for (istiod.istio-system.svc when dialling an IP).
    pub server_name: &'a str,
    /// The mesh root (istio-ca-root-cert's root-cert.pem).
    pub root_pem: &'a str,
    /// The projected service-account token. Never logged, never echoed.
    pub token: &'a str,
    pub cluster_id: &'a str,
    pub csr_pem: &'a str,
    pub ttl_secs: i64,
    pub timeout: Duration,
}

impl std::fmt::Debug for CsrRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hand-written so the token can never end up in a debug print.
        f.debug_struct("CsrRequest")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("cluster_id", &self.cluster_id)
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("ttl_secs", &self.ttl_secs)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CsrError {
    #[error("cannot connect to istiod: {0}")]
    Connect(String),
    #[error("istiod answered {code}: {message:?}")]
    Rpc { code: String, message: String },
    #[error("no answer from istiod within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("bad input: {0}")]
    BadInput(String),
}

/// Send one CreateCertificate; Ok holds the returned chain (leaf first).
pub async fn create_certificate(req: &CsrRequest<'_>) -> Result<Vec<String>, CsrError> {
    validate(req)?;
    match tokio::time::timeout(req.timeout, send(req)).await {
        Ok(r) => r,
        Err(_) => Err(CsrError::Timeout(req.timeout)),
    }
}

fn validate(req: &CsrRequest<'_>) -> Result<(), CsrError> {
    if req.addr.trim().is_empty() {
        return Err(CsrError::BadInput("istiod address is empty".into()));
    }
    if !req.root_pem.contains("-----BEGIN CERTIFICATE-----") {
        let head: String = req.root_pem.trim().chars().take(40).collect();
        return Err(CsrError::BadInput(format!(
            "root certificate contains no PEM certificate; it begins {head:?}"
        )));
    }
    if !req.csr_pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return Err(CsrError::BadInput(
            "CSR is not a PEM certificate request".into(),
        ));
    }
    if req.token.trim().is_empty() {
        return Err(CsrError::BadInput("service-account token is empty".into()));
    }
    if req.ttl_secs < 0 {
        return Err(CsrError::BadInput(format!(
            "TTL {} s is negative",
            req.ttl_secs
        )));
    }
    Ok(())
}

/// The error and its sources, joined; tonic's top-level Display alone only says "transport error".
/// The largest CreateCertificate answer read.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

pub(crate) fn chain_words(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if parts.last() != Some(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Why a channel to istiod could not be opened.
pub(crate) enum ChannelError {
    BadInput(String),
    Connect(String),
}

/// A TLS channel to istiod at `addr` that verifies `server_name` against
/// `root_pem`, as the agent dials it: the CSR and the xDS debug read alike.
/// `request_timeout` bounds each unary call (None for a stream).
pub(crate) async fn istiod_channel(
    addr: &str,
    server_name: &str,
    root_pem: &str,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<tonic::transport::Channel, ChannelError> {
    istiod_channel_with(
        addr,
        server_name,
        root_pem,
        None,
        connect_timeout,
        request_timeout,
    )
    .await
}

/// Starts opening the trace's shared channel to istiod (the one the CSR
/// and the xDS stream will ride) on its own task, while a probe's own
/// handshake checks the path, so the CSR finds it connected or in progress.
/// Bounded by `connect_timeout`; outside a trace it does nothing; a failure
/// is left for the CSR to meet and report.
pub(crate) fn warm(addr: &str, server_name: &str, root_pem: &str, connect_timeout: Duration) {
    let Ok(trace) = TRACE_CHANNELS.try_with(|c| c.clone()) else {
        return;
    };
    let (addr, server_name, root_pem) = (
        addr.to_string(),
        server_name.to_string(),
        root_pem.to_string(),
    );
    tokio::spawn(TRACE_CHANNELS.scope(trace, async move {
        let dial = shared_channel(&addr, &server_name, &root_pem, connect_timeout);
        let _ = tokio::time::timeout(connect_timeout, dial).await;
    }));
}

/// The channels to istiod one trace shares (see [`istiod_channel_with`]).
/// The engine runs each trace's steps inside [`TRACE_CHANNELS`]`.scope`;
/// outside one (a test's own call to istiod) every call dials afresh.
type ChannelCell = std::sync::Arc<tokio::sync::OnceCell<tonic::transport::Channel>>;

#[derive(Clone, Default)]
pub struct TraceChannels(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], ChannelCell>>>,
);

tokio::task_local! {
    /// The current trace's channels to istiod.
    pub static TRACE_CHANNELS: TraceChannels;
}

/// [`istiod_channel`], presenting `identity` as client certificate when given.
///
/// Without an identity the channel (one HTTP/2 connection) is shared, within
/// one trace, by every call that dials the same address, server name and
/// roots: the CSR, istiod's debug view and the xDS stream ride one
/// connection, as the agent's do, not one each (issue 10). Only within a
/// trace: a connection kept across runs (watch mode) could outlive a change
/// of the path (a load balancer's established connections survive its
/// reload). Every caller bounds its own call, so the shared channel carries
/// no request timeout.
pub(crate) async fn istiod_channel_with(
    addr: &str,
    server_name: &str,
    root_pem: &str,
    identity: Option<tonic::transport::Identity>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<tonic::transport::Channel, ChannelError> {
    if identity.is_some() {
        return dial(
            addr,
            server_name,
            root_pem,
            identity,
            connect_timeout,
            request_timeout,
        )
        .await;
    }
    shared_channel(addr, server_name, root_pem, connect_timeout).await
}

async fn shared_channel(
    addr: &str,
    server_name: &str,
    root_pem: &str,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, ChannelError> {
    use sha2::Digest;
    use std::sync::Arc;
    let Ok(trace) = TRACE_CHANNELS.try_with(|c| c.clone()) else {
        return dial(addr, server_name, root_pem, None, connect_timeout, None).await;
    };
    let channels = &trace.0;
    let mut h = sha2::Sha256::new();
    for part in [addr, server_name, root_pem] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let key: [u8; 32] = h.finalize().into();
    // Twice at most: a stale channel is replaced once, never in a loop.
    for _ in 0..2 {
        let cell = channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        // Concurrent callers wait for one dial; a failed dial is not kept
        // (the next caller sees the failure for itself).
        let ch = cell
            .get_or_try_init(|| dial(addr, server_name, root_pem, None, connect_timeout, None))
            .await?
            .clone();
        // A channel whose worker is gone (its runtime ended: each test has
        // its own) is dropped and dialled again.
        let mut probe = ch.clone();
        match futures::FutureExt::now_or_never(tower::ServiceExt::ready(&mut probe)) {
            Some(Err(_)) => {
                let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
                if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    map.remove(&key);
                }
            }
            _ => return Ok(ch),
        }
    }
    dial(addr, server_name, root_pem, None, connect_timeout, None).await
}

async fn dial(
    addr: &str,
    server_name: &str,
    root_pem: &str,
    identity: Option<tonic::transport::Identity>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<tonic::transport::Channel, ChannelError> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root_pem))
        .domain_name(server_name);
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let mut endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| {
            ChannelError::BadInput(format!(
                "istiod address {addr:?} is not usable: {}",
                chain_words(&e)
            ))
        })?
        .tls_config(tls)
        .map_err(|e| ChannelError::BadInput(format!("TLS settings rejected: {}", chain_words(&e))))?
        .connect_timeout(connect_timeout);
    if let Some(t) = request_timeout {
        endpoint = endpoint.timeout(t);
    }
    endpoint.connect().await.map_err(|e| {
        ChannelError::Connect(format!(
            "{addr} (server name {server_name:?}): {}",
            chain_words(&e)
        ))
    })
}

async fn send(req: &CsrRequest<'_>) -> Result<Vec<String>, CsrError> {
    let channel = istiod_channel(
        req.addr,
        req.server_name,
        req.root_pem,
        req.timeout,
        Some(req.timeout),
    )
    .await
    .map_err(|e| match e {
        ChannelError::BadInput(m) => CsrError::BadInput(m),
        ChannelError::Connect(m) => CsrError::Connect(m),
    })?;

    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "ClusterID".to_string(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(
                req.cluster_id.to_string(),
            )),
        },
    );
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: req.csr_pem.to_string(),
        validity_duration: req.ttl_secs,
        metadata: Some(prost_types::Struct { fields }),
    });
    // The value is built here and never formatted into an error: a header
    // parse failure reports only that the token has bad characters.
    let auth = MetadataValue::try_from(format!("Bearer {}", req.token)).map_err(|_| {
        CsrError::BadInput("token contains characters not allowed in an HTTP header".into())
    })?;
    request.metadata_mut().insert("authorization", auth);
    if !req.cluster_id.is_empty() {
        let cid = MetadataValue::try_from(req.cluster_id).map_err(|_| {
            CsrError::BadInput(format!(
                "cluster ID {:?} is not a valid header value",
                req.cluster_id
            ))
        })?;
        request.metadata_mut().insert("clusterid", cid);
    }

    // A chain is a few KB; 4 MiB (tonic's default) is the bound on an answer.
    let mut client =
        IstioCertificateServiceClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
    match client.create_certificate(request).await {
        Ok(resp) => Ok(resp.into_inner().cert_chain),
        Err(status) => {
            // A reset or GOAWAY arrives as Unknown "transport error": the
            // cause is in the source chain, in words.
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
            Err(CsrError::Rpc {
                code: format!("{:?}", status.code()),
                message,
            })
        }
    }
}

/// A fresh P-256 key and a PEM CSR with the SPIFFE URI SAN (as istio-agent does); the key stays in memory and is dropped by the caller.
pub fn new_csr(spiffe_id: &str) -> Result<(rcgen::KeyPair, String), String> {
    if !spiffe_id.starts_with("spiffe://") {
        return Err(format!(
            "{spiffe_id:?} is not a SPIFFE ID (spiffe://<trust domain>/ns/<ns>/sa/<sa>)"
        ));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("key generation: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    // istio-agent puts the identity in the URI SAN and leaves the subject empty.
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = spiffe_id
        .try_into()
        .map_err(|e| format!("SPIFFE ID {spiffe_id:?} cannot be a SAN: {e}"))?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    let pem = csr.pem().map_err(|e| format!("CSR PEM: {e}"))?;
    Ok((key, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_carries_spiffe_uri() {
        let (_key, pem) = new_csr("spiffe://cluster.local/ns/istio-system/sa/gw").unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(der.label, "CERTIFICATE REQUEST");
        let (_, csr) = <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&der.contents).unwrap();
        let mut uris = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    if let x509_parser::extensions::GeneralName::URI(u) = n {
                        uris.push(u.to_string());
                    }
                }
            }
        }
        assert_eq!(
            uris,
            vec!["spiffe://cluster.local/ns/istio-system/sa/gw".to_string()]
        );
        assert!(new_csr("not-spiffe").is_err());
    }

    #[tokio::test]
    async fn bad_input_is_reported_without_the_token() {
        crate::install_crypto_provider();
        let (_k, csr) = new_csr("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let secret = "super-secret-token\n";
        let req = CsrRequest {
            addr: "127.0.0.1:1",
            server_name: "istiod.istio-system.svc",
            root_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            token: secret,
            cluster_id: "remote",
            csr_pem: &csr,
            ttl_secs: 3600,
            timeout: Duration::from_secs(2),
        };
        assert!(!format!("{req:?}").contains("super-secret"));
        let e = create_certificate(&CsrRequest {
            root_pem: "nope",
            ..req
        })
        .await
        .unwrap_err();
        assert_eq!(
            e,
            CsrError::BadInput(
                "root certificate contains no PEM certificate; it begins \"nope\"".into()
            )
        );
        let e = create_certificate(&CsrRequest {
            ttl_secs: -1,
            ..req
        })
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "bad input: TTL -1 s is negative");
    }

    #[tokio::test]
    async fn refused_is_a_connect_error() {
        crate::install_crypto_provider();
        let root = crate::lab::pki::Ca::root("r", "lab", 1);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let (_k, csr) = new_csr("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let e = create_certificate(&CsrRequest {
            addr: &addr,
            server_name: "istiod.istio-system.svc",
            root_pem: &root.cert_pem,
            token: "tok-value-xyz",
            cluster_id: "remote",
            csr_pem: &csr,
            ttl_secs: 0,
            timeout: Duration::from_secs(3),
        })
        .await
        .unwrap_err();
        let CsrError::Connect(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(
            msg.starts_with(&format!(
                "{addr} (server name \"istiod.istio-system.svc\"): "
            )),
            "{msg}"
        );
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
        assert!(!msg.contains("tok-value-xyz"));
    }
}
