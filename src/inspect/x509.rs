//! PEM and X.509: parse certificates, check the chain istiod returns
//! (leaf first, root last), and read the SPIFFE identity in the leaf.
//!
//! Nothing here does I/O. Private keys are never parsed or echoed: a
//! `PRIVATE KEY` block in the input is skipped, and error messages only quote
//! the start of an input that holds no private key.

use crate::model::Evidence;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

/// The facts of one certificate, owned (no borrowed DER).
#[derive(Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514-style distinguished name, e.g. `O=cluster.local, CN=root`.
    pub subject: String,
    pub issuer: String,
    /// Serial number as lowercase hex, no separators.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER, lowercase hex, no colons.
    pub sha256: String,
    /// `basicConstraints CA:TRUE`.
    pub is_ca: bool,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub ip_sans: Vec<String>,
    /// e.g. `ECDSA P-256`, `RSA 2048`, `Ed25519`.
    pub key_algorithm: String,
    /// e.g. `ecdsa-with-SHA256`, `sha256WithRSAEncryption`.
    pub signature_algorithm: String,
    pub der: Vec<u8>,
}

impl fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertInfo")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("sha256", &self.sha256)
            .field("is_ca", &self.is_ca)
            .field("uri_sans", &self.uri_sans)
            .field("dns_sans", &self.dns_sans)
            .field("ip_sans", &self.ip_sans)
            .field("key_algorithm", &self.key_algorithm)
            .field("signature_algorithm", &self.signature_algorithm)
            .field("der_len", &self.der.len())
            .finish()
    }
}

impl CertInfo {
    /// The certificate as evidence: names, serial, validity (RFC 3339),
    /// fingerprint, SANs, algorithms. Never the DER.
    pub fn evidence(&self) -> Evidence {
        let mut e = Evidence::new();
        e.insert("subject".into(), json!(self.subject));
        e.insert("issuer".into(), json!(self.issuer));
        e.insert("serial".into(), json!(self.serial));
        e.insert("not_before".into(), json!(rfc3339(self.not_before)));
        e.insert("not_after".into(), json!(rfc3339(self.not_after)));
        e.insert("sha256".into(), json!(self.sha256));
        e.insert("is_ca".into(), json!(self.is_ca));
        if !self.uri_sans.is_empty() {
            e.insert("uri_sans".into(), json!(self.uri_sans));
        }
        if !self.dns_sans.is_empty() {
            e.insert("dns_sans".into(), json!(self.dns_sans));
        }
        if !self.ip_sans.is_empty() {
            e.insert("ip_sans".into(), json!(self.ip_sans));
        }
        e.insert("key_algorithm".into(), json!(self.key_algorithm));
        e.insert(
            "signature_algorithm".into(),
            json!(self.signature_algorithm),
        );
        e
    }

    /// The first `spiffe://` URI SAN, if any.
    pub fn spiffe_uri(&self) -> Option<&str> {
        self.uri_sans
            .iter()
            .map(String::as_str)
            .find(|u| is_spiffe_uri(u))
    }

    /// Is the certificate valid at `now` (Unix seconds)?
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn is_spiffe_uri(u: &str) -> bool {
    u.len() >= 9 && u[..9].eq_ignore_ascii_case("spiffe://")
}

/// Why PEM or DER input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// No `CERTIFICATE` block at all. `start` quotes the input's first bytes,
    /// unless the input holds a private key (then only block labels are named).
    #[error("no CERTIFICATE PEM block found{}", describe_input(.start, .other_blocks))]
    NoCertificate {
        start: Option<String>,
        other_blocks: Vec<String>,
    },
    /// A `BEGIN` line without its matching `END` line.
    #[error("PEM block {index} ({label:?}) has no \"-----END {label}-----\" line")]
    Unterminated { index: usize, label: String },
    /// The base64 body of a certificate block does not decode.
    #[error("CERTIFICATE block {index} is not valid base64 ({reason}); it starts {start:?}")]
    Base64 {
        index: usize,
        reason: String,
        start: String,
    },
    /// The DER is not an X.509 certificate.
    #[error("{what} is not a valid X.509 certificate: {reason}")]
    Der { what: String, reason: String },
    /// More certificates than any mesh's bundle holds.
    #[error("the bundle holds {0} certificates; meshtrace reads at most {MAX_PEM_CERTS}")]
    TooMany(usize),
}

