//! network-labels: the remote's network name, wherever istiod reads it: the
//! Istio namespace's `topology.istio.io/network` label (the cluster's network,
//! pilot/pkg/serviceregistry/kube/controller/network.go), the gateway pod's
//! label and `ISTIO_META_NETWORK` (the proxy's network), and the label on
//! the gateway's Services (which network a gateway serves).

use super::gateway::{json_word, kubectl_remote_ns, name_of, template_container};
use super::{Settings, kube_err};
use crate::engine::facts::GatewayFacts;
use crate::engine::{Ctx, Outcome};
use crate::findings::{Finding, shell_word};
use crate::model::StepId;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams};
use serde_json::json;

crate::causes! { StepId::NetworkLabels;
    MISMATCH = "mismatch", "the remote's network names disagree";
    READ_REFUSED = "read-refused", "the remote API server refused to show the Istio namespace";
}

pub const LABEL: &str = "topology.istio.io/network";

#[derive(Debug, Clone)]
pub struct NetworkFacts {
    pub gateway: GatewayFacts,
    /// The Istio namespace.
    pub namespace: String,
    /// Its network label (`Ok(None)`: no label, or no such namespace).
    pub namespace_label: Result<Option<String>, String>,
    /// The Services of the gateway's namespace that carry the network label; an error leaves them out.
    pub services: Result<Vec<Service>, String>,
}

pub async fn gather(ctx: &Ctx, gateway: GatewayFacts) -> NetworkFacts {
    let remote = ctx.clusters.remote.clone();
    let ns_api: Api<Namespace> = Api::all(remote.clone());
    let svc_api: Api<Service> = Api::namespaced(remote, &gateway.namespace);
    // Only a Service that carries the label can name a network: the others
    // change nothing in the verdict, so they are not read.
    let labelled = ListParams::default().labels(LABEL);
    let (ns, svcs) = tokio::join!(
        ns_api.get_opt(&ctx.opts.istio_namespace),
        svc_api.list(&labelled)
    );
    NetworkFacts {
        namespace: ctx.opts.istio_namespace.clone(),
        namespace_label: ns
            .map(|n| n.and_then(|n| n.metadata.labels?.get(LABEL).cloned()))
            .map_err(|e| kube_err(&e)),
        services: svcs.map(|l| l.items).map_err(|e| kube_err(&e)),
        gateway,
    }
}

/// Where a network name was seen, and how to change it there.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    Namespace(String),
    PodLabel,
    Env,
    Service(String),
}

impl Place {
    fn words(&self) -> String {
        match self {
            Place::Namespace(n) => format!("namespace {n} label"),
            Place::PodLabel => "gateway pod label".into(),
            Place::Env => "gateway env ISTIO_META_NETWORK".into(),
            Place::Service(n) => format!("service {n} label"),
        }
    }
    /// The object alone, for the one-line summary.
    fn object(&self) -> String {
        match self {
            Place::Namespace(n) => format!("namespace {n}"),
            Place::PodLabel => "the gateway pod".into(),
            Place::Env => "ISTIO_META_NETWORK".into(),
            Place::Service(n) => format!("service {n}"),
        }
    }
}

