//! Certificate authorities for the lab: each API server's serving CA, and the
//! mesh CA (root + intermediate) that the simulated istiod signs with.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// A CA that can sign. Its key never leaves the process except where a lab
/// object must hold it (the primary's `cacerts` Secret, as a real cluster does).
pub struct Ca {
    pub cert_pem: String,
    /// The chain from this CA up to its root, this CA first (PEM).
    pub chain_pem: Vec<String>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("chain_len", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}

/// A leaf certificate with its key, for a TLS server. (No Debug: the key.)
#[derive(Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, org);
    d.push(DnType::CommonName, cn);
    d
}

fn ca_params(
    cn: &str,
    org: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, org);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

impl Ca {
    /// A self-signed root valid from an hour ago for `days`.
    pub fn root(cn: &str, org: &str, days: i64) -> Ca {
        let now = OffsetDateTime::now_utc();
        Ca::root_between(
            cn,
            org,
            now - Duration::hours(1),
            now + Duration::days(days),
        )
    }

    pub fn root_between(
        cn: &str,
        org: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
        let params = ca_params(cn, org, not_before, not_after);
        let cert = params.self_signed(&key).expect("self-signed root");
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ca {
            chain_pem: vec![cert_pem.clone()],
            cert_pem,
            key_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by `self`.
    pub fn intermediate(&self, cn: &str, org: &str, days: i64) -> Ca {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
        let params = ca_params(
            cn,
            org,
            now - Duration::hours(1),
            now + Duration::days(days),
        );
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("intermediate signing");
        let cert_pem = cert.pem();
        let mut chain_pem = vec![cert_pem.clone()];
        chain_pem.extend(self.chain_pem.iter().cloned());
        Ca {
            cert_pem,
            chain_pem,
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The PEM of this CA's private key, for the lab's `cacerts` Secret only.
    pub fn key_pem_for_lab_secret(&self) -> &str {
        &self.key_pem
    }

    /// A TLS server certificate for the given DNS names and IPs.
    pub fn server_cert(&self, cn: &str, dns: &[&str], ips: &[IpAddr], days: i64) -> ServerCert {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn, "meshtrace lab");
        p.subject_alt_names = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().expect("valid DNS name")))
            .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(days);
        let cert = p
            .signed_by(&key, &self.issuer)
            .expect("server cert signing");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Sign a workload CSR as istiod's CA does: the identity comes from the
    /// authenticated caller (`san_uri`), not from the CSR.
    pub fn sign_workload_csr(
        &self,
        csr_pem: &str,
        san_uri: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<String, String> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("CSR parsing error: {e}"))?;
        let p = &mut csr.params;
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(
            san_uri
                .try_into()
                .map_err(|e| format!("bad SAN {san_uri:?}: {e}"))?,
        )];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = not_before;
        p.not_after = not_after;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| format!("signing error: {e}"))?;
        Ok(cert.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_intermediate_and_workload() {
        let root = Ca::root("root", "lab", 3650);
        let inter = root.intermediate("inter", "lab", 365);
        assert_eq!(inter.chain_pem.len(), 2);
        assert_eq!(inter.chain_pem[1], root.cert_pem);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let leaf = inter
            .sign_workload_csr(
                &csr,
                "spiffe://cluster.local/ns/a/sa/b",
                now,
                now + Duration::hours(24),
            )
            .unwrap();
        assert!(leaf.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            inter
                .sign_workload_csr("garbage", "spiffe://x/ns/a/sa/b", now, now)
                .is_err()
        );
    }
}
