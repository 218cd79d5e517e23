//! The roots that must agree: the primary CA's root, `istio-ca-root-cert` in
//! both clusters, and (in the issued-chain step) the root istiod returns.

use super::{kube_err, now_unix, quote_list};
use crate::engine::{Ctx, Outcome};
use crate::inspect::x509::rfc3339;
use crate::inspect::x509::{self, CertInfo};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::Api;
use serde_json::json;

const CACERTS_KEYS: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
];

fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

fn summary(certs: &[CertInfo]) -> Vec<serde_json::Value> {
    certs
        .iter()
        .map(|c| json!({"subject": c.subject, "sha256": c.sha256, "not_after": rfc3339(c.not_after)}))
        .collect()
}

pub async fn root_of_trust(ctx: &Ctx) -> Outcome {
    let ns = ctx.opts.istio_namespace.clone();
    let mut out = Outcome::new();
    let psec: Api<Secret> = Api::namespaced(ctx.clusters.primary.clone(), &ns);
    let pcm: Api<ConfigMap> = Api::namespaced(ctx.clusters.primary.clone(), &ns);
    let rcm: Api<ConfigMap> = Api::namespaced(ctx.clusters.remote.clone(), &ns);
    let (cacerts, selfsigned, primary_cm, remote_cm, mesh_cm) = tokio::join!(
        psec.get_opt("cacerts"),
        psec.get_opt("istio-ca-secret"),
        pcm.get_opt("istio-ca-root-cert"),
        rcm.get_opt("istio-ca-root-cert"),
        pcm.get_opt("istio"),
    );
    let (cacerts, selfsigned, primary_cm, remote_cm) = match (
        read(cacerts, "primary Secret cacerts"),
        read(selfsigned, "primary Secret istio-ca-secret"),
        read(primary_cm, "primary ConfigMap istio-ca-root-cert"),
        read(remote_cm, "remote ConfigMap istio-ca-root-cert"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (a, b, c, d) => {
            let err = [a.err(), b.err(), c.err(), d.err()]
                .into_iter()
                .flatten()
                .next()
                .unwrap_or_default();
            return out.fail(
                err,
                "the contexts need get on secrets and configmaps in the istio namespace",
            );
        }
    };
    // Trust domain, for the issued-chain step.
    let td = mesh_cm
        .ok()
        .flatten()
        .and_then(|cm| cm.data.and_then(|d| d.get("mesh").cloned()))
        .and_then(|mesh| serde_saphyr::from_str::<serde_json::Value>(&mesh).ok())
        .and_then(|v| {
            v.get("trustDomain")
                .and_then(|t| t.as_str().map(str::to_string))
        });
    ctx.facts().trust_domain = td.clone();
    out.ev(
        "trust_domain",
        td.clone()
            .unwrap_or_else(|| "cluster.local (default)".into()),
    );

    // 1. The primary CA: plug-in cacerts, else istiod's self-signed CA.
    let mut primary_root: Option<(String, &str)> = None;
    let mut warnings: Vec<(String, String)> = Vec::new();
    if let Some(s) = &cacerts {
        let present: Vec<&str> = CACERTS_KEYS
            .iter()
            .copied()
            .filter(|k| secret_text(s, k).is_some())
            .collect();
        let missing: Vec<String> = CACERTS_KEYS
            .iter()
            .filter(|k| !present.contains(k))
            .map(|k| k.to_string())
            .collect();
        out.ev("primary_cacerts_keys", &present);
        if !missing.is_empty() {
            return out.fail(
                format!("primary Secret {ns}/cacerts lacks {}: istiod refuses a partial plug-in CA (`incomplete signing CA bundle detected`)", quote_list(&missing)),
                format!("recreate it with all four files: kubectl --context <primary> -n {ns} create secret generic cacerts --from-file=ca-cert.pem --from-file=ca-key.pem --from-file=root-cert.pem --from-file=cert-chain.pem"),
            );
        }
        primary_root =
            secret_text(s, "root-cert.pem").map(|p| (p, "primary Secret cacerts root-cert.pem"));
        if let Some(ca) = secret_text(s, "ca-cert.pem").and_then(|p| x509::parse_pem_chain(&p).ok())
        {
            out.ev("primary_signing_ca", summary(&ca));
            for c in &ca {
                check_expiry(
                    ctx,
                    c,
                    "the primary's signing CA (cacerts ca-cert.pem)",
                    &mut warnings,
                );
            }
        }
    } else if let Some(s) = &selfsigned {
        primary_root = secret_text(s, "ca-cert.pem")
            .map(|p| (p, "primary Secret istio-ca-secret ca-cert.pem"));
    }
    let mut primary_certs = Vec::new();
    if let Some((pem, src)) = &primary_root {
        match x509::parse_pem_chain(pem) {
            Ok(c) if !c.is_empty() => {
                out.ev(
                    "primary_ca_root",
                    json!({"source": src, "certificates": summary(&c)}),
                );
                for cert in &c {
                    check_expiry(ctx, cert, "the primary's root", &mut warnings);
                }
                primary_certs = c;
                ctx.facts().primary_root_pem = Some(pem.clone());
            }
            _ => {
                return out.fail(
                    format!("{src} holds no PEM certificate"),
                    "restore the plug-in CA files",
                );
            }
        }
    } else {
        out.ev(
            "primary_ca_root",
            "not readable (no cacerts or istio-ca-secret in the primary: an external CA?)",
        );
    }

    // 2. What the remote gateway trusts.
    let Some(rcm) = remote_cm else {
        let rns: Api<Namespace> = Api::all(ctx.clusters.remote.clone());
        let ann = rns.get_opt(&ns).await.ok().flatten().and_then(|n| {
            n.metadata
                .annotations
                .and_then(|a| a.get("topology.istio.io/controlPlaneClusters").cloned())
        });
        out.ev("remote_namespace_annotation_controlPlaneClusters", &ann);
        let why = match &ann {
            None => format!(
                "the remote namespace {ns} lacks annotation topology.istio.io/controlPlaneClusters, so the primary istiod never writes the root there"
            ),
            Some(v) => format!(
                "annotation topology.istio.io/controlPlaneClusters={v:?} is set; check that the primary istiod runs with EXTERNAL_ISTIOD=true and that its cluster ID is {v:?}"
            ),
        };
        return out.fail(
            format!("ConfigMap {ns}/istio-ca-root-cert is missing in the remote: the gateway has no root to trust istiod with (`configmap \"istio-ca-root-cert\" not found`); {why}"),
            format!("kubectl --context <remote> annotate namespace {ns} topology.istio.io/controlPlaneClusters=<primary-id>, with EXTERNAL_ISTIOD=true on the primary istiod; or copy the primary's root into the ConfigMap"),
        );
    };
    let remote_pem = rcm
        .data
        .as_ref()
        .and_then(|d| d.get("root-cert.pem").cloned())
        .unwrap_or_default();
    let remote_certs = match x509::parse_pem_chain(&remote_pem) {
        Ok(c) if !c.is_empty() => c,
        _ => {
            return out.fail(
                format!("remote ConfigMap {ns}/istio-ca-root-cert has no certificate under key root-cert.pem"),
                "let the primary istiod rewrite it (delete the ConfigMap; istiod recreates it), or copy the primary's root",
            );
        }
    };
    out.ev("remote_istio_ca_root_cert", summary(&remote_certs));
    ctx.facts().remote_root_pem = Some(remote_pem.clone());

    let primary_cm_certs = primary_cm
        .and_then(|cm| cm.data.and_then(|d| d.get("root-cert.pem").cloned()))
        .and_then(|p| x509::parse_pem_chain(&p).ok())
        .unwrap_or_default();
    out.ev("primary_istio_ca_root_cert", summary(&primary_cm_certs));

    let trusted: Vec<&str> = remote_certs.iter().map(|c| c.sha256.as_str()).collect();
    if let Some(root) = primary_certs.last() {
        if !trusted.contains(&root.sha256.as_str()) {
            return out.fail(
                format!(
                    "the remote's istio-ca-root-cert ({}, sha256 {}) is not the primary CA's root ({}, sha256 {}): the gateway will reject istiod (`x509: certificate signed by unknown authority`); a stale root after CA rotation?",
                    remote_certs[0].subject,
                    short(&remote_certs[0].sha256),
                    root.subject,
                    short(&root.sha256)
                ),
                {
                    let (sec, key) = if primary_root.as_ref().is_some_and(|(_, src)| src.contains("cacerts")) { ("cacerts", "root-cert\\.pem") } else { ("istio-ca-secret", "ca-cert\\.pem") };
                    format!("update it from the primary: kubectl --context <primary> -n {ns} get secret {sec} -o jsonpath='{{.data.{key}}}' | base64 -d > root-cert.pem; kubectl --context <remote> -n {ns} create configmap istio-ca-root-cert --from-file=root-cert.pem --dry-run=client -o yaml | kubectl --context <remote> apply -f -")
                },
            );
        }
    }
    if let (Some(p), false) = (primary_cm_certs.first(), primary_cm_certs.is_empty()) {
        if !trusted.contains(&p.sha256.as_str()) {
            warnings.push((
                format!("the primary's istio-ca-root-cert (sha256 {}) differs from the remote's (sha256 {})", short(&p.sha256), short(&remote_certs[0].sha256)),
                "one of the two is stale: compare with the primary CA's root-cert.pem and rewrite the stale one".into(),
            ));
        }
    }
    for c in &remote_certs {
        check_expiry(ctx, c, "the remote's trusted root", &mut warnings);
    }
    if let Some((d, h)) = warnings.first() {
        if d.contains("expired") {
            return out.fail(d.clone(), h.clone());
        }
        return out.warn(d.clone(), h.clone());
    }
    out.pass()
}

fn read<T>(r: Result<Option<T>, kube::Error>, what: &str) -> Result<Option<T>, String> {
    r.map_err(|e| format!("cannot read {what}: {}", kube_err(&e)))
}

fn short(hex: &str) -> String {
    hex.chars().take(16).collect()
}

fn check_expiry(ctx: &Ctx, c: &CertInfo, what: &str, warnings: &mut Vec<(String, String)>) {
    let left = c.not_after - now_unix();
    if left <= 0 {
        warnings.insert(
            0,
            (
                format!(
                    "{what} ({}) expired {} at {}",
                    c.subject,
                    x509::expiry_words(left),
                    rfc3339(c.not_after)
                ),
                "rotate the CA now (plug in a new cacerts and restart istiod)".into(),
            ),
        );
    } else if left < ctx.opts.warn_within.as_secs() as i64 {
        warnings.push((
            format!(
                "{what} ({}) expires {} ({}), within --warn-within {}",
                c.subject,
                x509::expiry_words(left),
                rfc3339(c.not_after),
                humantime::format_duration(ctx.opts.warn_within)
            ),
            "plan the rotation: new cacerts in the primary, then every istio-ca-root-cert".into(),
        ));
    }
}
