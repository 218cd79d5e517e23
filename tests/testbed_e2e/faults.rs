//! One test per fault a real cluster can express with kubectl.
//!
//! Lab fidelity: every test named after a lab fault (`lab("...")`) compares
//! meshtrace's report on the test bed with its report on the lab for that
//! fault: same first failing step, same status, the lab's finding code in both
//! reports, and the same status for every step. Those are the faults in
//! [`COMPARED_WITH_LAB`]; [`NOT_EXPRESSIBLE`] lists the lab's other faults and
//! why the test bed cannot hold them. Tests built with `testbed_only` are
//! real-cluster behaviours the lab has no fault for.
//!
//! Agreement with istiod: each test sends a real CSR as the gateway would
//! (after the fault) and checks istiod refuses it (Unauthenticated) exactly
//! when meshtrace's first failure is on the authentication path.

use crate::bed::*;
use crate::check::{Plan, Want, lab, run_case, testbed_only};
use crate::probe::GatewayView;
use base64::Engine;
use meshtrace::model::{Status, StepId};
use serde_json::{Value, json};

/// Lab faults the tests below reproduce on the test bed, compared with the lab.
pub const COMPARED_WITH_LAB: &[&str] = &[
    "istiod-cert-wrong-san",
    "root-expiring",
    "reader-token-expired", // zz_destructive: runs last; its revert may restart istiod
    "istiod-token-audiences",
    "no-remote-secret",
    "secret-unlabelled", // portable.rs
    "secret-wrong-namespace",
    "cluster-id-mismatch", // portable.rs
    "cluster-id-is-primary",
    "kubeconfig-empty",
    "kubeconfig-not-yaml",
    "kubeconfig-no-current-context",
    "kubeconfig-exec",
    "kubeconfig-token-file",
    "api-server-unreachable",
    "wrong-ca-data",
    "reader-sa-deleted",
    "reader-token-other-cluster", // zz_destructive: runs last; its revert restarts istiod
    "reader-token-expiring",
    "no-tokenreview-rbac", // portable.rs
    "istiod-service-missing",
    "istiod-service-selector",
    "istiod-no-endpoints",
    "istiod-unreachable",
    "exposure-no-webhook-port",        // exposure.rs
    "exposure-address-mismatch",       // exposure.rs
    "exposure-virtualservice-missing", // exposure.rs
    "gateway-no-cluster-id",
    "gateway-audience",
    "gateway-no-projected-token",
    "gateway-sa-deleted",     // portable.rs
    "root-configmap-missing", // portable.rs
    "stale-root",
    "partial-cacerts",
    "chain-wrong-trust-domain",
    "network-mismatch",
    "xds-node-namespace",            // tests/testbed_e2e/xds.rs
    "xds-discovery-address-missing", // tests/testbed_e2e/xds.rs
    "xds-root-ca-mismatch",          // tests/testbed_e2e/xds.rs
    "webhook-missing",               // tests/testbed_e2e/webhook.rs
    "webhook-ca-bundle-mismatch",    // tests/testbed_e2e/webhook.rs
    "webhook-wrong-service",         // tests/testbed_e2e/webhook.rs
    "webhook-port-closed",           // tests/testbed_e2e/netfaults.rs (lb_without_15017)
];

/// Lab faults the test bed cannot express with kubectl, and why.
pub const NOT_EXPRESSIBLE: &[(&str, &str)] = &[
    (
        "exposure-gateway-missing",
        "not reproduced on the test bed yet (it would be Gateway istiod-gateway deleted)",
    ),
    (
        "exposure-lb-pending",
        "the bed's slice address (192.0.2.10) does not answer, so a pending LoadBalancer fails there, where the lab's istiod answers and it warns",
    ),
    (
        "chain-single-element",
        "the real istiod always returns the whole chain",
    ),
    ("chain-clock-skew", "needs istiod's clock moved"),
    (
        "secret-points-at-primary",
        "not reproduced on the test bed yet (it would be the remote secret rewritten with the primary's --server)",
    ),
    (
        "istiod-stale-clusters",
        "needs the real istiod's remote-secret controller hung, which happens only sometimes (after deleting a remote cluster that never synced) and cannot be caused on purpose",
    ),
    (
        "xds-not-ready",
        "the real istiod is ready once its caches synced; it refuses xDS as not ready only while it starts",
    ),
];

// ------------------------------------------------------------------ helpers

