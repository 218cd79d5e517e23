//! The gateway's path to istiod: the remote `istiod` Service, TLS on 15012,
//! the CSR, and the chain istiod returns.

use super::quote_list;
use super::{kube_err, now_unix};
use crate::engine::{Ctx, Outcome};
use crate::inspect::x509::rfc3339;
use crate::inspect::{jwt, x509};
use crate::model::StepId;
use crate::probe::ca_client::{self, CsrError, CsrRequest};
use crate::probe::clusterz::{self, Judgement};
use crate::probe::tls::{TlsProbe, probe};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde_json::json;

const CA_PORT: i32 = 15012;

fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub async fn istiod_endpoint(ctx: &Ctx) -> Outcome {
    let ns = ctx.opts.istio_namespace.clone();
    let mut out = Outcome::new();
    let remote = ctx.clusters.remote.clone();
    let svcs: Api<Service> = Api::namespaced(remote.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(remote.clone(), &ns);
    let eps: Api<Endpoints> = Api::namespaced(remote, &ns);
    let by_service = ListParams::default().labels("kubernetes.io/service-name=istiod");
    let (svc, slice_list, ep) = tokio::join!(
        svcs.get_opt("istiod"),
        slices.list(&by_service),
        eps.get_opt("istiod"),
    );
    let override_addr = ctx.opts.istiod_addr.clone();
    let svc = match svc {
        Ok(s) => s,
        Err(e) => {
            return out.fail(
                format!(
                    "cannot read Service {ns}/istiod in the remote: {}",
                    kube_err(&e)
                ),
                "check the --remote context's access",
            );
        }
    };
    let problem: Option<(String, String)>;
    let mut from_external_name = false;
    let mut addrs: Vec<String> = Vec::new();
    match &svc {
        None => {
            problem = Some((
                format!("the remote has no Service {ns}/istiod, so the gateway's CA_ADDR istiod.{ns}.svc:15012 does not resolve (`dial tcp: lookup istiod.{ns}.svc: no such host`)"),
                "install the remote profile (istioctl install --set profile=remote ...), which creates the selector-less istiod Service and its EndpointSlice pointing at the primary's east-west gateway".into(),
            ));
        }
        Some(s) => {
            let spec = s.spec.clone().unwrap_or_default();
            let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
            out.ev("service", json!({"name": format!("{ns}/istiod"), "type": spec.type_, "ports": ports, "selector": spec.selector, "externalName": spec.external_name}));
            if spec.type_.as_deref() == Some("ExternalName") {
                let host = spec.external_name.clone().unwrap_or_default();
                addrs.push(join_host_port(&host, CA_PORT));
                from_external_name = true;
                problem = None;
            } else if let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
                let sel_text = sel
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                problem = Some((
                    format!(
                        "Service {ns}/istiod in the remote has selector {sel_text:?}: it selects pods of the remote, where no istiod runs, instead of pointing at the primary"
                    ),
                    format!(
                        "remove the selector and let the EndpointSlice hold the primary's east-west gateway address: kubectl --context <remote> -n {ns} patch service istiod --type=json -p='[{{\"op\":\"remove\",\"path\":\"/spec/selector\"}}]'"
                    ),
                ));
            } else if !ports.contains(&CA_PORT) {
                problem = Some((
                    format!(
                        "Service {ns}/istiod in the remote has ports {ports:?} but not {CA_PORT}: the gateway's CSR has nowhere to go"
                    ),
                    format!(
                        "add port 15012 (name tcp-istiod) to Service {ns}/istiod in the remote"
                    ),
                ));
            } else {
                problem = None;
            }
        }
    }
    // Addresses from EndpointSlices (1.28+), else Endpoints (older remotes).
    let mut from = if from_external_name {
        "ExternalName"
    } else {
        "EndpointSlice"
    };
    if let (false, Ok(list)) = (from_external_name, slice_list) {
        for sl in &list.items {
            let port = sl
                .ports
                .iter()
                .flatten()
                .find(|p| p.port == Some(CA_PORT) || p.name.as_deref() == Some("tcp-istiod"))
                .and_then(|p| p.port);
            for e in sl.endpoints.iter().flatten() {
                for a in &e.addresses {
                    if let Some(p) = port {
                        addrs.push(join_host_port(a, p));
                    }
                }
            }
        }
    }
    if addrs.is_empty() {
        if let Ok(Some(ep)) = ep {
            from = "Endpoints";
            for subset in ep.subsets.iter().flatten() {
                let port = subset
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.port == CA_PORT || p.name.as_deref() == Some("tcp-istiod"))
                    .map(|p| p.port);
                for a in subset.addresses.iter().flatten() {
                    if let Some(p) = port {
                        addrs.push(join_host_port(&a.ip, p));
                    }
                }
            }
        }
    }
    out.ev("endpoint_addresses", &addrs)
        .ev("endpoint_source", from);
    // istiod-tls needs this step, so on failure no address is published.
    if let Some((d, h)) = problem {
        return out.fail(d, h);
    }
    if addrs.is_empty() {
        // The gateway has no address even when meshtrace was given one.
        return out.fail(
            format!("Service {ns}/istiod in the remote has no EndpointSlice or Endpoints with port {CA_PORT}: the gateway's CSR dial has no address (`connection refused`)"),
            format!("create an EndpointSlice labelled kubernetes.io/service-name=istiod in {ns} with the primary's east-west gateway address and port 15012 (the remote profile does this from values.global.remotePilotAddress)"),
        );
    }
    let chosen = match override_addr {
        Some(a) => {
            out.ev("address", &a).ev("address_source", "--istiod-addr");
            if !addrs.is_empty() && !addrs.contains(&a) {
                out.ev("note", format!("the gateway dials {} (from the {from}); meshtrace dials {a} as told by --istiod-addr", addrs.join(", ")));
            }
            (a, "--istiod-addr".to_string())
        }
        None => {
            let a = addrs[0].clone();
            out.ev("address", &a).ev("address_source", from);
            (a, from.to_string())
        }
    };
    ctx.facts().istiod_addr = Some(chosen);
    out.pass()
}