fn describe_input(start: &Option<String>, other: &[String]) -> String {
    let mut s = String::new();
    if !other.is_empty() {
        let labels: Vec<String> = other.iter().map(|l| format!("{l:?}")).collect();
        s.push_str(&format!(
            "; the input holds only other blocks: {}",
            labels.join(", ")
        ));
    }
    match start {
        Some(start) if start.is_empty() => s.push_str("; the input is empty"),
        Some(start) => s.push_str(&format!("; the input starts {start:?}")),
        None => {}
    }
    s
}

/// Quote at most this many characters of unrecognised input.
const QUOTE_CHARS: usize = 40;

fn quote_start(s: &str) -> String {
    let (mut out, cut) = super::head(s.trim_start(), QUOTE_CHARS);
    if cut {
        out.push('…');
    }
    out
}

struct PemBlock<'a> {
    label: &'a str,
    body: &'a str,
}

/// Split PEM text into blocks. Text outside blocks is ignored, as OpenSSL does.
fn pem_blocks(pem: &str) -> Result<Vec<PemBlock<'_>>, PemError> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(pos) = rest.find(BEGIN) {
        let after = &rest[pos + BEGIN.len()..];
        let Some(label_end) = after.find("-----") else {
            return Err(PemError::Unterminated {
                index: blocks.len(),
                label: String::new(),
            });
        };
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_marker) else {
            return Err(PemError::Unterminated {
                index: blocks.len(),
                label: label.to_string(),
            });
        };
        blocks.push(PemBlock {
            label,
            body: &body_start[..end],
        });
        rest = &body_start[end + end_marker.len()..];
    }
    Ok(blocks)
}

fn decode_pem_body(body: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    // RFC 1421 headers ("Proc-Type: ...") precede a blank line; certificates have none.
    let b64: String = body
        .lines()
        .filter(|l| !l.contains(':'))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| e.to_string())
}

/// The most certificates one PEM bundle may hold (trust bundles with many
/// roots have dozens).
pub const MAX_PEM_CERTS: usize = 256;

/// Every `CERTIFICATE` block of `pem`, in order. Other blocks (a private key,
/// a CSR) are skipped and never echoed.
pub fn parse_pem_chain(pem: &str) -> Result<Vec<CertInfo>, PemError> {
    let blocks = pem_blocks(pem)?;
    // Parsing is CPU work a peer controls: a bundle of thousands is no
    // mesh's, and would outlive the step's timeout.
    let count = blocks.iter().filter(|b| b.label == "CERTIFICATE").count();
    if count > MAX_PEM_CERTS {
        return Err(PemError::TooMany(count));
    }
    let mut certs = Vec::new();
    let mut others = Vec::new();
    for b in &blocks {
        if b.label != "CERTIFICATE" {
            others.push(b.label.to_string());
            continue;
        }
        let index = certs.len();
        let der = decode_pem_body(b.body).map_err(|reason| PemError::Base64 {
            index,
            reason,
            start: quote_start(b.body),
        })?;
        let info = parse_der(&der).map_err(|e| match e {
            PemError::Der { reason, .. } => PemError::Der {
                what: format!("CERTIFICATE block {index}"),
                reason,
            },
            other => other,
        })?;
        certs.push(info);
    }
    if certs.is_empty() {
        let holds_key = pem.contains("PRIVATE KEY") || others.iter().any(|l| l.contains("PRIVATE"));
        let start = if holds_key {
            None
        } else {
            Some(quote_start(pem))
        };
        return Err(PemError::NoCertificate {
            start,
            other_blocks: others,
        });
    }
    Ok(certs)
}

/// One DER-encoded certificate.
pub fn parse_der(der: &[u8]) -> Result<CertInfo, PemError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PemError::Der {
        what: "DER input".into(),
        reason: e.to_string(),
    })?;
    Ok(cert_info(&cert))
}

fn cert_info(cert: &X509Certificate<'_>) -> CertInfo {
    let der = cert.as_raw().to_vec();
    let (mut uri_sans, mut dns_sans, mut ip_sans) = (Vec::new(), Vec::new(), Vec::new());
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(u) => uri_sans.push((*u).to_string()),
                    GeneralName::DNSName(d) => dns_sans.push((*d).to_string()),
                    GeneralName::IPAddress(b) => ip_sans.push(ip_text(b)),
                    _ => {}
                }
            }
        }
    }
    CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha256: hex::encode(Sha256::digest(&der)),
        is_ca: cert.is_ca(),
        uri_sans,
        dns_sans,
        ip_sans,
        key_algorithm: key_algorithm(cert),
        signature_algorithm: signature_algorithm_name(
            &cert.signature_algorithm.algorithm.to_id_string(),
        ),
        der,
    }
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Ipv6Addr::from(a).to_string()
        }
        _ => format!("0x{}", hex::encode(b)),
    }
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            let name = match curve.as_str() {
                "1.2.840.10045.3.1.7" => "P-256".to_string(),
                "1.3.132.0.34" => "P-384".to_string(),
                "1.3.132.0.35" => "P-521".to_string(),
                "" => "unknown curve".to_string(),
                other => other.to_string(),
            };
            format!("ECDSA {name}")
        }
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(k)) => format!("RSA {}", k.key_size()),
            _ => "RSA".into(),
        },
        "1.2.840.113549.1.1.10" => "RSASSA-PSS".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        other => other.to_string(),
    }
}