pub(crate) fn b64e(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub(crate) fn b64d(v: &Value) -> Result<String, String> {
    let s = v.as_str().ok_or("secret data is not a string")?;
    let b = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("secret data is not base64: {e}"))?;
    String::from_utf8(b).map_err(|e| format!("secret data is not UTF-8: {e}"))
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The remote secret's kubeconfig, changed by `f`, written back (`how`:
/// Replace = an update istiod sees as a change; Recreate = delete and create,
/// a secret istiod sees for the first time).
pub(crate) fn edit_remote_kubeconfig(
    s: &mut Session,
    how: Restore,
    f: impl FnOnce(&str) -> String,
) -> Result<(), String> {
    let sec = s.save(Cluster::Primary, "secret", Some(NS), REMOTE_SECRET, how)?;
    let key = s.tb.remote_cluster_id.clone();
    let kc = b64d(&sec["data"][&key])?;
    let changed = f(&kc);
    assert_ne!(changed, kc, "the edit changed nothing");
    let mut new = sec.clone();
    new["data"][&key] = json!(b64e(&changed));
    s.write(Cluster::Primary, &new, how)
}

/// Replaces the `token:` line of a kubeconfig's user.
fn replace_token_line(kc: &str, with: &str) -> String {
    let mut n = 0;
    let out: Vec<String> = kc
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("token:") {
                n += 1;
                with.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        n, 1,
        "the remote secret's kubeconfig should have one token line"
    );
    out.join("\n") + "\n"
}

pub(crate) fn set_token(kc: &str, t: &Token) -> String {
    replace_token_line(kc, &format!("    token: {}", t.0))
}

/// Replaces one `key: value` line of a kubeconfig (first match).
fn replace_field(kc: &str, key: &str, value: &str) -> String {
    let mut done = false;
    let out: Vec<String> = kc
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if !done && t.starts_with(&format!("{key}:")) {
                done = true;
                format!("{}{key}: {value}", &l[..l.len() - t.len()])
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(done, "no {key}: line in the kubeconfig");
    out.join("\n") + "\n"
}

/// Deletes and recreates the gateway Pod (pods are immutable) changed by `f`.
fn edit_gateway_pod(s: &mut Session, f: impl FnOnce(&mut Value)) -> Result<(), String> {
    let pod = s.save(Cluster::Remote, "pod", Some(NS), GATEWAY, Restore::Recreate)?;
    let mut p = pod.clone();
    f(&mut p);
    s.write(Cluster::Remote, &p, Restore::Recreate)
}

fn proxy_container(p: &mut Value) -> &mut Value {
    p["spec"]["containers"]
        .as_array_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"] == "istio-proxy"))
        .expect("istio-proxy container")
}

fn set_env(p: &mut Value, name: &str, value: Option<&str>) {
    let env = proxy_container(p)["env"].as_array_mut().expect("env");
    env.retain(|e| e["name"] != name);
    if let Some(v) = value {
        env.push(json!({"name": name, "value": v}));
    }
}

/// The gateway view with another token (same SA, bound to the pod).
fn with_token(tb: &Testbed, audience: Option<&str>) -> Result<GatewayView, String> {
    Ok(GatewayView {
        token: tb.token(Cluster::Remote, GATEWAY_SA, audience, Some(GATEWAY), "10m")?,
        ..GatewayView::healthy(tb)?
    })
}

pub(crate) fn istiod_slice_name(tb: &Testbed) -> Result<String, String> {
    let out = tb.kubectl(
        Cluster::Remote,
        &[
            "-n",
            NS,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=istiod",
            "-o",
            "json",
        ],
    )?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v["items"][0]["metadata"]["name"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the remote has no istiod EndpointSlice".into())
}

/// Removes and restores the remote secret's label, so istiod drops the
/// remote cluster and adds it again (and re-reads the remote namespace).
fn bounce_remote_secret(tb: &Testbed) -> Result<(), String> {
    tb.kubectl(
        Cluster::Primary,
        &[
            "-n",
            NS,
            "label",
            "secret",
            REMOTE_SECRET,
            &format!("{MC_LABEL}-"),
        ],
    )?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    tb.kubectl(
        Cluster::Primary,
        &[
            "-n",
            NS,
            "label",
            "secret",
            REMOTE_SECRET,
            &format!("{MC_LABEL}=true"),
            "--overwrite",
        ],
    )?;
    Ok(())
}

/// Makes istiod stop writing `istio-ca-root-cert` into the remote: remove
/// the remote namespace's controlPlaneClusters annotation and have istiod
/// re-add the cluster (it reads the annotation only then; measured: while the
/// cluster stays registered, istiod rewrites a deleted or changed ConfigMap
/// within ~100 ms). Reverted in the opposite order.
pub(crate) fn stop_istiod_writing_root(s: &mut Session) -> Result<(), String> {
    let bounce_by_hand = format!(
        "{} ; {}",
        s.tb.command_line(
            Cluster::Primary,
            &[
                "-n",
                NS,
                "label",
                "secret",
                REMOTE_SECRET,
                &format!("{MC_LABEL}-")
            ]
        ),
        s.tb.command_line(
            Cluster::Primary,
            &[
                "-n",
                NS,
                "label",
                "secret",
                REMOTE_SECRET,
                &format!("{MC_LABEL}=true")
            ]
        )
    );
    s.on_revert(
        "bounce the remote secret so istiod re-reads the annotation",
        bounce_by_hand,
        bounce_remote_secret,
    );
    let ns = s.save(Cluster::Remote, "namespace", None, NS, Restore::Replace)?;
    let mut n = ns.clone();
    n["metadata"]["annotations"]
        .as_object_mut()
        .ok_or("namespace without annotations")?
        .remove(CPC_ANNOTATION)
        .ok_or("no controlPlaneClusters annotation")?;
    s.write(Cluster::Remote, &n, Restore::Replace)?;
    bounce_remote_secret(s.tb)?;
    s.wait_istiod_log(
        "should join leader-election for cluster remote: false",
        std::time::Duration::from_secs(10),
    )
}

// ------------------------------------------------------------------ row 16: istiod's own settings

/// istiod restarted with TOKEN_AUDIENCES=other-ca, and described in the
/// primary as a cluster runs it: a Deployment `istiod` whose env says so
/// (the test bed's istiod is a process, so the test writes that object).
/// meshtrace reads istiod's audiences there (control-plane) and names them at
/// gateway-token, as in the lab; the real istiod refuses the gateway.
/// Reverted by restarting istiod with its default environment.
#[test]
fn istiod_token_audiences() {
    run_case(lab("istiod-token-audiences"), |s| {
        s.on_revert(
            "restart istiod without TOKEN_AUDIENCES",
            restart_istiod_by_hand(s.tb),
            |tb| restart_istiod(tb, &[]),
        );
        restart_istiod(s.tb, &["TOKEN_AUDIENCES=other-ca"])?;
        if !s
            .tb
            .exists(Cluster::Primary, "deployment", Some(NS), "istiod")?
        {
            s.create(
                Cluster::Primary,
                &istiod_deployment(&[("TOKEN_AUDIENCES", "other-ca")]),
            )?;
        }
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("is invalid for the target audiences [\"other-ca\"]")
                .says("TOKEN_AUDIENCES"),
        )
    });
}

/// istiod's Deployment as Istio's chart makes it, with the test bed's
/// istiod env plus `extra` (no pods: the bed runs istiod as a process).
fn istiod_deployment(extra: &[(&str, &str)]) -> Value {
    let mut env = vec![
        json!({"name": "REVISION", "value": "default"}),
        json!({"name": "CLUSTER_ID", "value": "primary"}),
        json!({"name": "EXTERNAL_ISTIOD", "value": "true"}),
        json!({"name": "PILOT_CERT_PROVIDER", "value": "istiod"}),
        json!({"name": "JWT_POLICY", "value": "third-party-jwt"}),
    ];
    env.extend(extra.iter().map(|(k, v)| json!({"name": k, "value": v})));
    let labels = json!({"app": "istiod", "istio": "pilot", "istio.io/rev": "default"});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "istiod", "istio": "pilot"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "discovery",
                    "image": "docker.io/istio/pilot:1.28.0",
                    "args": ["discovery", "--monitoringAddr=:15014"],
                    "env": env,
                }]},
            },
        },
    })
}

