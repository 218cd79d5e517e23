//! A TLS probe: resolve, connect and handshake the way a client of the remote
//! API server or of istiod:15012 would, and report what happened at each
//! stage. Verification failures still yield the chain the server presented,
//! because "which certificate did it show me" is the first question when
//! a handshake is refused.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct TlsProbe {
    /// host:port
    pub addr: String,
    /// The name the certificate must be valid for (DNS name or IP literal).
    pub server_name: String,
    pub roots_pem: String,
    /// Budget for DNS + TCP + TLS together.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct TlsReport {
    pub resolved: Vec<SocketAddr>,
    pub connected_to: Option<SocketAddr>,
    /// DNS or TCP failure ("connection refused", "timed out after 5s", ...).
    pub tcp_error: Option<String>,
    /// What the server presented, leaf first, even when verification failed.
    pub peer_chain_der: Vec<Vec<u8>>,
    /// Certificate verification failure in plain words.
    pub verify_error: Option<String>,
    /// Any other handshake failure after TCP connected (alert from the peer,
    /// no common protocol, handshake timeout, bad server name). Kept apart
    /// from `verify_error` so a caller can tell "wrong cert" from "no TLS".
    pub tls_error: Option<String>,
    pub protocol: Option<String>,
    pub cipher: Option<String>,
    /// Negotiated ALPN protocol ("h2", "http/1.1"); None when none agreed.
    pub alpn: Option<String>,
    /// Duration of the TLS handshake itself (0 when it never started).
    pub handshake_ms: f64,
}

impl TlsReport {
    /// True when TCP connected, the chain verified and the handshake finished.
    pub fn ok(&self) -> bool {
        self.tcp_error.is_none()
            && self.verify_error.is_none()
            && self.tls_error.is_none()
            && self.protocol.is_some()
    }
}

/// Records the presented chain, then lets webpki decide. The recorded error
/// is kept in our words because the io::Error the handshake returns only
/// says an alert was sent.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    /// Why `inner` could not be built (bad roots); reported as the verify error.
    roots_problem: Option<String>,
    seen_chain: Mutex<Vec<Vec<u8>>>,
    seen_error: Mutex<Option<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        if let Ok(mut g) = self.seen_chain.lock() {
            *g = chain;
        }
        let result = match (&self.inner, &self.roots_problem) {
            (Some(v), _) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            (None, problem) => Err(rustls::Error::General(
                problem.clone().unwrap_or_else(|| "no trust roots".into()),
            )),
        };
        if let Err(e) = &result {
            let words = match (&self.inner, e) {
                (None, rustls::Error::General(s)) => s.clone(),
                _ => describe_verify_error(e, end_entity.as_ref()),
            };
            if let Ok(mut g) = self.seen_error.lock() {
                *g = Some(words);
            }
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn fmt_unix(t: UnixTime) -> String {
    let secs = t.as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix {secs}"))
}

/// The DNS names and IPs a certificate is valid for, read from its SAN
/// extension, for "valid for X, Y" messages.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A rustls error in words, without the server's certificate at hand (for
/// errors that surface through another client, such as kube's).
pub fn rustls_words(e: &rustls::Error) -> String {
    describe_verify_error(e, &[])
}

fn describe_verify_error(e: &rustls::Error, leaf_der: &[u8]) -> String {
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer => {
                "certificate signed by unknown authority (the chain does not lead to any of the given roots)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let expected = match ce {
                    CertificateError::NotValidForNameContext { expected, .. } => server_name_str(expected),
                    _ => String::from("the requested name"),
                };
                let names = cert_names(leaf_der);
                if leaf_der.is_empty() {
                    format!("certificate is not valid for {expected}")
                } else if names.is_empty() {
                    format!("certificate is not valid for {expected}: it names no DNS name or IP")
                } else {
                    format!("certificate is not valid for {expected}: it is valid for {}", names.join(", "))
                }
            }
            CertificateError::ExpiredContext { time, not_after } => {
                format!("certificate has expired: it was valid until {}, now is {}", fmt_unix(*not_after), fmt_unix(*time))
            }
            CertificateError::Expired => "certificate has expired".into(),
            CertificateError::NotValidYetContext { time, not_before } => format!(
                "certificate is not valid yet: it is valid from {}, now is {} (clock skew?)",
                fmt_unix(*not_before),
                fmt_unix(*time)
            ),
            CertificateError::NotValidYet => "certificate is not valid yet (clock skew?)".into(),
            CertificateError::BadSignature => "certificate has a bad signature".into(),
            CertificateError::BadEncoding => "certificate is not valid DER".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate is not valid for TLS server authentication (extended key usage)".into()
            }
            CertificateError::Other(o) => {
                // webpki's reasons arrive as Debug names; say the common ones.
                let why = o.to_string();
                if why.contains("CaUsedAsEndEntity") {
                    "the server presents a CA certificate as its own (a self-signed CA is not a server certificate)".into()
                } else if why.contains("UnsupportedSignatureAlgorithm") {
                    "certificate is signed with an algorithm meshtrace (and Go's TLS) does not accept".into()
                } else {
                    format!("certificate rejected ({})", why.trim_matches(|c: char| !c.is_alphanumeric()))
                }
            }
            other => format!("certificate rejected: {other}"),
        },
        other => format!("TLS failed: {other}"),
    }
}