fn signature_algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        other => other,
    }
    .to_string()
}

/// A SPIFFE ID of Istio's shape: `spiffe://<td>/ns/<ns>/sa/<sa>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Parse `spiffe://<td>/ns/<ns>/sa/<sa>` as Istio does. Errors quote the input.
pub fn parse_spiffe(uri: &str) -> Result<SpiffeId, String> {
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return Err(format!(
            "identity {uri:?} does not start with \"spiffe://\""
        ));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() != 5 || parts[1] != "ns" || parts[3] != "sa" {
        return Err(format!(
            "identity {uri:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        ));
    }
    if parts[0].is_empty() {
        return Err(format!("identity {uri:?} has an empty trust domain"));
    }
    if parts[2].is_empty() {
        return Err(format!("identity {uri:?} has an empty namespace"));
    }
    if parts[4].is_empty() {
        return Err(format!("identity {uri:?} has an empty service account"));
    }
    Ok(SpiffeId {
        trust_domain: parts[0].to_string(),
        namespace: parts[2].to_string(),
        service_account: parts[4].to_string(),
    })
}

/// What is wrong with an issued chain. Indexes count certificates, leaf = 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// The response held this many elements; the agent needs at least 2
    /// (it rejects shorter chains with `invalid empty CertChain`).
    TooShort(usize),
    /// An element or the trusted root could not be parsed (`what` names it).
    Unparsable {
        what: String,
        error: String,
    },
    NotYetValid {
        index: usize,
        subject: String,
        not_before: i64,
        now: i64,
    },
    Expired {
        index: usize,
        subject: String,
        not_after: i64,
        now: i64,
    },
    /// Certificate `index` is not signed by the key of certificate `index + 1`.
    BadSignature {
        index: usize,
        issuer: String,
        error: String,
    },
    /// Certificate `index` names an issuer that is not the subject of the next one.
    IssuerMismatch {
        index: usize,
        issuer: String,
        next_subject: String,
    },
    /// Certificate `index` signs the one before it but is not a CA.
    NotCa {
        index: usize,
        subject: String,
    },
    /// The chain's last certificate is not the trusted root.
    RootMismatch {
        expected_sha256: String,
        got_sha256: String,
    },
    NoSpiffeSan {
        uri_sans: Vec<String>,
    },
    BadSpiffe(String),
    TrustDomain {
        expected: String,
        got: String,
    },
    Identity {
        expected: String,
        got: String,
    },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ChainProblem::*;
        match self {
            TooShort(n) => write!(
                f,
                "the chain has {n} element(s); the agent needs the leaf and the root (at least 2) and rejects it as \"invalid empty CertChain\""
            ),
            Unparsable { what, error } => write!(f, "{what} cannot be parsed: {error}"),
            NotYetValid {
                index,
                subject,
                not_before,
                now,
            } => write!(
                f,
                "certificate {index} ({subject:?}) is not valid yet: notBefore {} is {} (now {})",
                rfc3339(*not_before),
                expiry_words(not_before - now),
                rfc3339(*now)
            ),
            Expired {
                index,
                subject,
                not_after,
                now,
            } => write!(
                f,
                "certificate {index} ({subject:?}) expired: notAfter {} was {} (now {})",
                rfc3339(*not_after),
                expiry_words(not_after - now),
                rfc3339(*now)
            ),
            BadSignature {
                index,
                issuer,
                error,
            } => write!(
                f,
                "certificate {index} is not signed by the next certificate in the chain ({issuer:?}): {error}"
            ),
            IssuerMismatch {
                index,
                issuer,
                next_subject,
            } => write!(
                f,
                "certificate {index} names issuer {issuer:?} but the next certificate is {next_subject:?} (wrong order or missing intermediate)"
            ),
            NotCa { index, subject } => {
                write!(
                    f,
                    "certificate {index} ({subject:?}) signs the one before it but is not a CA (basicConstraints CA:FALSE or absent)"
                )
            }
            RootMismatch {
                expected_sha256,
                got_sha256,
            } => write!(
                f,
                "the chain ends in root sha256 {got_sha256:?}, but the trusted root is sha256 {expected_sha256:?}"
            ),
            NoSpiffeSan { uri_sans } => {
                if uri_sans.is_empty() {
                    write!(f, "the leaf has no URI SAN; expected a spiffe:// identity")
                } else {
                    write!(
                        f,
                        "the leaf's URI SANs {uri_sans:?} hold no spiffe:// identity"
                    )
                }
            }
            BadSpiffe(e) => write!(f, "the leaf's SPIFFE identity is malformed: {e}"),
            TrustDomain { expected, got } => {
                write!(
                    f,
                    "the leaf's trust domain is {got:?}, expected {expected:?}"
                )
            }
            Identity { expected, got } => {
                write!(f, "the leaf's identity is {got:?}, expected {expected:?}")
            }
        }
    }
}