/// The TLS server name istio-agent verifies for CA_ADDR: ISTIOD_SAN if set,
/// else the host part of CA_ADDR, where `localhost` means istiod.istio-system.svc
/// (the agent hard-codes that namespace).
fn agent_server_name(ca_addr: Option<&str>, istiod_san: Option<&str>) -> String {
    let default = "istiod.istio-system.svc".to_string();
    if let Some(san) = istiod_san.filter(|s| !s.is_empty()) {
        return san.to_string();
    }
    let Some(addr) = ca_addr else { return default };
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .trim_matches(['[', ']']);
    if host == "localhost" || host.is_empty() {
        default
    } else {
        host.to_string()
    }
}

pub async fn istiod_tls(ctx: &Ctx) -> Outcome {
    let (addr, root, gw) = {
        let f = ctx.facts();
        (
            f.istiod_addr.clone(),
            f.remote_root_pem.clone(),
            f.gateway.clone(),
        )
    };
    let Some((addr, source)) = addr else {
        return Outcome::new().blocked(StepId::RemoteIstiodEndpoint, "no istiod address");
    };
    let Some(root) = root else {
        return Outcome::new().blocked(
            StepId::RootOfTrust,
            "no root in the remote's istio-ca-root-cert to verify istiod with",
        );
    };
    let mut out = Outcome::new();
    let server_name = agent_server_name(
        gw.as_ref().and_then(|g| g.ca_addr.as_deref()),
        gw.as_ref().and_then(|g| g.istiod_san.as_deref()),
    );
    out.ev("address", &addr)
        .ev("address_source", &source)
        .ev("server_name", &server_name);
    let r = probe(&TlsProbe {
        addr: addr.clone(),
        server_name: server_name.clone(),
        roots_pem: root,
        timeout: ctx.opts.timeout,
    })
    .await;
    out.ev("handshake_ms", r.handshake_ms)
        .ev("protocol", &r.protocol)
        .ev("cipher", &r.cipher)
        .ev("alpn", &r.alpn);
    if let Some(e) = &r.tcp_error {
        return out.fail(
            format!("cannot reach istiod at {addr} ({source}) from here: {e}. The gateway dials the same address; if it is reachable from the remote's pods but not from this machine, run meshtrace from inside the remote's network"),
            "check the primary's east-west gateway exposes 15012 (TLS passthrough) and that the remote's istiod EndpointSlice holds its address",
        );
    }
    let presented: Vec<_> = r
        .peer_chain_der
        .iter()
        .filter_map(|d| x509::parse_der(d).ok())
        .collect();
    if let Some(leaf) = presented.first() {
        out.ev("istiod_certificate", leaf.evidence());
    }
    if let Some(e) = &r.verify_error {
        let names = presented
            .first()
            .map(|c| c.dns_sans.join(", "))
            .unwrap_or_default();
        let fix = if e.contains("name") || e.contains("valid for") {
            format!(
                "the gateway dials {server_name:?}; istiod's certificate is valid for [{names}]. Set ISTIOD_CUSTOM_HOST={server_name} on the primary istiod, or point CA_ADDR at a name istiod's certificate carries"
            )
        } else {
            "istiod's serving certificate is not signed by the root in the remote's istio-ca-root-cert: fix root-of-trust first, then restart istiod so it reissues its certificate from the shared CA".to_string()
        };
        return out.fail(format!("istiod's certificate does not verify as the gateway checks it (root: istio-ca-root-cert, name {server_name:?}): {e}"), fix);
    }
    if let Some(e) = &r.tls_error {
        return out.fail(
            format!("TLS handshake with istiod at {addr} failed: {e}"),
            "check that the address is istiod's secure gRPC port (15012) with TLS passthrough on the east-west gateway, not a terminating proxy",
        );
    }
    out.pass()
}