fn server_name_str(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// Parse roots; Err explains in words why they cannot be used.
fn root_store(roots_pem: &str) -> Result<RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let head: String = roots_pem.trim().chars().take(40).collect();
    let mut store = RootCertStore::empty();
    let mut found = 0usize;
    let mut rejected = Vec::new();
    for item in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        match item {
            Ok(der) => {
                found += 1;
                if let Err(e) = store.add(der) {
                    rejected.push(e.to_string());
                }
            }
            Err(e) => {
                return Err(format!(
                    "trust roots are not valid PEM ({e}); they begin {head:?}"
                ));
            }
        }
    }
    if found == 0 {
        return Err(format!(
            "trust roots contain no certificate; they begin {head:?}"
        ));
    }
    if store.is_empty() {
        return Err(format!(
            "no usable certificate in the trust roots: {}",
            rejected.join("; ")
        ));
    }
    Ok(store)
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Probe `p.addr`. Never panics; the whole probe stays within `p.timeout`.
/// The platform's roots as one PEM bundle (what Go's and the agent's
/// `SYSTEM` roots are: the OS store; `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured).
pub fn platform_roots_pem() -> Result<String, String> {
    use base64::Engine as _;
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(if why.is_empty() {
            "this machine has no platform roots".into()
        } else {
            format!("cannot read the platform roots: {}", why.join("; "))
        });
    }
    let mut pem = String::new();
    for c in found.certs.iter().take(4096) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(pem)
}

pub async fn probe(p: &TlsProbe) -> TlsReport {
    // istiod's gRPC (grpc-go) and tonic both insist on h2 over ALPN; a
    // kube API server speaks either, so offer both and record the choice.
    connect(p, &[b"h2", b"http/1.1"]).await.0
}

/// An open TLS connection, for a caller that goes on to speak over it.
pub type TlsConn = tokio_rustls::client::TlsStream<TcpStream>;

/// [`probe`], offering `alpn`, and keeping the connection when the
/// handshake verified (kube-apiserver offers only `http/1.1` to a webhook).
pub async fn connect(p: &TlsProbe, alpn: &[&[u8]]) -> (TlsReport, Option<TlsConn>) {
    let mut report = TlsReport::default();
    let mut stage = Stage::Dns;
    let outcome = tokio::time::timeout(p.timeout, run(p, alpn, &mut report, &mut stage)).await;
    let timed_out = outcome.is_err();
    let conn = outcome.ok().flatten();
    if timed_out {
        let msg = format!("timed out after {}", fmt_dur(p.timeout));
        match stage {
            Stage::Dns => report.tcp_error = Some(format!("DNS lookup of {} {msg}", p.addr)),
            Stage::Tcp => report.tcp_error = Some(format!("TCP connect {msg}")),
            Stage::Tls(t0) => {
                report.handshake_ms = t0.elapsed().as_secs_f64() * 1000.0;
                report.tls_error = Some(format!(
                    "TLS handshake {msg} (the server accepted TCP but did not answer the ClientHello)"
                ));
            }
        }
    }
    (report, conn)
}

#[derive(Clone, Copy)]
enum Stage {
    Dns,
    Tcp,
    Tls(Instant),
}