/// The outcome of [`verify_chain`].
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// Every certificate of the chain, leaf first (elements flattened).
    pub certs: Vec<CertInfo>,
    pub problems: Vec<ChainProblem>,
    /// The leaf's SPIFFE ID, when it has a well-formed one.
    pub spiffe: Option<SpiffeId>,
}

impl ChainCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The chain as evidence: each certificate, the identity, the problems.
    pub fn evidence(&self) -> Evidence {
        let mut e = Evidence::new();
        e.insert(
            "chain".into(),
            Value::Array(
                self.certs
                    .iter()
                    .map(|c| Value::Object(c.evidence()))
                    .collect(),
            ),
        );
        if let Some(id) = &self.spiffe {
            e.insert("spiffe_id".into(), json!(id.to_string()));
        }
        if !self.problems.is_empty() {
            e.insert(
                "problems".into(),
                json!(
                    self.problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                ),
            );
        }
        e
    }
}

/// Check a chain as istiod returns it (`cert_chain`: leaf first, root last;
/// an element may hold several certificates).
///
/// Each certificate must be valid at `now`, name the next one as issuer, be
/// signed by its key, and that next one must be a CA; the last certificate
/// must be (by DER) `trusted_root_pem`; the leaf must carry a SPIFFE URI SAN in
/// `expected_trust_domain`. `expected_identity`, when given, is either a full
/// `spiffe://` ID or the `<namespace>/<service-account>` shorthand.
pub fn verify_chain(
    chain_pems: &[String],
    trusted_root_pem: &str,
    expected_trust_domain: &str,
    expected_identity: Option<&str>,
    now: i64,
) -> ChainCheck {
    let mut problems = Vec::new();
    let mut certs = Vec::new();
    if chain_pems.len() < 2 {
        problems.push(ChainProblem::TooShort(chain_pems.len()));
    }
    for (i, pem) in chain_pems.iter().enumerate() {
        match parse_pem_chain(pem) {
            Ok(c) => certs.extend(c),
            Err(e) => problems.push(ChainProblem::Unparsable {
                what: format!("chain element {i}"),
                error: e.to_string(),
            }),
        }
    }

    for (i, c) in certs.iter().enumerate() {
        if now < c.not_before {
            problems.push(ChainProblem::NotYetValid {
                index: i,
                subject: c.subject.clone(),
                not_before: c.not_before,
                now,
            });
        }
        if now > c.not_after {
            problems.push(ChainProblem::Expired {
                index: i,
                subject: c.subject.clone(),
                not_after: c.not_after,
                now,
            });
        }
    }

    for i in 0..certs.len().saturating_sub(1) {
        let (child, parent) = (&certs[i], &certs[i + 1]);
        let (_, child_x) = X509Certificate::from_der(&child.der).expect("parsed before");
        let (_, parent_x) = X509Certificate::from_der(&parent.der).expect("parsed before");
        if child_x.issuer().as_raw() != parent_x.subject().as_raw() {
            problems.push(ChainProblem::IssuerMismatch {
                index: i,
                issuer: child.issuer.clone(),
                next_subject: parent.subject.clone(),
            });
        } else if let Err(e) = child_x.verify_signature(Some(parent_x.public_key())) {
            problems.push(ChainProblem::BadSignature {
                index: i,
                issuer: parent.subject.clone(),
                error: e.to_string(),
            });
        }
        if !parent.is_ca {
            problems.push(ChainProblem::NotCa {
                index: i + 1,
                subject: parent.subject.clone(),
            });
        }
    }

    match parse_pem_chain(trusted_root_pem) {
        Ok(roots) => {
            // a bundle (root rotation) may hold several roots: any one will do
            if let (Some(last), Some(root)) = (certs.last(), roots.first()) {
                if !roots.iter().any(|r| r.der == last.der) {
                    problems.push(ChainProblem::RootMismatch {
                        expected_sha256: root.sha256.clone(),
                        got_sha256: last.sha256.clone(),
                    });
                }
            }
        }
        Err(e) => problems.push(ChainProblem::Unparsable {
            what: "the trusted root".into(),
            error: e.to_string(),
        }),
    }

    let mut spiffe = None;
    if let Some(leaf) = certs.first() {
        match leaf.spiffe_uri() {
            None => problems.push(ChainProblem::NoSpiffeSan {
                uri_sans: leaf.uri_sans.clone(),
            }),
            Some(uri) => match parse_spiffe(uri) {
                Err(e) => problems.push(ChainProblem::BadSpiffe(e)),
                Ok(id) => {
                    if id.trust_domain != expected_trust_domain {
                        problems.push(ChainProblem::TrustDomain {
                            expected: expected_trust_domain.to_string(),
                            got: id.trust_domain.clone(),
                        });
                    }
                    if let Some(expected) = expected_identity {
                        let matches = if is_spiffe_uri(expected) {
                            expected == uri
                        } else {
                            let short = expected.trim_matches('/');
                            short == format!("{}/{}", id.namespace, id.service_account)
                                || short == format!("ns/{}/sa/{}", id.namespace, id.service_account)
                        };
                        if !matches {
                            problems.push(ChainProblem::Identity {
                                expected: expected.to_string(),
                                got: uri.to_string(),
                            });
                        }
                    }
                    spiffe = Some(id);
                }
            },
        }
    }

    ChainCheck {
        certs,
        problems,
        spiffe,
    }
}