pub async fn csr(ctx: &Ctx) -> Outcome {
    if ctx.opts.no_csr {
        return Outcome::new().skipped("passive mode (--no-csr): no CSR sent");
    }
    let (addr, root, gw, token, cid) = {
        let f = ctx.facts();
        (
            f.istiod_addr.clone(),
            f.remote_root_pem.clone(),
            f.gateway.clone(),
            f.gateway_token.clone(),
            f.cluster_id.clone(),
        )
    };
    let (Some((addr, _)), Some(root)) = (addr, root) else {
        return Outcome::new().blocked(StepId::IstiodTls, "no verified path to istiod");
    };
    let Some(token) = token else {
        return Outcome::new().blocked(StepId::GatewayToken, "no gateway token");
    };
    let gw = gw.unwrap_or_default();
    let cid = cid.map(|c| c.0).unwrap_or_default();
    let td = gw
        .trust_domain
        .clone()
        .or_else(|| ctx.facts().trust_domain.clone())
        .unwrap_or_else(|| "cluster.local".into());
    let spiffe = format!(
        "spiffe://{td}/ns/{}/sa/{}",
        gw.namespace, gw.service_account
    );
    let server_name = agent_server_name(gw.ca_addr.as_deref(), gw.istiod_san.as_deref());
    let mut out = Outcome::new();
    let (key, csr_pem) = match ca_client::new_csr(&spiffe) {
        Ok(k) => k,
        Err(e) => {
            return out.fail(
                format!("cannot make a CSR: {e}"),
                "report this as a meshtrace bug",
            );
        }
    };
    let ttl = 3600;
    out.ev("address", &addr)
        .ev("server_name", &server_name)
        .ev("metadata", json!({"authorization": format!("Bearer <{}>", jwt::fingerprint(&token.0)), "clusterid": cid}))
        .ev("csr_san", &spiffe)
        .ev("requested_ttl_seconds", ttl)
        .ev("key", "fresh ECDSA P-256, in memory only");
    // istiod's own view of its clusters is read while the CSR is in flight,
    // so it costs the critical path nothing unless it is the slower of the two.
    let csr_call = async {
        let started = std::time::Instant::now();
        let r = ca_client::create_certificate(&CsrRequest {
            addr: &addr,
            server_name: &server_name,
            root_pem: &root,
            token: &token.0,
            cluster_id: &cid,
            csr_pem: &csr_pem,
            ttl_secs: ttl,
            timeout: ctx.opts.timeout,
        })
        .await;
        (r, started.elapsed())
    };
    let debug_addr = ctx.opts.istiod_debug_addr.as_deref();
    let ns = &ctx.opts.istio_namespace;
    let view_call = clusterz::fetch(debug_addr, &ctx.clusters.primary, ns, ctx.opts.timeout);
    tokio::pin!(csr_call, view_call);
    let mut view = None;
    let (result, rpc) = tokio::select! {
        r = &mut csr_call => r,
        v = &mut view_call => {
            view = Some(v);
            csr_call.await
        }
    };
    // The view only explains a refusal: wait for it (within its own bound)
    // when istiod said Unauthenticated; otherwise give it a moment and move
    // on, so an istiod pod the API server cannot reach (503, retried) does
    // not hold up a certificate that was issued.
    let view = match view {
        Some(v) => v,
        None if matches!(&result, Err(CsrError::Rpc { code, .. }) if code == "Unauthenticated") => {
            view_call.await
        }
        None => tokio::time::timeout(VIEW_GRACE, &mut view_call)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "not waited for: istiod answered the CSR first, and its view only explains a refusal (it did not come within {} more)",
                    humantime::format_duration(VIEW_GRACE)
                ))
            }),
    };
    drop(key);
    out.ev("rpc_ms", crate::model::millis(rpc))
        .ev("istiod_clusters", clusterz::evidence(&view))
        .ev("istiod_clusters_source", clusterz::source(debug_addr, ns));
    match result {
        Ok(chain) => {
            out.ev("cert_chain_length", chain.len());
            ctx.facts().chain = Some(chain);
            out.pass()
        }
        Err(CsrError::Rpc { code, message }) => {
            out.ev("grpc_status", json!({"code": code, "message": message}));
            let (diag, hint) = if code == "Unauthenticated" && !cid.is_empty() {
                unauthenticated(
                    &code,
                    &message,
                    &cid,
                    &clusterz::judge(&view, &cid),
                    ns,
                    &ctx.opts.token_audience,
                )
            } else if code == "Unauthenticated" {
                unauthenticated(
                    &code,
                    &message,
                    &cid,
                    &Judgement::Unknown("the gateway sends no cluster ID, so istiod checks its token against the primary".into()),
                    ns,
                    &ctx.opts.token_audience,
                )
            } else {
                (
                    format!("istiod answered {code}: {message:?}"),
                    READ_LOG_HINT.to_string(),
                )
            };
            out.fail(diag, hint)
        }
        Err(e) => out.fail(
            format!("CreateCertificate to {addr} failed: {e}"),
            "see istiod-tls; check istiod is serving on 15012",
        ),
    }
}