async fn run(
    p: &TlsProbe,
    alpn: &[&[u8]],
    report: &mut TlsReport,
    stage: &mut Stage,
) -> Option<TlsConn> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Check inputs that do not need the network first, so a bad server name is
    // reported even when the host is down.
    let server_name = match ServerName::try_from(p.server_name.clone()) {
        Ok(n) => n,
        Err(e) => {
            report.tls_error = Some(format!(
                "server name {:?} is neither a DNS name nor an IP: {e}",
                p.server_name
            ));
            return None;
        }
    };
    let (inner, roots_problem) = match root_store(&p.roots_pem) {
        Ok(store) => {
            match WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
            {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(format!("trust roots cannot be used: {e}"))),
            }
        }
        Err(e) => (None, Some(e)),
    };

    *stage = Stage::Dns;
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(p.addr.as_str()).await {
        Ok(it) => it.collect(),
        Err(e) => {
            report.tcp_error = Some(format!("cannot resolve {}: {e}", p.addr));
            return None;
        }
    };
    report.resolved = addrs.clone();
    if addrs.is_empty() {
        report.tcp_error = Some(format!("{} resolved to no address", p.addr));
        return None;
    }

    *stage = Stage::Tcp;
    let mut tcp = None;
    let mut errors = Vec::new();
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                tcp = Some((s, *a));
                break;
            }
            Err(e) => errors.push(format!("{a}: {}", io_words(&e))),
        }
    }
    let Some((tcp, peer)) = tcp else {
        report.tcp_error = Some(errors.join("; "));
        return None;
    };
    report.connected_to = Some(peer);
    let _ = tcp.set_nodelay(true);

    let verifier = Arc::new(RecordingVerifier {
        inner,
        roots_problem,
        seen_chain: Mutex::new(Vec::new()),
        seen_error: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => {
            let mut c = b
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
            c
        }
        Err(e) => {
            report.tls_error = Some(format!("TLS client configuration failed: {e}"));
            return None;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let t0 = Instant::now();
    *stage = Stage::Tls(t0);
    let result = connector.connect(server_name, tcp).await;
    report.handshake_ms = t0.elapsed().as_secs_f64() * 1000.0;
    report.peer_chain_der = verifier
        .seen_chain
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    let verify_error = verifier.seen_error.lock().ok().and_then(|g| g.clone());
    match result {
        Ok(stream) => {
            let (_, conn) = stream.get_ref();
            report.protocol = conn
                .protocol_version()
                .map(|v| format!("{v:?}").replace('_', "."));
            report.cipher = conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()));
            report.alpn = conn
                .alpn_protocol()
                .map(|a| String::from_utf8_lossy(a).into_owned());
            report.verify_error = verify_error;
            Some(stream)
        }
        Err(e) => {
            if verify_error.is_some() {
                report.verify_error = verify_error;
            } else {
                report.tls_error = Some(format!("TLS handshake failed: {}", io_words(&e)));
            }
            None
        }
    }
}

