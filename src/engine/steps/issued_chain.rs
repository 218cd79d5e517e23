//! `issued-chain`: the chain istiod returned, verified offline as the gateway
//! and its peers will use it: leaf, intermediates, root last
//! (security/pkg/server/ca/server.go appends the root), to the remote's
//! `istio-ca-root-cert`, for the gateway's SPIFFE identity.

use super::Settings;
use super::istiod::expected_identity;
use crate::engine::{Ctx, Outcome};
use crate::findings::{Finding, shell_word};
use crate::inspect::x509::{self, ChainProblem, rfc3339};
use crate::model::StepId;

crate::causes! { StepId::IssuedChain;
    TOO_LONG = "too-long", "istiod returned more certificates than any Istio chain has";
    INCOMPLETE = "incomplete", "istiod returned the leaf without the root";
    NOT_YET_VALID = "not-yet-valid", "a certificate of the chain is not valid yet (clock skew)";
    EXPIRED = "expired", "a certificate of the chain has expired";
    BROKEN = "broken", "the chain does not link up (issuer, signature, CA flag or encoding)";
    ROOT_MISMATCH = "root-mismatch", "the chain ends in another root than the remote trusts";
    NO_SPIFFE_ID = "no-spiffe-id", "the leaf has no well-formed SPIFFE identity";
    WRONG_TRUST_DOMAIN = "wrong-trust-domain", "the leaf's trust domain is not the one the gateway expects";
    WRONG_IDENTITY = "wrong-identity", "the leaf's identity is not the gateway's service account";
}

/// The longest issued chain meshtrace verifies.
const MAX_CHAIN: usize = 16;

/// What the step reads: all from earlier steps, no I/O of its own.
#[derive(Debug, Clone)]
pub struct ChainFacts {
    /// As istiod returned it, leaf first.
    pub chain: Vec<String>,
    /// The remote's `istio-ca-root-cert`.
    pub root_pem: String,
    pub trust_domain: String,
    /// Where the trust domain came from.
    pub trust_domain_from: &'static str,
    /// The mesh's trustDomain as istiod reads it (the revision's mesh config
    /// from control-plane, else the primary's ConfigMap istio).
    pub mesh_trust_domain: Option<String>,
    /// The mesh's trustDomainAliases: domains istiod treats as the same
    /// identity (spiffe.ExpandWithTrustDomains, pilot/pkg/model/push_context.go;
    /// pilot/pkg/security/trustdomain/bundle.go).
    pub trust_domain_aliases: Vec<String>,
    pub identity: String,
    /// istiod's Deployment in the primary, when csr could name it.
    pub istiod_deployment: Option<String>,
    /// The gateway's Deployment, namespace and container (for a fix that
    /// aligns its TRUST_DOMAIN with the mesh).
    pub gateway_deployment: Option<(String, String, String)>,
}

/// None when csr returned no chain.
pub fn gather(ctx: &Ctx) -> Option<ChainFacts> {
    let f = ctx.facts();
    let chain = f.chain.clone()?;
    let gw = f.gateway.clone().unwrap_or_default();
    let mesh_td = f
        .istiod_settings
        .as_ref()
        .map(|s| s.trust_domain.value.clone())
        .or_else(|| f.trust_domain.clone());
    let aliases = f
        .istiod_settings
        .as_ref()
        .map(|s| s.trust_domain_aliases.clone())
        .unwrap_or_default();
    let (identity, trust_domain, trust_domain_from) = expected_identity(
        gw.trust_domain.as_deref(),
        mesh_td.as_deref(),
        &gw.namespace,
        &gw.service_account,
    );
    Some(ChainFacts {
        chain,
        root_pem: f.remote_root_pem.clone().unwrap_or_default(),
        trust_domain,
        trust_domain_from,
        mesh_trust_domain: mesh_td,
        trust_domain_aliases: aliases,
        identity,
        istiod_deployment: f.istiod_deployment.clone(),
        gateway_deployment: gw
            .deployment
            .as_ref()
            .and_then(|d| d.metadata.name.clone())
            .map(|d| (gw.namespace.clone(), d, gw.container.clone())),
    })
}