// ------------------------------------------------------------------ catalogue row 1-3: the remote secret

#[test]
fn no_remote_secret() {
    run_case(lab("no-remote-secret"), |s| {
        s.delete(Cluster::Primary, "secret", Some(NS), REMOTE_SECRET)?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("client claims to be in cluster \"remote\""),
        )
    });
}

#[test]
fn secret_wrong_namespace() {
    run_case(lab("secret-wrong-namespace"), |s| {
        let sec = s.save(
            Cluster::Primary,
            "secret",
            Some(NS),
            REMOTE_SECRET,
            Restore::Replace,
        )?;
        let mut copy = sec.clone();
        copy["metadata"]["namespace"] = json!("default");
        s.create(Cluster::Primary, &copy)?;
        s.delete(Cluster::Primary, "secret", Some(NS), REMOTE_SECRET)?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("client claims to be in cluster \"remote\""),
        )
    });
}

#[test]
fn cluster_id_is_primary() {
    run_case(lab("cluster-id-is-primary"), |s| {
        let sec = s.save(
            Cluster::Primary,
            "secret",
            Some(NS),
            REMOTE_SECRET,
            Restore::Replace,
        )?;
        let kc = sec["data"][&s.tb.remote_cluster_id].clone();
        let mut new = sec.clone();
        new["data"] = json!({ "primary": kc });
        s.write(Cluster::Primary, &new, Restore::Replace)?;
        edit_gateway_pod(s, |p| set_env(p, "ISTIO_META_CLUSTER_ID", Some("primary")))?;
        // The gateway sends clusterid "primary": istiod reviews its token
        // with the primary's API server, which did not issue it.
        let g = GatewayView {
            cluster_id: "primary".into(),
            ..GatewayView::healthy(s.tb)?
        };
        Ok(Plan::new(s.tb, g, Want::Unauthenticated)
            .log("failed to validate the JWT from cluster \"primary\""))
    });
}