/// A signed duration in short human words: `in 23h 59m`, `3d ago`, `now`.
pub fn expiry_words(seconds: i64) -> String {
    if seconds == 0 {
        return "now".into();
    }
    let words = duration_words(seconds.unsigned_abs());
    if seconds > 0 {
        format!("in {words}")
    } else {
        format!("{words} ago")
    }
}

fn duration_words(s: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;
    let join = |big: u64, bu: &str, small: u64, su: &str| {
        if small == 0 {
            format!("{big}{bu}")
        } else {
            format!("{big}{bu} {small}{su}")
        }
    };
    if s >= YEAR {
        join(s / YEAR, "y", (s % YEAR) / DAY, "d")
    } else if s >= 10 * DAY {
        format!("{}d", s / DAY)
    } else if s >= DAY {
        join(s / DAY, "d", (s % DAY) / HOUR, "h")
    } else if s >= HOUR {
        join(s / HOUR, "h", (s % HOUR) / MIN, "m")
    } else if s >= MIN {
        join(s / MIN, "m", if s < 10 * MIN { s % MIN } else { 0 }, "s")
    } else {
        format!("{s}s")
    }
}

/// Unix seconds as RFC 3339 UTC (`2025-01-02T03:04:05Z`).
pub fn rfc3339(ts: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ts) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{ts}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bundle_of_thousands_is_refused_before_parsing() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let started = std::time::Instant::now();
        let e = parse_pem_chain(&one.repeat(20_000)).unwrap_err();
        assert_eq!(e, PemError::TooMany(20_000));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    use super::*;
    use crate::lab::pki::Ca;
    use rcgen::{CertificateParams, KeyPair};
    use time::{Duration, OffsetDateTime};

    const TD: &str = "cluster.local";
    const ID: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway";

    fn csr() -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    struct Mesh {
        root: Ca,
        inter: Ca,
    }

    fn mesh() -> Mesh {
        let root = Ca::root("root.cluster.local", "cluster.local", 3650);
        let inter = root.intermediate("intermediate", "cluster.local", 365);
        Mesh { root, inter }
    }

    fn leaf(ca: &Ca, san: &str, from: Duration, to: Duration) -> String {
        let t = OffsetDateTime::now_utc();
        ca.sign_workload_csr(&csr(), san, t + from, t + to).unwrap()
    }

    fn good_leaf(ca: &Ca) -> String {
        leaf(ca, ID, Duration::minutes(-2), Duration::hours(24))
    }

    /// istiod's response shape: leaf, intermediates, root last.
    fn chain(m: &Mesh, leaf: String) -> Vec<String> {
        vec![leaf, m.inter.cert_pem.clone(), m.root.cert_pem.clone()]
    }

    #[test]
    fn good_three_cert_chain() {
        let m = mesh();
        let c = verify_chain(
            &chain(&m, good_leaf(&m.inter)),
            &m.root.cert_pem,
            TD,
            Some(ID),
            now(),
        );
        assert!(c.is_ok(), "{:?}", c.problems);
        assert_eq!(c.certs.len(), 3);
        let id = c.spiffe.clone().unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.namespace, "istio-system");
        assert_eq!(id.service_account, "istio-eastwestgateway");
        assert!(!c.certs[0].is_ca && c.certs[1].is_ca && c.certs[2].is_ca);
        assert_eq!(c.certs[0].uri_sans, vec![ID.to_string()]);
        assert_eq!(c.certs[0].key_algorithm, "ECDSA P-256");
        assert_eq!(c.certs[0].signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(c.certs[2].subject, c.certs[2].issuer);
        assert_eq!(c.certs[1].subject, "O=cluster.local, CN=intermediate");
        // the shorthand identity works too
        let c2 = verify_chain(
            &chain(&m, good_leaf(&m.inter)),
            &m.root.cert_pem,
            TD,
            Some("istio-system/istio-eastwestgateway"),
            now(),
        );
        assert!(c2.is_ok(), "{:?}", c2.problems);
        let ev = c.evidence();
        assert_eq!(ev["spiffe_id"], json!(ID));
        assert_eq!(ev["chain"].as_array().unwrap().len(), 3);
        assert!(ev.get("problems").is_none());
    }

    #[test]
    fn element_holding_intermediate_and_root_is_flattened() {
        // plug-in CA: cert-chain.pem holds intermediate + root, then istiod appends the root again
        let m = mesh();
        let both = format!("{}{}", m.inter.cert_pem, m.root.cert_pem);
        let c = verify_chain(
            &[good_leaf(&m.inter), both, m.root.cert_pem.clone()],
            &m.root.cert_pem,
            TD,
            None,
            now(),
        );
        assert!(c.is_ok(), "{:?}", c.problems);
        assert_eq!(c.certs.len(), 4);
    }

    #[test]
    fn one_element_chain_is_too_short() {
        let m = mesh();
        let c = verify_chain(&[good_leaf(&m.inter)], &m.root.cert_pem, TD, None, now());
        assert!(
            c.problems.contains(&ChainProblem::TooShort(1)),
            "{:?}",
            c.problems
        );
        assert!(
            c.problems
                .iter()
                .any(|p| matches!(p, ChainProblem::RootMismatch { .. }))
        );
        let c0 = verify_chain(&[], &m.root.cert_pem, TD, None, now());
        assert_eq!(c0.problems, vec![ChainProblem::TooShort(0)]);
        assert!(
            ChainProblem::TooShort(1)
                .to_string()
                .contains("invalid empty CertChain")
        );
    }

    #[test]
    fn wrong_root() {
        let m = mesh();
        let other = Ca::root("root.cluster.local", "cluster.local", 3650);
        let c = verify_chain(
            &chain(&m, good_leaf(&m.inter)),
            &other.cert_pem,
            TD,
            None,
            now(),
        );
        let want = ChainProblem::RootMismatch {
            expected_sha256: parse_pem_chain(&other.cert_pem).unwrap()[0].sha256.clone(),
            got_sha256: c.certs[2].sha256.clone(),
        };
        assert_eq!(c.problems, vec![want.clone()]);
        // a trust bundle holding the other root and the right one is fine
        let bundle = format!("{}{}", other.cert_pem, m.root.cert_pem);
        assert!(verify_chain(&chain(&m, good_leaf(&m.inter)), &bundle, TD, None, now()).is_ok());
        let text = want.to_string();
        assert!(text.contains(&c.certs[2].sha256), "{text}");
    }

    #[test]
    fn expired_leaf() {
        let m = mesh();
        let l = leaf(&m.inter, ID, Duration::hours(-48), Duration::hours(-24));
        let c = verify_chain(&chain(&m, l), &m.root.cert_pem, TD, None, now());
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        match &c.problems[0] {
            ChainProblem::Expired {
                index: 0,
                not_after,
                ..
            } => assert!(*not_after < now()),
            p => panic!("unexpected {p:?}"),
        }
        assert!(
            c.problems[0].to_string().contains("1d ago"),
            "{}",
            c.problems[0]
        );
    }

    #[test]
    fn not_yet_valid_leaf() {
        let m = mesh();
        let l = leaf(&m.inter, ID, Duration::hours(2), Duration::hours(26));
        let c = verify_chain(&chain(&m, l), &m.root.cert_pem, TD, None, now());
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert!(
            matches!(c.problems[0], ChainProblem::NotYetValid { index: 0, .. }),
            "{:?}",
            c.problems
        );
        // the same chain judged three hours later is fine
        let later = verify_chain(
            &chain(
                &m,
                leaf(&m.inter, ID, Duration::hours(2), Duration::hours(26)),
            ),
            &m.root.cert_pem,
            TD,
            None,
            now() + 3 * 3600,
        );
        assert!(later.is_ok(), "{:?}", later.problems);
    }

    #[test]
    fn wrong_trust_domain_and_identity() {
        let m = mesh();
        let l = leaf(
            &m.inter,
            "spiffe://other.mesh/ns/istio-system/sa/istio-eastwestgateway",
            Duration::minutes(-2),
            Duration::hours(1),
        );
        let c = verify_chain(&chain(&m, l), &m.root.cert_pem, TD, None, now());
        assert_eq!(
            c.problems,
            vec![ChainProblem::TrustDomain {
                expected: TD.into(),
                got: "other.mesh".into()
            }]
        );
        assert!(c.problems[0].to_string().contains("\"other.mesh\""));

        let c = verify_chain(
            &chain(&m, good_leaf(&m.inter)),
            &m.root.cert_pem,
            TD,
            Some("istio-system/other-sa"),
            now(),
        );
        assert_eq!(
            c.problems,
            vec![ChainProblem::Identity {
                expected: "istio-system/other-sa".into(),
                got: ID.into()
            }]
        );
    }

    #[test]
    fn leaf_without_spiffe_or_malformed() {
        let m = mesh();
        let l = leaf(
            &m.inter,
            "https://example.com/x",
            Duration::minutes(-2),
            Duration::hours(1),
        );
        let c = verify_chain(&chain(&m, l), &m.root.cert_pem, TD, None, now());
        assert_eq!(
            c.problems,
            vec![ChainProblem::NoSpiffeSan {
                uri_sans: vec!["https://example.com/x".into()]
            }]
        );
        let l = leaf(
            &m.inter,
            "spiffe://cluster.local/workload/x",
            Duration::minutes(-2),
            Duration::hours(1),
        );
        let c = verify_chain(&chain(&m, l), &m.root.cert_pem, TD, None, now());
        assert!(
            matches!(&c.problems[..], [ChainProblem::BadSpiffe(e)] if e.contains("spiffe://cluster.local/workload/x")),
            "{:?}",
            c.problems
        );
        assert!(c.spiffe.is_none());
    }

    #[test]
    fn swapped_order_is_an_issuer_mismatch() {
        let m = mesh();
        let l = good_leaf(&m.inter);
        let c = verify_chain(
            &[m.inter.cert_pem.clone(), l, m.root.cert_pem.clone()],
            &m.root.cert_pem,
            TD,
            None,
            now(),
        );
        assert!(
            c.problems
                .iter()
                .any(|p| matches!(p, ChainProblem::IssuerMismatch { index: 0, .. })),
            "{:?}",
            c.problems
        );
        // the leaf is now in the middle, signing nothing and not a CA
        assert!(
            c.problems.contains(&ChainProblem::NotCa {
                index: 1,
                subject: c.certs[1].subject.clone()
            }),
            "{:?}",
            c.problems
        );
        // the first certificate is the intermediate: no SPIFFE SAN
        assert!(
            c.problems
                .iter()
                .any(|p| matches!(p, ChainProblem::NoSpiffeSan { .. }))
        );
    }

    #[test]
    fn same_names_other_key_is_a_bad_signature() {
        let m = mesh();
        // an impostor root with the very same subject but another key
        let impostor = Ca::root("root.cluster.local", "cluster.local", 3650);
        let c = verify_chain(
            &[
                good_leaf(&m.inter),
                m.inter.cert_pem.clone(),
                impostor.cert_pem.clone(),
            ],
            &impostor.cert_pem,
            TD,
            None,
            now(),
        );
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert!(
            matches!(&c.problems[0], ChainProblem::BadSignature { index: 1, .. }),
            "{:?}",
            c.problems
        );
    }

    #[test]
    fn non_ca_issuer_is_flagged() {
        let m = mesh();
        let l1 = good_leaf(&m.inter);
        // two leaves in a row: the second stands where an issuer must be, and is no CA
        let c = verify_chain(
            &[l1.clone(), l1, m.root.cert_pem.clone()],
            &m.root.cert_pem,
            TD,
            None,
            now(),
        );
        assert!(
            c.problems
                .iter()
                .any(|p| matches!(p, ChainProblem::NotCa { index: 1, .. })),
            "{:?}",
            c.problems
        );
    }

    #[test]
    fn unparsable_element_and_root() {
        let m = mesh();
        let c = verify_chain(
            &[good_leaf(&m.inter), "garbage".into()],
            "also garbage",
            TD,
            None,
            now(),
        );
        assert!(c.problems.iter().any(
            |p| matches!(p, ChainProblem::Unparsable { what, .. } if what == "chain element 1")
        ));
        assert!(c.problems.iter().any(
            |p| matches!(p, ChainProblem::Unparsable { what, .. } if what == "the trusted root")
        ));
    }

    #[test]
    fn pem_parsing_skips_keys_and_never_echoes_them() {
        let m = mesh();
        let key = m.root.key_pem_for_lab_secret().to_string();
        let with_key = format!("{key}{}", m.root.cert_pem);
        let certs = parse_pem_chain(&with_key).unwrap();
        assert_eq!(certs.len(), 1);

        let err = parse_pem_chain(&key).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("PRIVATE KEY"), "{text}");
        let body_line = key.lines().nth(1).unwrap();
        assert!(!text.contains(body_line), "{text}");
        assert!(!format!("{err:?}").contains(body_line));

        let err = parse_pem_chain("hello world, this is not PEM").unwrap_err();
        assert!(
            err.to_string().contains("\"hello world, this is not PEM\""),
            "{err}"
        );
        let err = parse_pem_chain("").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");

        let err = parse_pem_chain("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(matches!(err, PemError::Base64 { index: 0, .. }), "{err:?}");
        assert!(err.to_string().contains("!!!!"));
        let err = parse_pem_chain("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(matches!(err, PemError::Der { .. }), "{err:?}");
        let err = parse_pem_chain("-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err();
        assert!(matches!(err, PemError::Unterminated { .. }), "{err:?}");
    }

    #[test]
    fn cert_info_facts_and_evidence() {
        let root = Ca::root("api", "lab", 30);
        let server = root.server_cert(
            "api",
            &["kubernetes.default.svc"],
            &["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            10,
        );
        let c = &parse_pem_chain(&server.cert_pem).unwrap()[0];
        assert_eq!(c.dns_sans, vec!["kubernetes.default.svc"]);
        assert_eq!(c.ip_sans, vec!["10.0.0.1", "::1"]);
        assert_eq!(c.sha256.len(), 64);
        assert!(!c.sha256.contains(':'));
        assert!(c.valid_at(now()));
        assert!(!c.valid_at(now() + 11 * 86400));
        let ev = c.evidence();
        assert!(ev.get("der").is_none());
        let nb = ev["not_before"].as_str().unwrap();
        assert!(nb.ends_with('Z') && nb.len() == 20, "{nb}");
        assert!(!format!("{c:?}").contains("der:"));
        let key_line = server.key_pem.lines().nth(1).unwrap();
        assert!(!serde_json::to_string(&ev).unwrap().contains(key_line));
        // DER round trip
        assert_eq!(&parse_der(&c.der).unwrap(), c);
        assert!(parse_der(b"nope").is_err());
    }

    #[test]
    fn spiffe_parsing() {
        assert_eq!(
            parse_spiffe("spiffe://td.example/ns/a/sa/b").unwrap(),
            SpiffeId {
                trust_domain: "td.example".into(),
                namespace: "a".into(),
                service_account: "b".into()
            }
        );
        assert_eq!(
            parse_spiffe("spiffe://td/ns/a/sa/b").unwrap().to_string(),
            "spiffe://td/ns/a/sa/b"
        );
        for bad in [
            "http://td/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns//sa/b",
            "spiffe://td/ns/a/sa/",
            "spiffe://td/ns/a/sa/b/c",
            "spiffe://td/sa/b/ns/a",
            "spiffe://td",
        ] {
            let e = parse_spiffe(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn expiry_words_are_short() {
        assert_eq!(expiry_words(0), "now");
        assert_eq!(expiry_words(45), "in 45s");
        assert_eq!(expiry_words(-90), "1m 30s ago");
        assert_eq!(expiry_words(25 * 60), "in 25m");
        assert_eq!(expiry_words(86399), "in 23h 59m");
        assert_eq!(expiry_words(2 * 3600), "in 2h");
        assert_eq!(expiry_words(-3 * 86400), "3d ago");
        assert_eq!(expiry_words(86400 + 5 * 3600), "in 1d 5h");
        assert_eq!(expiry_words(45 * 86400), "in 45d");
        assert_eq!(expiry_words(3650 * 86400), "in 10y");
        assert_eq!(expiry_words(400 * 86400), "in 1y 35d");
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