/// How long a CSR that istiod answered without refusing waits for istiod's
/// view of its clusters (evidence only then).
const VIEW_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

const READ_LOG_HINT: &str = "read istiod's log: kubectl --context <primary> -n istio-system logs deploy/istiod | grep -i 'authenticate'; check istioctl remote-clusters shows the cluster synced";

/// The diagnosis and fix for a CSR refused with `Unauthenticated` when every
/// step before it passed: istiod does not see what meshtrace sees, and its
/// own list of clusters (`/debug/clusterz`) says why.
fn unauthenticated(
    code: &str,
    message: &str,
    cid: &str,
    view: &Judgement,
    ns: &str,
    aud: &str,
) -> (String, String) {
    let told = format!(
        "istiod answered {code}: {message:?}. That is all a gateway is told; istiod logs the reason (`Failed to authenticate client from ...`)."
    );
    let restart = format!(
        "restart istiod so it loads every remote secret again: kubectl --context <primary> -n {ns} rollout restart deployment/istiod (then trace again)"
    );
    let reach_hint = format!(
        "check that istiod's pod reaches the remote API server named in the remote secret (network policy, firewall, private endpoint, egress proxy): kubectl --context <primary> -n {ns} logs deploy/istiod | grep -i 'remote cluster'"
    );
    match view {
        Judgement::Missing { from, listed } => {
            let ids: Vec<String> = listed.iter().map(|e| e.id.clone()).collect();
            let lists = if ids.is_empty() {
                "lists no cluster at all".to_string()
            } else {
                format!("lists only {}", quote_list(&ids))
            };
            // The config cluster is the entry without a secret.
            let locals: Vec<&str> = listed
                .iter()
                .filter(|e| e.secret_name.is_empty())
                .map(|e| e.id.as_str())
                .collect();
            let remotes: Vec<&str> = listed
                .iter()
                .filter(|e| !e.secret_name.is_empty())
                .map(|e| e.id.as_str())
                .collect();
            let log = match locals.as_slice() {
                [local] => format!(
                    " (istiod logs `client claims to be in cluster {cid:?}, but we only know about local cluster {local:?} and remote clusters [{}]`)",
                    remotes.join(" ")
                ),
                _ => String::new(),
            };
            (
                format!(
                    "{told} istiod has not loaded the remote secret for cluster {cid:?}: its /debug/clusterz ({from}) {lists}{log}. The remote secret is valid (remote-secret through token-review passed), so istiod's remote-secret controller has not processed it: the controller is stuck (a known istiod hang after a remote secret is deleted: it then processes no remote-secret event until it restarts), or the secret was created or fixed only seconds ago (a working istiod loads it within seconds, also after refusing an earlier version)"
                ),
                restart,
            )
        }
        Judgement::NotSynced { from, entry } => {
            let status = entry.status_text();
            let loaded = format!(
                "{told} istiod has loaded cluster {cid:?} (Secret {}) but its /debug/clusterz ({from}) says syncStatus {status:?}",
                if entry.secret_name.is_empty() {
                    "unknown"
                } else {
                    &entry.secret_name
                }
            );
            match entry.sync_status.as_deref() {
                Some("closed") => (
                    format!(
                        "{loaded}: istiod is tearing this cluster down (its remote secret was deleted or changed) and has not built it again; if it stays closed, istiod's remote-secret controller is stuck (a known istiod hang after a remote secret is deleted)"
                    ),
                    restart,
                ),
                Some("timeout") => (
                    format!(
                        "{loaded}: istiod gave up waiting for the remote's objects (`remote cluster {cid} failed to sync after 30s`). From where istiod runs, the remote API server is likely unreachable or refuses the secret's credential, and istiod's TokenReview fails the same way, although meshtrace's passes from here"
                    ),
                    reach_hint,
                ),
                Some("syncing") => (
                    format!(
                        "{loaded}: istiod is still listing the remote's objects (after 30 s this becomes timeout); until then its TokenReview for this cluster may fail the same way. Trace again in a minute"
                    ),
                    reach_hint,
                ),
                _ => (format!("{loaded}, not synced"), READ_LOG_HINT.to_string()),
            }
        }
        Judgement::Synced { entry } => (
            format!(
                "{told} istiod lists cluster {cid:?} synced (Secret {}), so it holds a working client for the remote, and meshtrace's TokenReview with the remote secret's credential passed for audience {aud:?}. The remaining cause is istiod's TOKEN_AUDIENCES: it does not contain {aud:?}, the audience of the gateway's token (--token-audience), so the remote API server refuses istiod's TokenReview (istiod logs `token audiences [\"{aud}\"] is invalid for the target audiences [...]`). (Less likely: istiod still runs with an earlier kubeconfig of this secret whose credential no longer works; a restart rules that out.)",
                entry.secret_name
            ),
            format!(
                "make istiod's TOKEN_AUDIENCES include {aud}: kubectl --context <primary> -n {ns} set env deployment/istiod TOKEN_AUDIENCES={aud} (see its value with kubectl --context <primary> -n {ns} get deployment istiod -o yaml | grep -A1 TOKEN_AUDIENCES); or trace again with --token-audience <its value>, and gateway-token names which side to change"
            ),
        ),
        Judgement::Unknown(why) => (
            format!(
                "{told} With cluster ID {cid:?}: if the remote-secret, remote-* and token-review steps passed, istiod does not see what meshtrace sees — its remote secret controller has not loaded the cluster yet, or its TOKEN_AUDIENCES differ from {aud:?}. istiod's own view of its clusters is unknown: {why}"
            ),
            READ_LOG_HINT.to_string(),
        ),
    }
}