/// The Services that select the gateway pod (a non-empty selector, all of
/// whose labels the pod has).
fn gateway_services(f: &NetworkFacts) -> Vec<&Service> {
    let gw = &f.gateway;
    f.services
        .as_ref()
        .map(|l| {
            l.iter()
                .filter(|s| {
                    let sel = s.spec.as_ref().and_then(|sp| sp.selector.as_ref());
                    sel.is_some_and(|sel| {
                        !sel.is_empty() && sel.iter().all(|(k, v)| gw.labels.get(k) == Some(v))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn judge(f: &NetworkFacts, s: &Settings) -> Outcome {
    let gw = &f.gateway;
    let mut out = Outcome::new();
    let ns_label = match &f.namespace_label {
        Ok(l) => l.clone(),
        Err(e) => {
            return out.failing(
                Finding::new(
                    &READ_REFUSED,
                    format!("the --remote context cannot get namespace {}", f.namespace),
                )
                .note("the --remote context needs get on namespaces"),
                format!("cannot read namespace {}: {e}", f.namespace),
            );
        }
    };
    let services: Vec<(String, Option<String>)> = gateway_services(f)
        .iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL).cloned()),
            )
        })
        .collect();
    let pod_label = gw.labels.get(LABEL).cloned();
    out.ev(
        "namespace_label",
        json!({"namespace": f.namespace, "value": ns_label}),
    )
    .ev("gateway_pod_label", &pod_label)
    .ev("gateway_env_ISTIO_META_NETWORK", &gw.network)
    .ev(
        "gateway_services",
        services
            .iter()
            .map(|(n, l)| json!({"service": n, "value": l}))
            .collect::<Vec<_>>(),
    );
    let mut seen: Vec<(Place, String)> = Vec::new();
    if let Some(v) = ns_label {
        seen.push((Place::Namespace(f.namespace.clone()), v));
    }
    if let Some(v) = pod_label {
        seen.push((Place::PodLabel, v));
    }
    if let Some(v) = &gw.network {
        seen.push((Place::Env, v.clone()));
    }
    for (n, l) in services {
        if let Some(v) = l {
            seen.push((Place::Service(n), v));
        }
    }
    if seen.is_empty() {
        out.ev("note", "no network labels: a single-network mesh");
        return out.pass();
    }
    let Some(network) = majority(&seen) else {
        return out.pass();
    };
    let wrong: Vec<&(Place, String)> = seen.iter().filter(|(_, v)| *v != network).collect();
    if wrong.is_empty() {
        out.ev("network", &network);
        return out.pass();
    }
    let all = seen
        .iter()
        .map(|(w, v)| format!("{} = {v:?}", w.words()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut cmds = Vec::new();
    let mut unfixed = Vec::new();
    for (place, _) in &wrong {
        match fix(place, &network, gw, s) {
            Some(c) => cmds.push(c),
            None => unfixed.push(place.words()),
        }
    }
    let rest = if unfixed.is_empty() {
        String::new()
    } else {
        format!(
            " meshtrace has no Deployment to change for the {}: set it to {network:?} where the gateway is defined.",
            unfixed.join(" and ")
        )
    };
    out.warning(
        Finding::new(
            &MISMATCH,
            format!(
                "network names disagree: {} {} not {network:?}",
                match wrong.as_slice() {
                    [one] => one.0.object(),
                    [a, b] => format!("{} and {}", a.0.object(), b.0.object()),
                    more => format!("{} places", more.len()),
                },
                if wrong.len() == 1 { "is" } else { "are" }
            ),
        )
        .commands(cmds)
        .note(format!(
            "Sets {network:?}, the name most places agree on (ties go to the gateway's ISTIO_META_NETWORK), on the others; a Deployment change rolls out new gateway pods. If the other clusters know this network by another name, use that one everywhere instead. Make the same change in the remote's install (values.global.network), or its next upgrade reverts it.{rest}"
        )),
        format!("{all}; expected one name everywhere, or cross-network traffic through this gateway is routed as the wrong network"),
    )
}

/// The name most places give; a tie goes to the gateway's own env (the
/// network the proxy tells istiod it is in), then to the first seen.
fn majority(seen: &[(Place, String)]) -> Option<String> {
    let count = |v: &String| seen.iter().filter(|(_, x)| x == v).count();
    let best = seen.iter().map(|(_, v)| count(v)).max()?;
    let tied: Vec<&String> = seen
        .iter()
        .map(|(_, v)| v)
        .filter(|v| count(v) == best)
        .collect();
    let env = seen.iter().find(|(p, _)| *p == Place::Env).map(|(_, v)| v);
    match env {
        Some(e) if tied.contains(&e) => Some(e.clone()),
        _ => tied.first().map(|v| (*v).clone()),
    }
}

fn fix(place: &Place, network: &str, gw: &GatewayFacts, s: &Settings) -> Option<String> {
    let label = format!("{LABEL}={}", shell_word(network));
    let gw_ns = kubectl_remote_ns(s, &gw.namespace);
    match place {
        Place::Namespace(n) => Some(format!(
            "{} label namespace {} {label} --overwrite",
            s.kubectl_remote(),
            shell_word(n)
        )),
        Place::Service(n) => Some(format!(
            "{gw_ns} label service {} {label} --overwrite",
            shell_word(n)
        )),
        // The pod's labels come from its Deployment's template: a label on
        // the pod alone is gone with the next pod.
        Place::PodLabel => {
            let d = gw.deployment.as_ref()?;
            let patch = json!({"spec": {"template": {"metadata": {"labels": {LABEL: network}}}}});
            Some(format!(
                "{gw_ns} patch deployment {} --type=merge -p {}",
                shell_word(name_of(d)),
                json_word(&patch)
            ))
        }
        Place::Env => {
            let d = gw.deployment.as_ref()?;
            template_container(d, &gw.container)?;
            Some(format!(
                "{gw_ns} set env deployment/{} -c {} ISTIO_META_NETWORK={}",
                shell_word(name_of(d)),
                shell_word(&gw.container),
                shell_word(network)
            ))
        }
    }
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let Some(gw) = ctx.facts().gateway.clone() else {
        return Outcome::new().blocked(StepId::GatewayPod, "no gateway pod");
    };
    let facts = gather(ctx, gw).await;
    judge(&facts, &Settings::of(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::Value;

    fn service(name: &str, network: Option<&str>, selector: Value) -> Service {
        let mut labels = json!({"app": name});
        if let Some(n) = network {
            labels[LABEL] = json!(n);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "istio-system", "labels": labels},
            "spec": {"type": "LoadBalancer", "selector": selector,
                     "ports": [{"name": "tls", "port": 15443}]}
        }))
        .unwrap()
    }

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"},
            "spec": {"selector": {"matchLabels": {"app": "istio-eastwestgateway"}},
                     "template": {"metadata": {"labels": {"app": "istio-eastwestgateway"}},
                                  "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}}}
        }))
        .unwrap()
    }

    /// The lab's remote: everything says network2.
    fn facts(
        ns: Option<&str>,
        pod: Option<&str>,
        env: Option<&str>,
        svc: Option<&str>,
    ) -> NetworkFacts {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("app".to_string(), "istio-eastwestgateway".to_string());
        if let Some(p) = pod {
            labels.insert(LABEL.to_string(), p.to_string());
        }
        NetworkFacts {
            gateway: GatewayFacts {
                namespace: "istio-system".into(),
                pod: "istio-eastwestgateway-7d9f5c-abcde".into(),
                network: env.map(str::to_string),
                labels,
                container: "istio-proxy".into(),
                deployment: Some(deployment()),
                ..Default::default()
            },
            namespace: "istio-system".into(),
            namespace_label: Ok(ns.map(str::to_string)),
            services: Ok(vec![
                service(
                    "istio-eastwestgateway",
                    svc,
                    json!({"app": "istio-eastwestgateway"}),
                ),
                // Selects other pods: left out.
                service("istiod", Some("network9"), json!({"app": "istiod"})),
                // No selector (istiod's in a remote): left out.
                service("istiod-remote", Some("network9"), Value::Null),
            ]),
        }
    }

    const NET2: Option<&str> = Some("network2");

    struct Row {
        name: &'static str,
        facts: NetworkFacts,
        status: Status,
        code: Option<&'static str>,
        commands: &'static [&'static str],
        note: &'static str,
    }

    #[test]
    fn judge_table() {
        let no_deployment = {
            let mut f = facts(NET2, Some("network1"), NET2, NET2);
            f.gateway.deployment = None;
            f
        };
        let no_services = NetworkFacts {
            services: Err("403 Forbidden".into()),
            ..facts(NET2, NET2, NET2, Some("network1"))
        };
        let rows = vec![
            Row {
                name: "all agree",
                facts: facts(NET2, NET2, NET2, NET2),
                status: Status::Pass,
                code: None,
                commands: &[],
                note: "",
            },
            Row {
                name: "single network",
                facts: facts(None, None, None, None),
                status: Status::Pass,
                code: None,
                commands: &[],
                note: "",
            },
            Row {
                name: "a Services list refused leaves them out",
                facts: no_services,
                status: Status::Pass,
                code: None,
                commands: &[],
                note: "",
            },
            Row {
                name: "the gateway Service says network1 (the lab's fault)",
                facts: facts(NET2, NET2, NET2, Some("network1")),
                status: Status::Warn,
                code: Some("network-labels/mismatch"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system label service istio-eastwestgateway topology.istio.io/network=network2 --overwrite",
                ],
                note: "\"network2\"",
            },
            Row {
                name: "the namespace says network1",
                facts: facts(Some("network1"), NET2, NET2, NET2),
                status: Status::Warn,
                code: Some("network-labels/mismatch"),
                commands: &[
                    "kubectl --context ctx-remote label namespace istio-system topology.istio.io/network=network2 --overwrite",
                ],
                note: "",
            },
            Row {
                name: "the gateway pod's label is the odd one",
                facts: facts(NET2, Some("network1"), NET2, NET2),
                status: Status::Warn,
                code: Some("network-labels/mismatch"),
                commands: &[
                    r#"kubectl --context ctx-remote -n istio-system patch deployment istio-eastwestgateway --type=merge -p '{"spec":{"template":{"metadata":{"labels":{"topology.istio.io/network":"network2"}}}}}'"#,
                ],
                note: "",
            },
            Row {
                name: "the gateway's env is the odd one",
                facts: facts(NET2, NET2, Some("network1"), NET2),
                status: Status::Warn,
                code: Some("network-labels/mismatch"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system set env deployment/istio-eastwestgateway -c istio-proxy ISTIO_META_NETWORK=network2",
                ],
                note: "",
            },
            Row {
                name: "two against two: the env's side wins",
                facts: facts(NET2, Some("network1"), Some("network1"), NET2),
                status: Status::Warn,
                code: Some("network-labels/mismatch"),
                commands: &[
                    "kubectl --context ctx-remote label namespace istio-system topology.istio.io/network=network1 --overwrite",
                    "kubectl --context ctx-remote -n istio-system label service istio-eastwestgateway topology.istio.io/network=network1 --overwrite",
                ],
                note: "",
            },
            Row {
                name: "a tie goes to the gateway's env",
                facts: facts(Some("network1"), None, NET2, None),
                status: Status::Warn,
                code: Some("network-labels/mismatch"),
                commands: &[
                    "label namespace istio-system topology.istio.io/network=network2 --overwrite",
                ],
                note: "",
            },
            Row {
                name: "no Deployment for the pod's label",
                facts: no_deployment,
                status: Status::Warn,
                code: Some("network-labels/mismatch"),
                commands: &[],
                note: "no Deployment to change for the gateway pod label",
            },
            Row {
                name: "the namespace read is refused",
                facts: NetworkFacts {
                    namespace_label: Err(
                        "403 Forbidden: namespaces \"istio-system\" is forbidden".into()
                    ),
                    ..facts(NET2, NET2, NET2, NET2)
                },
                status: Status::Fail,
                code: Some("network-labels/read-refused"),
                commands: &[],
                note: "get on namespaces",
            },
        ];
        let s = Settings::for_tests();
        let mut seen = Vec::new();
        for r in rows {
            seen.extend(r.code);
            let out = judge(&r.facts, &s);
            assert_eq!(
                out.status,
                Some(r.status),
                "{}: {:?}",
                r.name,
                out.diagnosis
            );
            let f = out.finding.as_ref();
            assert_eq!(f.map(|f| f.code.as_str()), r.code, "{}", r.name);
            let cmds = f.map(|f| f.commands.clone()).unwrap_or_default();
            assert_eq!(cmds.len(), r.commands.len(), "{}: {cmds:?}", r.name);
            for c in &cmds {
                assert!(
                    !super::super::gateway::has_placeholder(c),
                    "{}: {c}",
                    r.name
                );
            }
            for (c, want) in cmds.iter().zip(r.commands) {
                assert!(c.contains(want), "{}: {c:?} lacks {want:?}", r.name);
            }
            let note = f.and_then(|f| f.note.clone()).unwrap_or_default();
            assert!(
                note.contains(r.note),
                "{}: {note:?} lacks {:?}",
                r.name,
                r.note
            );
            if let Some(f) = f {
                assert!(
                    f.summary.chars().count() <= 100,
                    "{}: {}",
                    r.name,
                    f.summary
                );
            }
        }
        for c in CAUSES {
            assert!(seen.contains(&c.code().as_str()), "no row for {}", c.code());
        }
    }

    #[test]
    fn only_the_services_that_select_the_gateway_count() {
        let out = judge(&facts(NET2, NET2, NET2, NET2), &Settings::for_tests());
        assert_eq!(
            out.evidence["gateway_services"],
            json!([{"service": "istio-eastwestgateway", "value": "network2"}])
        );
        assert_eq!(out.evidence["network"], "network2");
    }
}