// ------------------------------------------------------------------ rows 4-5: the kubeconfig istiod loads
// A remote secret created with a bad kubeconfig (Restore::Recreate): istiod
// never registers the cluster. An *update* to a bad kubeconfig is different:
// see kubeconfig_update_keeps_old_cluster.

#[test]
fn kubeconfig_empty() {
    run_case(lab("kubeconfig-empty"), |s| {
        let sec = s.save(
            Cluster::Primary,
            "secret",
            Some(NS),
            REMOTE_SECRET,
            Restore::Recreate,
        )?;
        let mut new = sec.clone();
        new["data"][&s.tb.remote_cluster_id] = json!("");
        s.write(Cluster::Primary, &new, Restore::Recreate)?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("kubeconfig is empty"),
        )
    });
}

#[test]
fn kubeconfig_not_yaml() {
    run_case(lab("kubeconfig-not-yaml"), |s| {
        edit_remote_kubeconfig(s, Restore::Recreate, |_| "this: is: not: yaml: [".into())?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("kubeconfig cannot be loaded"),
        )
    });
}

#[test]
fn kubeconfig_no_current_context() {
    run_case(lab("kubeconfig-no-current-context"), |s| {
        edit_remote_kubeconfig(s, Restore::Recreate, |kc| {
            kc.lines()
                .filter(|l| !l.starts_with("current-context:"))
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        })?;
        // Measured: istiod's words are client-go's, not "kubeconfig is not valid".
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
            .log("create remote cluster failed: invalid configuration: no configuration has been provided"))
    });
}

const EXEC_USER: &str = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token, --cluster-name, remote]";

#[test]
fn kubeconfig_exec() {
    run_case(lab("kubeconfig-exec"), |s| {
        edit_remote_kubeconfig(s, Restore::Recreate, |kc| replace_token_line(kc, EXEC_USER))?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("kubeconfig is not allowed: exec is not allowed"),
        )
    });
}

#[test]
fn kubeconfig_token_file() {
    run_case(lab("kubeconfig-token-file"), |s| {
        edit_remote_kubeconfig(s, Restore::Recreate, |kc| {
            replace_token_line(
                kc,
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
            )
        })?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("tokenFile is not allowed"),
        )
    });
}

/// Measured: when a working remote secret is *updated* to a kubeconfig istiod
/// refuses, istiod logs the refusal but keeps the cluster it built from the
/// previous kubeconfig, and goes on authenticating the gateway with it (until
/// it restarts). meshtrace still names remote-kubeconfig: the secret as it is
/// now would not load.
#[test]
fn kubeconfig_update_keeps_old_cluster() {
    run_case(
        testbed_only(
            "kubeconfig-exec-update",
            StepId::RemoteKubeconfig,
            Status::Fail,
            "exec is not allowed",
        ),
        |s| {
            edit_remote_kubeconfig(s, Restore::Replace, |kc| replace_token_line(kc, EXEC_USER))?;
            s.wait_istiod_log(
                "create remote cluster failed: kubeconfig is not allowed: exec is not allowed",
                std::time::Duration::from_secs(10),
            )?;
            Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).exception(
            "istiod keeps the remote cluster it built from the previous, valid kubeconfig until it restarts; the next restart breaks authentication",
        ))
        },
    );
}

// ------------------------------------------------------------------ rows 6-9: the remote API server and the reader identity
//
// ISTIOD_HANG: a remote secret *updated* to a kubeconfig that builds but
// never syncs (unreachable server, wrong CA, rejected token), then updated
// back, leaves istiod's secret controller hung: the next deletion of that
// cluster (a changed data key, a deleted secret) blocks forever in
// deleteCluster -> kube client Shutdown -> informerFactory.Shutdown
// (wg.Wait), and istiod never processes another remote-secret event
// (measured; it then refuses the gateway with "remote clusters []" until it
// restarts). So these faults are injected and reverted as a new secret
// (delete + create): measured 8 of 8 clean for an unreachable server and a
// wrong CA. A cluster whose token the remote rejects (401) hangs istiod even
// that way (3 of 4, also after waiting out the 30 s sync timeout): see
// zz_destructive::reader_token_other_cluster.

#[test]
fn api_server_unreachable() {
    run_case(lab("api-server-unreachable"), |s| {
        let port = closed_port();
        edit_remote_kubeconfig(s, Restore::Recreate, |kc| {
            replace_field(kc, "server", &format!("https://127.0.0.1:{port}"))
        })?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("connection refused"),
        )
    });
}

#[test]
fn wrong_ca_data() {
    run_case(lab("wrong-ca-data"), |s| {
        // The primary API server's CA: a real CA, just not the remote's.
        let other = std::fs::read_to_string(s.tb.state.join("pki/primary/ca.crt"))
            .map_err(|e| format!("primary CA: {e}"))?;
        edit_remote_kubeconfig(s, Restore::Recreate, |kc| {
            replace_field(kc, "certificate-authority-data", &b64e(&other))
        })?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("certificate signed by unknown authority"),
        )
    });
}