/// The longest issued chain meshtrace verifies.
const MAX_CHAIN: usize = 16;

pub async fn issued_chain(ctx: &Ctx) -> Outcome {
    let (chain, root, gw, td) = {
        let f = ctx.facts();
        (
            f.chain.clone(),
            f.remote_root_pem.clone(),
            f.gateway.clone(),
            f.trust_domain.clone(),
        )
    };
    let Some(chain) = chain else {
        return Outcome::new().blocked(StepId::Csr, "no certificate chain");
    };
    let root = root.unwrap_or_default();
    let gw = gw.unwrap_or_default();
    let td = gw
        .trust_domain
        .clone()
        .or(td)
        .unwrap_or_else(|| "cluster.local".into());
    let identity = format!(
        "spiffe://{td}/ns/{}/sa/{}",
        gw.namespace, gw.service_account
    );
    let mut out = Outcome::new();
    if chain.len() > MAX_CHAIN {
        return out.fail(
            format!(
                "istiod returned {} certificates; an Istio chain is a leaf, its intermediates and the root (meshtrace verifies at most {MAX_CHAIN})",
                chain.len()
            ),
            "check what answers on istiod's address: istiod's plug-in CA chain (cacerts cert-chain.pem) should hold a handful of certificates",
        );
    }
    let check = x509::verify_chain(&chain, &root, &td, Some(&identity), now_unix());
    out.ev(
        "chain",
        check.certs.iter().map(|c| c.evidence()).collect::<Vec<_>>(),
    )
    .ev("expected_identity", &identity);
    if let Some(s) = &check.spiffe {
        out.ev(
            "spiffe_id",
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                s.trust_domain, s.namespace, s.service_account
            ),
        );
    }
    if let Some(p) = check.problems.first() {
        let all = check
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let fix = match p {
            x509::ChainProblem::TrustDomain { .. } | x509::ChainProblem::Identity { .. } => {
                "make the primary's meshConfig.trustDomain and the gateway's TRUST_DOMAIN agree"
            }
            x509::ChainProblem::NotYetValid { .. } | x509::ChainProblem::Expired { .. } => {
                "check clocks on the primary istiod's node and here (NTP); istiod backdates certificates by 2 minutes only"
            }
            x509::ChainProblem::TooShort(_) => {
                "istiod must return leaf, intermediates and root: check the plug-in CA's cert-chain.pem"
            }
            x509::ChainProblem::RootMismatch { .. } => {
                "the CA that signed differs from the root the remote trusts: align cacerts/root-cert.pem and istio-ca-root-cert"
            }
            _ => {
                "the primary's CA material is inconsistent: check cacerts (ca-cert.pem, cert-chain.pem, root-cert.pem)"
            }
        };
        return out.fail(format!("the chain istiod issued is wrong: {all}"), fix);
    }
    if let Some(leaf) = check.certs.first() {
        out.ev("leaf_expires", rfc3339(leaf.not_after));
    }
    out.pass()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::clusterz::ClusterzEntry;

    fn entry(id: &str, secret: &str, status: &str) -> ClusterzEntry {
        ClusterzEntry {
            id: id.into(),
            secret_name: secret.into(),
            sync_status: Some(status.into()),
        }
    }

    const SECRET: &str = "istio-system/istio-remote-secret-remote";

    fn diagnose(view: Judgement) -> (String, String) {
        unauthenticated(
            "Unauthenticated",
            "request authenticate failure",
            "remote",
            &view,
            "istio-system",
            "istio-ca",
        )
    }

    #[test]
    fn missing_cluster_names_what_istiod_lists_and_restarts_it() {
        let (d, h) = diagnose(Judgement::Missing {
            from: "pod istiod-abc".into(),
            listed: vec![
                entry("primary", "", "synced"),
                entry("other", "istio-system/istio-remote-secret-other", "synced"),
            ],
        });
        assert!(
            d.starts_with("istiod answered Unauthenticated: \"request authenticate failure\". That is all a gateway is told;"),
            "{d}"
        );
        assert!(
            d.contains("istiod has not loaded the remote secret for cluster \"remote\": its /debug/clusterz (pod istiod-abc) lists only [\"primary\", \"other\"] (istiod logs `client claims to be in cluster \"remote\", but we only know about local cluster \"primary\" and remote clusters [other]`)"),
            "{d}"
        );
        assert!(d.contains("the controller is stuck"), "{d}");
        assert_eq!(
            h,
            "restart istiod so it loads every remote secret again: kubectl --context <primary> -n istio-system rollout restart deployment/istiod (then trace again)"
        );
        // An empty list is said as such, with no guessed log line.
        let (d, _) = diagnose(Judgement::Missing {
            from: "127.0.0.1:15014".into(),
            listed: vec![],
        });
        assert!(
            d.contains("its /debug/clusterz (127.0.0.1:15014) lists no cluster at all. The remote secret is valid"),
            "{d}"
        );
    }

    #[test]
    fn listed_but_not_synced_quotes_the_status() {
        let (d, h) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: entry("remote", SECRET, "timeout"),
        });
        assert!(
            d.contains("istiod has loaded cluster \"remote\" (Secret istio-system/istio-remote-secret-remote) but its /debug/clusterz (pod istiod-abc) says syncStatus \"timeout\": istiod gave up waiting"),
            "{d}"
        );
        assert!(
            h.starts_with("check that istiod's pod reaches the remote API server"),
            "{h}"
        );
        let (d, h) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: entry("remote", SECRET, "closed"),
        });
        assert!(
            d.contains("says syncStatus \"closed\": istiod is tearing this cluster down"),
            "{d}"
        );
        assert!(h.contains("rollout restart deployment/istiod"), "{h}");
        let (d, _) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: entry("remote", SECRET, "syncing"),
        });
        assert!(
            d.contains("says syncStatus \"syncing\": istiod is still listing"),
            "{d}"
        );
        let (d, h) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: ClusterzEntry {
                sync_status: None,
                ..entry("remote", SECRET, "")
            },
        });
        assert!(
            d.ends_with("says syncStatus \"no syncStatus\", not synced"),
            "{d}"
        );
        assert_eq!(h, READ_LOG_HINT);
    }

    #[test]
    fn synced_leaves_token_audiences() {
        let (d, h) = diagnose(Judgement::Synced {
            entry: entry("remote", SECRET, "synced"),
        });
        assert!(
            d.contains("istiod lists cluster \"remote\" synced (Secret istio-system/istio-remote-secret-remote)"),
            "{d}"
        );
        assert!(
            d.contains(
                "The remaining cause is istiod's TOKEN_AUDIENCES: it does not contain \"istio-ca\""
            ),
            "{d}"
        );
        assert!(
            h.starts_with("make istiod's TOKEN_AUDIENCES include istio-ca: kubectl --context <primary> -n istio-system set env deployment/istiod TOKEN_AUDIENCES=istio-ca"),
            "{h}"
        );
    }

    #[test]
    fn unknown_view_keeps_the_guess_and_says_why() {
        let (d, h) = diagnose(Judgement::Unknown(
            "no pod labelled app=istiod in istio-system of the primary".into(),
        ));
        assert!(
            d.contains("its remote secret controller has not loaded the cluster yet, or its TOKEN_AUDIENCES differ from \"istio-ca\". istiod's own view of its clusters is unknown: no pod labelled app=istiod in istio-system of the primary"),
            "{d}"
        );
        assert_eq!(h, READ_LOG_HINT);
    }
}