/// io errors in words a person recognises ("connection refused").
fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by peer".into(),
        TimedOut => "timed out".into(),
        UnexpectedEof => "the server closed the connection during the handshake".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::pki::Ca;
    use std::net::{IpAddr, Ipv4Addr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A rustls server that completes handshakes and offers h2.
    async fn tls_server(cert_pem: &str, key_pem: &str) -> SocketAddr {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        let mut buf = [0u8; 16];
                        let _ = tls.read(&mut buf).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    fn setup() -> (Ca, String, String, String) {
        crate::install_crypto_provider();
        let root = Ca::root("probe root", "lab", 30);
        let inter = root.intermediate("probe inter", "lab", 30);
        let sc = inter.server_cert(
            "istiod",
            &["istiod.istio-system.svc", "istiod-remote.istio-system.svc"],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            30,
        );
        // The server presents leaf + intermediate, as istiod does.
        let chain = format!("{}{}", sc.cert_pem, inter.cert_pem);
        (root, chain, sc.key_pem, sc.cert_pem)
    }

    fn der_of(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn handshake_ok_by_dns_name_and_ip() {
        let (root, chain, key, leaf) = setup();
        let addr = tls_server(&chain, &key).await;
        for name in ["istiod.istio-system.svc", "127.0.0.1"] {
            let r = probe(&TlsProbe {
                addr: addr.to_string(),
                server_name: name.into(),
                roots_pem: root.cert_pem.clone(),
                timeout: Duration::from_secs(5),
            })
            .await;
            assert!(r.ok(), "{name}: {r:?}");
            assert_eq!(r.resolved, vec![addr]);
            assert_eq!(r.connected_to, Some(addr));
            assert_eq!(r.peer_chain_der.len(), 2);
            assert_eq!(r.peer_chain_der[0], der_of(&leaf));
            assert_eq!(r.protocol.as_deref(), Some("TLSv1.3"));
            assert!(
                r.cipher.as_deref().unwrap().starts_with("TLS13_"),
                "{:?}",
                r.cipher
            );
            assert_eq!(r.alpn.as_deref(), Some("h2"));
            assert!(r.handshake_ms > 0.0);
        }
    }

    #[tokio::test]
    async fn unknown_authority_still_captures_chain() {
        let (_root, chain, key, leaf) = setup();
        let addr = tls_server(&chain, &key).await;
        let other = Ca::root("someone else", "lab", 30);
        let r = probe(&TlsProbe {
            addr: addr.to_string(),
            server_name: "istiod.istio-system.svc".into(),
            roots_pem: other.cert_pem.clone(),
            timeout: Duration::from_secs(5),
        })
        .await;
        assert!(!r.ok());
        assert_eq!(r.tcp_error, None);
        assert_eq!(r.tls_error, None);
        assert!(
            r.verify_error
                .as_deref()
                .unwrap()
                .contains("unknown authority"),
            "{r:?}"
        );
        assert_eq!(r.peer_chain_der.len(), 2);
        assert_eq!(r.peer_chain_der[0], der_of(&leaf));
        assert_eq!(r.protocol, None);
    }

    #[tokio::test]
    async fn name_mismatch_quotes_valid_names() {
        let (root, chain, key, _) = setup();
        let addr = tls_server(&chain, &key).await;
        let r = probe(&TlsProbe {
            addr: addr.to_string(),
            server_name: "istiod.other.svc".into(),
            roots_pem: root.cert_pem.clone(),
            timeout: Duration::from_secs(5),
        })
        .await;
        assert_eq!(
            r.verify_error.as_deref(),
            Some(
                "certificate is not valid for istiod.other.svc: it is valid for istiod.istio-system.svc, istiod-remote.istio-system.svc, 127.0.0.1"
            ),
            "{r:?}"
        );
        assert_eq!(r.peer_chain_der.len(), 2);
    }

    #[tokio::test]
    async fn expired_certificate() {
        crate::install_crypto_provider();
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let now = time::OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf_params = CertificateParams::new(vec!["old.test".to_string()]).unwrap();
        leaf_params.not_before = now - time::Duration::days(20);
        leaf_params.not_after = now - time::Duration::days(10);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let addr = tls_server(&leaf.pem(), &leaf_key.serialize_pem()).await;
        let r = probe(&TlsProbe {
            addr: addr.to_string(),
            server_name: "old.test".into(),
            roots_pem: ca_cert.pem(),
            timeout: Duration::from_secs(5),
        })
        .await;
        let e = r.verify_error.unwrap_or_default();
        assert!(
            e.starts_with("certificate has expired: it was valid until "),
            "{e}"
        );
        let until = (now - time::Duration::days(10)).year().to_string();
        assert!(e.contains(&until), "{e}");
        assert_eq!(r.peer_chain_der.len(), 1);
    }

    #[tokio::test]
    async fn bad_roots_pem_quotes_its_start() {
        let (_root, chain, key, _) = setup();
        let addr = tls_server(&chain, &key).await;
        let r = probe(&TlsProbe {
            addr: addr.to_string(),
            server_name: "istiod.istio-system.svc".into(),
            roots_pem: "this is not a certificate at all, it is a sentence that goes on".into(),
            timeout: Duration::from_secs(5),
        })
        .await;
        assert_eq!(
            r.verify_error.as_deref(),
            Some(
                "trust roots contain no certificate; they begin \"this is not a certificate at all, it is \""
            )
        );
        // The server's chain is still captured.
        assert_eq!(r.peer_chain_der.len(), 2);
    }

    #[tokio::test]
    async fn refused_port() {
        crate::install_crypto_provider();
        // Bind then drop to get a port nobody listens on.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = probe(&TlsProbe {
            addr: addr.to_string(),
            server_name: "istiod.istio-system.svc".into(),
            roots_pem: String::new(),
            timeout: Duration::from_secs(5),
        })
        .await;
        assert_eq!(r.tcp_error, Some(format!("{addr}: connection refused")));
        assert_eq!(r.connected_to, None);
        assert!(r.peer_chain_der.is_empty());
    }

    #[tokio::test]
    async fn silent_listener_times_out() {
        crate::install_crypto_provider();
        // The kernel completes the TCP handshake from the backlog; nobody ever reads.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let started = Instant::now();
        let r = probe(&TlsProbe {
            addr: addr.to_string(),
            server_name: "istiod.istio-system.svc".into(),
            roots_pem: String::new(),
            timeout: Duration::from_millis(300),
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(r.connected_to, Some(addr));
        assert_eq!(
            r.tls_error.as_deref(),
            Some(
                "TLS handshake timed out after 300ms (the server accepted TCP but did not answer the ClientHello)"
            )
        );
        assert!(r.handshake_ms >= 250.0, "{}", r.handshake_ms);
        drop(l);
    }

    #[tokio::test]
    async fn dns_failure_is_a_tcp_error() {
        crate::install_crypto_provider();
        let r = probe(&TlsProbe {
            addr: "no-such-host.invalid:15012".into(),
            server_name: "istiod.istio-system.svc".into(),
            roots_pem: String::new(),
            timeout: Duration::from_secs(5),
        })
        .await;
        let e = r.tcp_error.unwrap();
        assert!(
            e.starts_with("cannot resolve no-such-host.invalid:15012: ")
                || e.contains("DNS lookup"),
            "{e}"
        );
        assert!(r.resolved.is_empty());
    }
}