#[test]
fn reader_sa_deleted() {
    run_case(lab("reader-sa-deleted"), |s| {
        // The reader token is bound to the service account's UID: a recreated
        // account does not revive it, so the revert also mints a new token
        // into the remote secret (runs after the account is restored).
        let by_hand = format!(
            "{} ; then put the new token into the kubeconfig under key remote of {} (secret {NS}/{REMOTE_SECRET})",
            s.tb.command_line(
                Cluster::Remote,
                &[
                    "-n",
                    NS,
                    "create",
                    "token",
                    READER_SA,
                    "--duration",
                    "8760h"
                ]
            ),
            s.tb.context(Cluster::Primary)
        );
        s.on_revert(
            "mint a new reader token into the remote secret",
            by_hand,
            |tb| {
                let t = tb.token(Cluster::Remote, READER_SA, None, None, "8760h")?;
                let mut sec = tb
                    .get(Cluster::Primary, "secret", Some(NS), REMOTE_SECRET)?
                    .ok_or("the remote secret is gone")?;
                let key = tb.remote_cluster_id.clone();
                let kc = b64d(&sec["data"][&key])?;
                sec["data"][&key] = json!(b64e(&set_token(&kc, &t)));
                // Delete and create, not replace: see ISTIOD_HANG.
                let body = serde_json::to_vec(&clean(&sec)).expect("JSON");
                tb.kubectl(
                    Cluster::Primary,
                    &["-n", NS, "delete", "secret", REMOTE_SECRET, "--wait=true"],
                )?;
                tb.kubectl_stdin(Cluster::Primary, &["create", "-f", "-"], &body)
                    .map(|_| ())
            },
        );
        s.delete(Cluster::Remote, "serviceaccount", Some(NS), READER_SA)?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("failed to validate the JWT from cluster \"remote\""),
        )
    });
}

#[test]
fn reader_token_expiring() {
    run_case(lab("reader-token-expiring"), |s| {
        let t = s.tb.token(Cluster::Remote, READER_SA, None, None, "48h")?;
        edit_remote_kubeconfig(s, Restore::Replace, |kc| set_token(kc, &t))?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
    });
}

// ------------------------------------------------------------------ rows 10, 15: the remote's istiod Service
// istiod does not need these objects to authenticate the gateway (the CSR is
// sent to istiod's real address), so it must keep issuing.

#[test]
fn istiod_service_missing() {
    // The EndpointSlice stays (no controller removes it); the lab drops both.
    run_case(lab("istiod-service-missing"), |s| {
        s.delete(Cluster::Remote, "service", Some(NS), "istiod")?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
    });
}

#[test]
fn istiod_service_selector() {
    run_case(lab("istiod-service-selector"), |s| {
        let svc = s.save(
            Cluster::Remote,
            "service",
            Some(NS),
            "istiod",
            Restore::Replace,
        )?;
        let mut n = svc.clone();
        n["spec"]["selector"] = json!({"app": "istiod"});
        s.write(Cluster::Remote, &n, Restore::Replace)?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
    });
}

#[test]
fn istiod_service_no_15012() {
    run_case(
        testbed_only(
            "istiod-service-no-15012",
            StepId::RemoteIstiodEndpoint,
            Status::Fail,
            "15012",
        ),
        |s| {
            let svc = s.save(
                Cluster::Remote,
                "service",
                Some(NS),
                "istiod",
                Restore::Replace,
            )?;
            let mut n = svc.clone();
            n["spec"]["ports"]
                .as_array_mut()
                .ok_or("no ports")?
                .retain(|p| p["port"] != 15012);
            s.write(Cluster::Remote, &n, Restore::Replace)?;
            Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
        },
    );
}

#[test]
fn istiod_no_endpoints() {
    run_case(lab("istiod-no-endpoints"), |s| {
        let name = istiod_slice_name(s.tb)?;
        s.delete(Cluster::Remote, "endpointslice", Some(NS), &name)?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
    });
}

