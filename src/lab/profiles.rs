//! Install profiles: shapes of a healthy primary-remote mesh other than the
//! one the lab was built around (docs/profiles.md). The lab and the real
//! test bed (`tests/testbed/up --profile NAME`) build each the same way.

/// One install shape. `Default` is today's lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum Profile {
    #[default]
    Default,
    Revision,
    NoCaAddr,
    CertManagerCa,
    Audiences,
    TrustDomain,
    ExternalIstiod,
}

/// The public name istiod is reached by in `external-istiod`.
pub const EXTERNAL_HOST: &str = "istiod.mesh-external.test";

impl Profile {
    pub const ALL: &'static [Profile] = &[
        Profile::Default,
        Profile::Revision,
        Profile::NoCaAddr,
        Profile::CertManagerCa,
        Profile::Audiences,
        Profile::TrustDomain,
        Profile::ExternalIstiod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Revision => "revision",
            Profile::NoCaAddr => "no-ca-addr",
            Profile::CertManagerCa => "cert-manager-ca",
            Profile::Audiences => "audiences",
            Profile::TrustDomain => "trust-domain",
            Profile::ExternalIstiod => "external-istiod",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            Profile::Default => {
                "istiod revision default, plug-in CA (*.pem), remote Service istiod, CA_ADDR istiod.istio-system.svc:15012"
            }
            Profile::Revision => {
                "istiod revision canary (Deployment istiod-canary, mesh config istio-canary); remote Service istiod-canary; gateway labelled istio.io/rev=canary with CA_ADDR istiod-canary.istio-system.svc:15012"
            }
            Profile::NoCaAddr => {
                "the gateway sets no CA_ADDR: the agent dials PROXY_CONFIG's discoveryAddress istiod-remote.istio-system.svc:15012 (remote Service istiod-remote)"
            }
            Profile::CertManagerCa => {
                "the primary's cacerts in cert-manager's kubernetes.io/tls form (tls.crt, tls.key, ca.crt)"
            }
            Profile::Audiences => {
                "istiod's TOKEN_AUDIENCES=istio-ca,mesh.example; the gateway's istio-token is for mesh.example"
            }
            Profile::TrustDomain => {
                "mesh config trustDomain mesh.example with alias cluster.local; the gateway's TRUST_DOMAIN=mesh.example"
            }
            Profile::ExternalIstiod => {
                "the gateway dials istiod.mesh-external.test:15012 with CA_ROOT_CA=SYSTEM; istiod serves a certificate from a public CA; no istiod Service in the remote"
            }
        }
    }

    /// istiod's revision and Deployment.
    pub fn revision(self) -> &'static str {
        match self {
            Profile::Revision => "canary",
            _ => "default",
        }
    }
    pub fn istiod_deployment(self) -> &'static str {
        match self {
            Profile::Revision => "istiod-canary",
            _ => "istiod",
        }
    }
    /// The mesh config ConfigMap of istiod's revision.
    pub fn mesh_config_map(self) -> &'static str {
        match self {
            Profile::Revision => "istio-canary",
            _ => "istio",
        }
    }
    /// The remote's selector-less Service the gateway's address names.
    pub fn remote_service(self) -> Option<&'static str> {
        match self {
            Profile::Revision => Some("istiod-canary"),
            Profile::NoCaAddr => Some("istiod-remote"),
            Profile::ExternalIstiod => None,
            _ => Some("istiod"),
        }
    }
    /// The gateway's CA_ADDR (None: it sets none).
    pub fn ca_addr(self) -> Option<String> {
        match self {
            Profile::NoCaAddr => None,
            Profile::ExternalIstiod => Some(format!("{EXTERNAL_HOST}:15012")),
            _ => Some(format!(
                "{}.istio-system.svc:15012",
                self.remote_service().unwrap_or("istiod")
            )),
        }
    }
    pub fn token_audiences(self) -> &'static str {
        match self {
            Profile::Audiences => "istio-ca,mesh.example",
            _ => "istio-ca",
        }
    }
    /// The audience of the gateway's projected istio-token.
    pub fn gateway_audience(self) -> &'static str {
        match self {
            Profile::Audiences => "mesh.example",
            _ => "istio-ca",
        }
    }
    pub fn trust_domain(self) -> &'static str {
        match self {
            Profile::TrustDomain => "mesh.example",
            _ => "cluster.local",
        }
    }
    /// The mesh config YAML istiod reads.
    pub fn mesh_config(self, trust_domain: &str) -> String {
        let mut m = format!("trustDomain: {trust_domain}\n");
        if self == Profile::TrustDomain {
            m.push_str("trustDomainAliases:\n- cluster.local\n");
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_round_trip_through_clap() {
        for p in Profile::ALL {
            assert_eq!(Profile::from_str(p.name(), false).unwrap(), *p);
            assert!(!p.about().is_empty());
        }
        assert_eq!(Profile::ALL.len(), Profile::value_variants().len());
    }
}