pub async fn run(ctx: &Ctx) -> Outcome {
    match gather(ctx) {
        Some(facts) => judge(&facts, &Settings::of(ctx)),
        None => Outcome::new().blocked(StepId::Csr, "no certificate chain"),
    }
}

pub fn judge(f: &ChainFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    if f.chain.len() > MAX_CHAIN {
        return out.failing(
            Finding::new(&TOO_LONG, format!("istiod returned {} certificates", f.chain.len())).note(
                "an Istio chain is the leaf, the plug-in CA's intermediates (cacerts cert-chain.pem) and the root: a handful. Check what answers on istiod's address",
            ),
            format!(
                "{} certificates in the answer; meshtrace verifies at most {MAX_CHAIN}",
                f.chain.len()
            ),
        );
    }
    let mut check = x509::verify_chain(
        &f.chain,
        &f.root_pem,
        &f.trust_domain,
        Some(&f.identity),
        s.now,
    );
    // The gateway's TRUST_DOMAIN is an alias of the mesh's, and istiod
    // signed in the mesh's: istiod treats both as one identity.
    if let Some(ChainProblem::TrustDomain { expected, got }) = check.problems.first()
        && f.mesh_trust_domain.as_deref() == Some(got.as_str())
        && f.trust_domain_aliases.iter().any(|a| a == expected)
    {
        let identity = f.identity.replacen(
            &format!("spiffe://{expected}/"),
            &format!("spiffe://{got}/"),
            1,
        );
        let again = x509::verify_chain(&f.chain, &f.root_pem, got, Some(&identity), s.now);
        out.ev(
            "trust_domain_alias",
            format!(
                "the gateway expects {expected:?} ({}), istiod signs in the mesh's trustDomain {got:?}, and {expected:?} is among the mesh's trustDomainAliases {}: istiod treats both domains as one identity (spiffe.ExpandWithTrustDomains, pilot/pkg/model/push_context.go), so this is no failure",
                f.trust_domain_from,
                super::quote_list(&f.trust_domain_aliases)
            ),
        );
        check = again;
    }
    out.ev(
        "chain",
        check.certs.iter().map(|c| c.evidence()).collect::<Vec<_>>(),
    )
    .ev("expected_identity", &f.identity);
    if let Some(id) = &check.spiffe {
        out.ev("spiffe_id", id.to_string());
    }
    let Some(first) = check.problems.first() else {
        if let Some(leaf) = check.certs.first() {
            out.ev("leaf_expires", rfc3339(leaf.not_after));
        }
        return out.pass();
    };
    if check.problems.len() > 1 {
        out.ev(
            "problems",
            check
                .problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        );
    }
    let diagnosis = first.to_string();
    let ns = shell_word(&s.istio_namespace);
    let restart = || {
        f.istiod_deployment.as_ref().map(|d| {
            format!(
                "{} -n {ns} rollout restart deployment/{}",
                s.kubectl_primary(),
                shell_word(d)
            )
        })
    };
    let logs = "istio-agent rejects it";
    use ChainProblem::*;
    let finding = match first {
        TooShort(n) => Finding::new(&INCOMPLETE, format!("istiod returned {n} certificate(s), not the leaf and the root")).note(format!(
            "{logs} (`invalid empty CertChain`, security/pkg/nodeagent/caclient/providers/citadel/client.go). istiod appends its root to every answer: a chain without it comes from a CA that holds no root (a plug-in cacerts without root-cert.pem, an external signer). Check the CA behind istiod's address"
        )),
        NotYetValid { index, not_before, .. } => Finding::new(
            &NOT_YET_VALID,
            format!("certificate {index} of the chain is valid only from {}", rfc3339(*not_before)),
        )
        .note(
            "a clock is off: istiod's node's or this machine's (check NTP); istiod backdates what it issues by 2 minutes only (ClockSkewGracePeriod, security/pkg/pki/util/generate_cert.go)",
        ),
        Expired { index, not_after, .. } => Finding::new(
            &EXPIRED,
            format!("certificate {index} of the chain expired at {}", rfc3339(*not_after)),
        )
        .note(if *index == 0 {
            "istiod issued an expired leaf: its clock or this machine's is off (check NTP)"
        } else {
            "a CA certificate of the chain has expired: the primary's plug-in CA (Secret cacerts) needs new certificates from the same root"
        }),
        RootMismatch { .. } => {
            let f = Finding::new(&ROOT_MISMATCH, "istiod signs with a root the remote does not trust");
            let why = "root-of-trust passed, so the remote trusts the primary CA's current root: istiod signs with a CA it loaded earlier. The restart makes it load the current one (Secret cacerts, else istio-ca-secret)";
            match restart() {
                Some(c) => f.command(c).note(why),
                None => f.note(format!(
                    "{why}: find istiod's Deployment with `{} -n {ns} get deployments -l app=istiod` and run `rollout restart deployment/<name>`",
                    s.kubectl_primary()
                )),
            }
        }
        NoSpiffeSan { .. } | BadSpiffe(_) => Finding::new(&NO_SPIFFE_ID, "the leaf istiod issued has no well-formed SPIFFE identity").note(
            "istiod puts spiffe://<trust domain>/ns/<ns>/sa/<sa> in the URI SAN of every leaf it signs: something other than istiod's CA answers, or an external signer rewrites the SAN",
        ),
        TrustDomain { expected, got } => {
            let mesh = match &f.mesh_trust_domain {
                Some(t) => format!("the primary's ConfigMap istio sets trustDomain {t:?}"),
                None => "the primary's ConfigMap istio sets no trustDomain (cluster.local)".to_string(),
            };
            let finding = Finding::new(
                &WRONG_TRUST_DOMAIN,
                format!("istiod issues identities in trust domain {got:?}, not {expected:?}"),
            );
            // istiod's domain is the mesh's: every workload already has it,
            // so the gateway follows it, rather than the mesh re-keying all.
            let follows_mesh = f.trust_domain_from.contains("TRUST_DOMAIN")
                && f.mesh_trust_domain.as_deref() == Some(got.as_str());
            match (&f.gateway_deployment, follows_mesh) {
                (Some((ns, d, c)), true) => finding
                    .command(format!(
                        "{} -n {} set env deployment/{} -c {} TRUST_DOMAIN={}",
                        s.kubectl_remote(),
                        shell_word(ns),
                        shell_word(d),
                        shell_word(c),
                        shell_word(got)
                    ))
                    .note(format!(
                        "Sets the gateway's TRUST_DOMAIN to the mesh's ({mesh}; istiod signs in it: spiffe.MustGenSpiffeURI in kube_jwt.go). If {expected:?} is the intended domain, change meshConfig.trustDomain instead, which changes every workload's identity"
                    )),
                _ => finding.note(format!(
                    "istiod signs in its mesh config's trustDomain (spiffe.MustGenSpiffeURI in kube_jwt.go); the gateway expects {expected:?} ({}) and {mesh}. Make them one: meshConfig.trustDomain of the istiod that answers (a revision reads ConfigMap istio-<revision>) and the gateway's TRUST_DOMAIN",
                    f.trust_domain_from
                )),
            }
        }
        Identity { expected, got } => Finding::new(&WRONG_IDENTITY, "istiod issued the leaf for another identity").note(format!(
            "istiod takes the identity from the token's service account, not the CSR: it issued {got}, the gateway is {expected}. Check that the CSR went to istiod with the gateway's own token"
        )),
        Unparsable { .. } | BadSignature { .. } | IssuerMismatch { .. } | NotCa { .. } => {
            Finding::new(&BROKEN, "the chain istiod issued does not link up").note(
                "istiod returns its signing certificate's chain (cacerts: ca-cert.pem, cert-chain.pem, root-cert.pem) after the leaf: those files disagree (wrong order, a missing intermediate, a key from another CA)",
            )
        }
    };
    out.failing(finding, format!("the chain istiod issued: {diagnosis}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::pki::Ca;
    use crate::model::Status;
    use rcgen::{CertificateParams, KeyPair};
    use time::{Duration, OffsetDateTime};

    const ID: &str =
        "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway-service-account";

    fn csr() -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    }

    fn leaf(ca: &Ca, san: &str, from_min: i64, to_min: i64) -> String {
        let t = OffsetDateTime::now_utc();
        ca.sign_workload_csr(
            &csr(),
            san,
            t + Duration::minutes(from_min),
            t + Duration::minutes(to_min),
        )
        .unwrap()
    }

    fn facts(chain: Vec<String>, root: &Ca) -> ChainFacts {
        ChainFacts {
            chain,
            root_pem: root.cert_pem.clone(),
            trust_domain: "cluster.local".into(),
            trust_domain_from: "the gateway's TRUST_DOMAIN",
            mesh_trust_domain: Some("cluster.local".into()),
            trust_domain_aliases: vec![],
            identity: ID.into(),
            istiod_deployment: Some("istiod".into()),
            gateway_deployment: None,
        }
    }

    struct Row {
        name: &'static str,
        facts: ChainFacts,
        status: Status,
        code: Option<&'static str>,
        commands: &'static [&'static str],
    }

    #[test]
    fn judge_table() {
        let mut s = Settings::for_tests();
        s.now = super::super::now_unix();
        let root = Ca::root("root.cluster.local", "cluster.local", 3650);
        let inter = root.intermediate("intermediate", "cluster.local", 365);
        let chain = |leaf: String| vec![leaf, inter.cert_pem.clone(), root.cert_pem.clone()];
        let old_root = Ca::root("old root", "cluster.local", 3650);
        let old_inter = old_root.intermediate("old intermediate", "cluster.local", 365);
        let rows = vec![
            Row {
                name: "healthy",
                facts: facts(chain(leaf(&inter, ID, -2, 60)), &root),
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "only the leaf",
                facts: facts(vec![leaf(&inter, ID, -2, 60)], &root),
                status: Status::Fail,
                code: Some("issued-chain/incomplete"),
                commands: &[],
            },
            Row {
                name: "istiod's clock an hour ahead",
                facts: facts(chain(leaf(&inter, ID, 60, 120)), &root),
                status: Status::Fail,
                code: Some("issued-chain/not-yet-valid"),
                commands: &[],
            },
            Row {
                name: "expired leaf",
                facts: facts(chain(leaf(&inter, ID, -120, -60)), &root),
                status: Status::Fail,
                code: Some("issued-chain/expired"),
                commands: &[],
            },
            Row {
                name: "another trust domain",
                facts: facts(
                    chain(leaf(
                        &inter,
                        "spiffe://other.local/ns/istio-system/sa/istio-eastwestgateway-service-account",
                        -2,
                        60,
                    )),
                    &root,
                ),
                status: Status::Fail,
                code: Some("issued-chain/wrong-trust-domain"),
                commands: &[],
            },
            Row {
                name: "another trust domain, the mesh's: the gateway follows it",
                facts: ChainFacts {
                    mesh_trust_domain: Some("other.local".into()),
                    gateway_deployment: Some((
                        "istio-system".into(),
                        "istio-eastwestgateway".into(),
                        "istio-proxy".into(),
                    )),
                    ..facts(
                        chain(leaf(
                            &inter,
                            "spiffe://other.local/ns/istio-system/sa/istio-eastwestgateway-service-account",
                            -2,
                            60,
                        )),
                        &root,
                    )
                },
                status: Status::Fail,
                code: Some("issued-chain/wrong-trust-domain"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system set env deployment/istio-eastwestgateway -c istio-proxy TRUST_DOMAIN=other.local",
                ],
            },
            Row {
                name: "the gateway's TRUST_DOMAIN is an alias of the mesh's, which istiod signs in",
                facts: ChainFacts {
                    trust_domain: "old.local".into(),
                    identity: "spiffe://old.local/ns/istio-system/sa/istio-eastwestgateway-service-account".into(),
                    trust_domain_aliases: vec!["old.local".into()],
                    ..facts(chain(leaf(&inter, ID, -2, 60)), &root)
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "the gateway's TRUST_DOMAIN differs and is no alias",
                facts: ChainFacts {
                    trust_domain: "old.local".into(),
                    identity: "spiffe://old.local/ns/istio-system/sa/istio-eastwestgateway-service-account".into(),
                    trust_domain_aliases: vec!["other.local".into()],
                    ..facts(chain(leaf(&inter, ID, -2, 60)), &root)
                },
                status: Status::Fail,
                code: Some("issued-chain/wrong-trust-domain"),
                commands: &[],
            },
            Row {
                name: "another identity",
                facts: facts(
                    chain(leaf(
                        &inter,
                        "spiffe://cluster.local/ns/default/sa/sleep",
                        -2,
                        60,
                    )),
                    &root,
                ),
                status: Status::Fail,
                code: Some("issued-chain/wrong-identity"),
                commands: &[],
            },
            Row {
                name: "signed from a root the remote does not trust: restart istiod",
                facts: facts(
                    vec![
                        leaf(&old_inter, ID, -2, 60),
                        old_inter.cert_pem.clone(),
                        old_root.cert_pem.clone(),
                    ],
                    &root,
                ),
                status: Status::Fail,
                code: Some("issued-chain/root-mismatch"),
                commands: &[
                    "kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod",
                ],
            },
            Row {
                name: "root mismatch, Deployment unknown",
                facts: ChainFacts {
                    istiod_deployment: None,
                    ..facts(
                        vec![
                            leaf(&old_inter, ID, -2, 60),
                            old_inter.cert_pem.clone(),
                            old_root.cert_pem.clone(),
                        ],
                        &root,
                    )
                },
                status: Status::Fail,
                code: Some("issued-chain/root-mismatch"),
                commands: &[],
            },
            Row {
                name: "intermediate missing",
                facts: facts(vec![leaf(&inter, ID, -2, 60), root.cert_pem.clone()], &root),
                status: Status::Fail,
                code: Some("issued-chain/broken"),
                commands: &[],
            },
            Row {
                name: "no SPIFFE SAN",
                facts: facts(chain(leaf(&inter, "https://example.com/gw", -2, 60)), &root),
                status: Status::Fail,
                code: Some("issued-chain/no-spiffe-id"),
                commands: &[],
            },
            Row {
                name: "too long",
                facts: facts(vec![root.cert_pem.clone(); 17], &root),
                status: Status::Fail,
                code: Some("issued-chain/too-long"),
                commands: &[],
            },
        ];
        for row in rows {
            let out = judge(&row.facts, &s);
            super::super::check_row(row.name, &out, row.status, row.code, row.commands);
        }
    }

    #[test]
    fn an_alias_is_said_in_evidence() {
        let mut s = Settings::for_tests();
        s.now = super::super::now_unix();
        let root = Ca::root("root", "cluster.local", 3650);
        let c = vec![leaf(&root, ID, -2, 60), root.cert_pem.clone()];
        let out = judge(
            &ChainFacts {
                trust_domain: "old.local".into(),
                identity: ID.replace("cluster.local", "old.local"),
                trust_domain_aliases: vec!["old.local".into()],
                ..facts(c, &root)
            },
            &s,
        );
        assert_eq!(out.status, Some(Status::Pass), "{:?}", out.diagnosis);
        let why = out.evidence["trust_domain_alias"].as_str().unwrap();
        assert!(why.contains("trustDomainAliases"), "{why}");
        assert_eq!(out.evidence["spiffe_id"], ID);
    }

    #[test]
    fn the_wrong_trust_domain_note_names_both_sides() {
        let mut s = Settings::for_tests();
        s.now = super::super::now_unix();
        let root = Ca::root("root", "cluster.local", 3650);
        let c = vec![
            leaf(&root, "spiffe://other.local/ns/istio-system/sa/gw", -2, 60),
            root.cert_pem.clone(),
        ];
        let out = judge(
            &ChainFacts {
                identity: "spiffe://cluster.local/ns/istio-system/sa/gw".into(),
                ..facts(c, &root)
            },
            &s,
        );
        let f = out.finding.unwrap();
        assert_eq!(
            f.summary,
            "istiod issues identities in trust domain \"other.local\", not \"cluster.local\""
        );
        let note = f.note.unwrap();
        assert!(note.contains("the gateway expects \"cluster.local\" (the gateway's TRUST_DOMAIN) and the primary's ConfigMap istio sets trustDomain \"cluster.local\""), "{note}");
    }
}