#[test]
fn istiod_unreachable() {
    // The EndpointSlice points at a closed port, and meshtrace dials what the
    // EndpointSlice says (no --istiod-addr), as the gateway does.
    run_case(lab("istiod-unreachable"), |s| {
        let name = istiod_slice_name(s.tb)?;
        let slice = s.save(
            Cluster::Remote,
            "endpointslice",
            Some(NS),
            &name,
            Restore::Replace,
        )?;
        // Not 127.0.0.1: the API server refuses loopback addresses here.
        let ip = crate::probe::local_ip()?;
        let port = crate::probe::closed_port_on(ip);
        // 15017 stays reachable at the new address, as in the lab (its
        // webhook listener is apart): a pass-through to istiod's webhook port.
        let hook =
            s.rt.block_on(crate::probe::passthrough(ip, s.tb.istiod_webhook.clone()));
        let mut n = slice.clone();
        n["endpoints"] = json!([{"addresses": [ip.to_string()], "conditions": {"ready": true}}]);
        for p in n["ports"].as_array_mut().ok_or("no ports")? {
            if p["name"] == "tcp-istiod" {
                p["port"] = json!(port);
            }
            if p["name"] == "tcp-webhook" {
                p["port"] = json!(hook.port());
            }
        }
        s.write(Cluster::Remote, &n, Restore::Replace)?;
        // The primary's exposure agrees with the slice (externalIPs, the
        // same port), as in the lab: only the path is dead.
        let ew = s.save(
            Cluster::Primary,
            "service",
            Some(NS),
            "istio-eastwestgateway",
            Restore::Replace,
        )?;
        let mut e = ew.clone();
        e["spec"]["externalIPs"] = json!([ip.to_string()]);
        for p in e["spec"]["ports"].as_array_mut().ok_or("no ports")? {
            if p["name"] == "tls-istiod" {
                p["port"] = json!(port);
            }
            if p["name"] == "tls-webhook" {
                p["port"] = json!(hook.port());
            }
        }
        s.write(Cluster::Primary, &e, Restore::Replace)?;
        let gateway = GatewayView {
            addr: format!("{ip}:{port}"),
            ..GatewayView::healthy(s.tb)?
        };
        let mut plan = Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).also(
            "the gateway dials the EndpointSlice's address",
            gateway,
            Want::NotReached,
        );
        plan.trace_opts = crate::probe::options(None);
        Ok(plan)
    });
}

// ------------------------------------------------------------------ rows 2, 11, 12: the gateway

#[test]
fn gateway_no_cluster_id() {
    run_case(lab("gateway-no-cluster-id"), |s| {
        edit_gateway_pod(s, |p| set_env(p, "ISTIO_META_CLUSTER_ID", None))?;
        // No cluster ID: the gateway sends none, istiod reviews the token
        // with its own (primary) API server.
        let g = GatewayView {
            cluster_id: String::new(),
            ..GatewayView::healthy(s.tb)?
        };
        // istiod logs the empty ID as such, then reviews with the primary.
        Ok(Plan::new(s.tb, g, Want::Unauthenticated)
            .log("failed to validate the JWT from cluster \"\": the service account authentication returns an error: invalid bearer token"))
    });
}

#[test]
fn gateway_audience() {
    run_case(lab("gateway-audience"), |s| {
        edit_gateway_pod(s, |p| {
            for v in p["spec"]["volumes"].as_array_mut().expect("volumes") {
                if v["name"] == "istio-token" {
                    v["projected"]["sources"][0]["serviceAccountToken"]["audience"] =
                        json!("kubernetes.default.svc");
                }
            }
        })?;
        let g = with_token(s.tb, Some("kubernetes.default.svc"))?;
        Ok(Plan::new(s.tb, g, Want::Unauthenticated).log("is invalid for the target audiences"))
    });
}

#[test]
fn gateway_no_projected_token() {
    run_case(lab("gateway-no-projected-token"), |s| {
        edit_gateway_pod(s, |p| {
            p["spec"]["volumes"]
                .as_array_mut()
                .expect("volumes")
                .retain(|v| v["name"] != "istio-token");
            proxy_container(p)["volumeMounts"]
                .as_array_mut()
                .expect("mounts")
                .retain(|m| m["name"] != "istio-token");
        })?;
        // Without the projected token the agent sends the pod's default
        // token: the API server's own audience.
        let g = with_token(s.tb, None)?;
        Ok(Plan::new(s.tb, g, Want::Unauthenticated).log("is invalid for the target audiences"))
    });
}

/// CA_ADDR with the cluster-domain suffix: the gateway's TLS server name is
/// then a name istiod's certificate does not carry.
#[test]
fn gateway_ca_addr_fqdn() {
    run_case(
        testbed_only(
            "gateway-ca-addr-fqdn",
            StepId::IstiodTls,
            Status::Fail,
            "valid for",
        ),
        |s| {
            let host = "istiod.istio-system.svc.cluster.local";
            edit_gateway_pod(s, |p| set_env(p, "CA_ADDR", Some(&format!("{host}:15012"))))?;
            let gateway = GatewayView {
                server_name: host.into(),
                ..GatewayView::healthy(s.tb)?
            };
            Ok(
                Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).also(
                    "TLS with the gateway's server name",
                    gateway,
                    Want::NotReached,
                ),
            )
        },
    );
}

/// istiod restarted with a serving certificate (`--tlsCertFile`, signed by
/// the mesh CA) valid only for istiod.wrong.svc (catalogue row 14): the
/// gateway, dialling istiod.istio-system.svc, cannot complete TLS at all, so
/// istiod neither issues nor refuses; with the certificate's own name it
/// issues. Reverted by restarting istiod on its own certificate.
#[test]
fn istiod_cert_wrong_san() {
    run_case(lab("istiod-cert-wrong-san"), |s| {
        let dir = s.tb.state.join("e2e-wrong-san");
        let pki = s.tb.state.join("pki/istio");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        s.on_revert(
            "restart istiod on its own serving certificate",
            restart_istiod_by_hand(s.tb),
            |tb| restart_istiod(tb, &[]),
        );
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("openssl: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:istiod.wrong.svc\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=istiod-wrong",
        ])?;
        let ca_cert = pki.join("ca-cert.pem");
        let ca_key = pki.join("ca-key.pem");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            &ca_cert.to_string_lossy(),
            "-CAkey",
            &ca_key.to_string_lossy(),
            "-CAcreateserial",
            "-CAserial",
            "ca.srl",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "leaf.pem",
        ])?;
        let leaf = std::fs::read_to_string(dir.join("leaf.pem")).map_err(|e| e.to_string())?;
        let inter = std::fs::read_to_string(&ca_cert).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("tls.crt"), format!("{leaf}{inter}")).map_err(|e| e.to_string())?;
        restart_istiod(
            s.tb,
            &[
                &format!("--tlsCertFile={}", dir.join("tls.crt").display()),
                &format!("--tlsKeyFile={}", dir.join("tls.key").display()),
                &format!("--caCertFile={}", pki.join("root-cert.pem").display()),
            ],
        )?;
        let right_name = GatewayView {
            server_name: "istiod.wrong.svc".into(),
            ..GatewayView::healthy(s.tb)?
        };
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::NotReached)
                .exception("the gateway cannot complete TLS with istiod, so istiod neither issues nor refuses")
                .also("TLS with the name istiod's certificate carries", right_name, Want::Issued),
        )
    });
}

// ------------------------------------------------------------------ rows 13, 17, 18: roots and CA material

#[test]
fn stale_root() {
    run_case(lab("stale-root"), |s| {
        stop_istiod_writing_root(s)?;
        let old =
            meshtrace::lab::pki::Ca::root("Root CA (before rotation)", "Istio", 3650).cert_pem;
        let cm = s.save(
            Cluster::Remote,
            "configmap",
            Some(NS),
            "istio-ca-root-cert",
            Restore::Replace,
        )?;
        let mut n = cm.clone();
        n["data"]["root-cert.pem"] = json!(old);
        s.write(Cluster::Remote, &n, Restore::Replace)?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now =
            s.tb.get(Cluster::Remote, "configmap", Some(NS), "istio-ca-root-cert")?
                .ok_or("istio-ca-root-cert vanished")?;
        if now["data"]["root-cert.pem"] != json!(old) {
            return Err(
                "istiod rewrote istio-ca-root-cert although it no longer leads the remote".into(),
            );
        }
        // istiod itself is fine; the gateway, trusting the stale root, cannot verify it.
        let gateway = GatewayView {
            root_pem: old,
            ..GatewayView::healthy(s.tb)?
        };
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).also(
                "TLS with the gateway's stale root",
                gateway,
                Want::NotReached,
            ),
        )
    });
}

#[test]
fn partial_cacerts() {
    // istiod runs out of cluster and reads its CA from ROOT_CA_DIR, a copy:
    // changing the Secret does not reach it (in a cluster it would matter at
    // the next restart), so it must keep issuing.
    run_case(lab("partial-cacerts"), |s| {
        let sec = s.save(
            Cluster::Primary,
            "secret",
            Some(NS),
            "cacerts",
            Restore::Replace,
        )?;
        let mut n = sec.clone();
        n["data"]
            .as_object_mut()
            .ok_or("cacerts without data")?
            .remove("cert-chain.pem")
            .ok_or("no cert-chain.pem")?;
        s.write(Cluster::Primary, &n, Restore::Replace)?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
    });
}

/// A new plug-in CA whose root expires in 3 days (catalogue row 18), in the
/// primary's `cacerts` and in the files istiod reads (ROOT_CA_DIR), and istiod
/// restarted on it: istiod signs with it and writes its root into the
/// remote's `istio-ca-root-cert`, so everything still verifies, and the root
/// is about to expire. Reverted: the Secret, the files, another restart.
#[test]
fn root_expiring() {
    use meshtrace::lab::pki::Ca;
    run_case(lab("root-expiring"), |s| {
        let root = Ca::root("testbed mesh root (expiring)", "meshtrace testbed", 3);
        let inter = root.intermediate("testbed mesh intermediate", "meshtrace testbed", 365);
        let files: Vec<(&str, String)> = vec![
            ("ca-cert.pem", inter.cert_pem.clone()),
            ("ca-key.pem", inter.key_pem_for_lab_secret().to_string()),
            ("root-cert.pem", root.cert_pem.clone()),
            ("cert-chain.pem", inter.chain_pem.concat()),
        ];
        let dir = s.tb.state.join("istiod/etc/cacerts");
        let mut before = Vec::new();
        for (name, _) in &files {
            let bytes = std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
            before.push((name.to_string(), bytes));
        }
        let dir2 = dir.clone();
        s.on_revert(
            "put istiod's CA files back and restart istiod",
            format!(
                "cp the original CA files back into {} (they are the cacerts Secret's), then {}",
                dir.display(),
                restart_istiod_by_hand(s.tb)
            ),
            move |tb| {
                for (name, bytes) in &before {
                    std::fs::write(dir2.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
                }
                restart_istiod(tb, &[])
            },
        );
        let sec = s.save(
            Cluster::Primary,
            "secret",
            Some(NS),
            "cacerts",
            Restore::Replace,
        )?;
        let mut n = sec.clone();
        for (name, pem) in &files {
            n["data"][*name] = json!(b64e(pem));
        }
        s.write(Cluster::Primary, &n, Restore::Replace)?;
        for (name, pem) in &files {
            std::fs::write(dir.join(name), pem).map_err(|e| format!("{name}: {e}"))?;
        }
        restart_istiod(s.tb, &[])?;
        // istiod writes its (new) root into the remote's istio-ca-root-cert.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let cm =
                s.tb.get(Cluster::Remote, "configmap", Some(NS), "istio-ca-root-cert")?;
            let now = cm
                .as_ref()
                .and_then(|c| c["data"]["root-cert.pem"].as_str());
            if now.is_some_and(|p| p.trim() == root.cert_pem.trim()) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err("istiod did not write the new root into the remote's istio-ca-root-cert within 15 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let mut gateway = GatewayView::healthy(s.tb)?;
        gateway.root_pem = root.cert_pem.clone();
        Ok(Plan::new(s.tb, gateway, Want::Issued))
    });
}

#[test]
fn chain_wrong_trust_domain() {
    // The primary's mesh config (ConfigMap istio) sets another trust domain;
    // the test bed's mesh-config-sync writes it into istiod's --meshConfig file
    // (as a kubelet updates a ConfigMap volume), istiod picks it up at once and
    // signs for it; the gateway expects cluster.local.
    run_case(lab("chain-wrong-trust-domain"), |s| {
        let mut cm = s.save(
            Cluster::Primary,
            "configmap",
            Some(NS),
            "istio",
            Restore::Replace,
        )?;
        let mesh = cm["data"]["mesh"].as_str().unwrap_or_default().to_string();
        let changed = mesh.replace("trustDomain: cluster.local", "trustDomain: other.local");
        if changed == mesh {
            return Err(format!(
                "the mesh config has no `trustDomain: cluster.local` line:\n{mesh}"
            ));
        }
        cm["data"]["mesh"] = json!(changed);
        s.write(Cluster::Primary, &cm, Restore::Replace)?;
        let want = Want::IssuedFor(format!("spiffe://other.local/ns/{NS}/sa/{GATEWAY_SA}"));
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, want))
    });
}

// ------------------------------------------------------------------ row 20 and warnings

#[test]
fn network_mismatch() {
    run_case(lab("network-mismatch"), |s| {
        let svc = s.save(
            Cluster::Remote,
            "service",
            Some(NS),
            GATEWAY,
            Restore::Replace,
        )?;
        let mut n = svc.clone();
        n["metadata"]["labels"]["topology.istio.io/network"] = json!("network1");
        s.write(Cluster::Remote, &n, Restore::Replace)?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
    });
}

/// Two labelled Secrets with the same data key: istiod registers one.
#[test]
fn secret_duplicate_key() {
    run_case(
        testbed_only(
            "secret-duplicate-key",
            StepId::RemoteSecret,
            Status::Warn,
            "already been registered",
        ),
        |s| {
            let sec = s.save(
                Cluster::Primary,
                "secret",
                Some(NS),
                REMOTE_SECRET,
                Restore::Replace,
            )?;
            let mut copy = sec.clone();
            copy["metadata"]["name"] = json!(format!("{REMOTE_SECRET}-copy"));
            s.create(Cluster::Primary, &copy)?;
            Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued)
                .log("cluster has already been registered"))
        },
    );
}

/// Every lab fault is either reproduced above or listed with a reason.
#[test]
fn every_lab_fault_is_covered_or_explained() {
    for f in meshtrace::lab::faults::FAULTS {
        let covered = COMPARED_WITH_LAB.contains(&f.name);
        let explained = NOT_EXPRESSIBLE.iter().any(|(n, _)| *n == f.name);
        assert!(
            covered ^ explained,
            "lab fault {}: covered {covered}, explained {explained} (exactly one)",
            f.name
        );
    }
    for n in COMPARED_WITH_LAB
        .iter()
        .chain(NOT_EXPRESSIBLE.iter().map(|(n, _)| n))
    {
        assert!(
            meshtrace::lab::faults::find(n).is_some(),
            "{n} is not a lab fault"
        );
    }
}
