//! What the lab serves: the resource table, the discovery documents built
//! from it (legacy and aggregated v2), content negotiation, and server-side
//! printing (meta.k8s.io/v1 Table) for `kubectl get`.

use super::{ApiError, ApiResult, Reply, Req};
use crate::lab::store::Store;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ObjectMeta, ServerAddressByClientCIDR,
};
use k8s_openapi::{Metadata, Resource};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// Deserialize into the k8s-openapi type (validating the shape) and store.
pub(crate) type PutFn = fn(&mut Store, Value) -> Result<(), String>;

fn put_typed<K>(store: &mut Store, v: Value) -> Result<(), String>
where
    K: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned,
{
    let obj: K = serde_json::from_value(v).map_err(|e| e.to_string())?;
    store.put(obj);
    Ok(())
}

pub(crate) enum Storage {
    /// Objects in the store.
    Stored(PutFn),
    /// Create-only review resources computed per request.
    Review,
}

/// A subresource as discovery lists it.
pub(crate) struct SubDef {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

pub(crate) struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [SubDef],
    pub storage: Storage,
}

const STD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const CREATE: &[&str] = &["create"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

macro_rules! stored {
    ($ty:ty, $namespaced:expr, $short:expr, $cats:expr, $verbs:expr, $subs:expr) => {
        ResourceDef {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: "",
            kind: <$ty as Resource>::KIND,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cats,
            verbs: $verbs,
            subresources: $subs,
            storage: Storage::Stored(put_typed::<$ty> as PutFn),
        }
    };
}

macro_rules! review {
    ($ty:ty, $namespaced:expr) => {
        ResourceDef {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: "",
            kind: <$ty as Resource>::KIND,
            namespaced: $namespaced,
            short_names: &[],
            categories: &[],
            verbs: CREATE,
            subresources: &[],
            storage: Storage::Review,
        }
    };
}

macro_rules! status_sub {
    ($kind:expr, $group:expr, $version:expr) => {
        SubDef {
            name: "status",
            group: $group,
            version: $version,
            kind: $kind,
            verbs: STATUS_VERBS,
        }
    };
}

use k8s_openapi::api::{
    admissionregistration as admreg, apps, authentication, authorization, core, discovery as disc,
    rbac,
};

static RESOURCES: &[ResourceDef] = &[
    stored!(
        core::v1::Namespace,
        false,
        &["ns"],
        &[],
        NS_VERBS,
        &[status_sub!("Namespace", "", "v1")]
    ),
    stored!(core::v1::Secret, true, &[], &[], STD, &[]),
    stored!(core::v1::ConfigMap, true, &["cm"], &[], STD, &[]),
    stored!(
        core::v1::Service,
        true,
        &["svc"],
        &["all"],
        STD,
        &[status_sub!("Service", "", "v1")]
    ),
    stored!(core::v1::Endpoints, true, &["ep"], &[], STD, &[]),
    stored!(
        core::v1::Pod,
        true,
        &["po"],
        &["all"],
        STD,
        &[status_sub!("Pod", "", "v1")]
    ),
    stored!(
        core::v1::ServiceAccount,
        true,
        &["sa"],
        &[],
        STD,
        &[SubDef {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: CREATE
        }]
    ),
    stored!(core::v1::Event, true, &["ev"], &[], STD, &[]),
    stored!(core::v1::ResourceQuota, true, &["quota"], &[], STD, &[]),
    stored!(core::v1::LimitRange, true, &["limits"], &[], STD, &[]),
    stored!(
        apps::v1::Deployment,
        true,
        &["deploy"],
        &["all"],
        STD,
        &[
            status_sub!("Deployment", "apps", "v1"),
            SubDef {
                name: "scale",
                group: "autoscaling",
                version: "v1",
                kind: "Scale",
                verbs: STATUS_VERBS,
            }
        ]
    ),
    stored!(
        apps::v1::ReplicaSet,
        true,
        &["rs"],
        &["all"],
        STD,
        &[status_sub!("ReplicaSet", "apps", "v1")]
    ),
    review!(authentication::v1::TokenReview, false),
    review!(authentication::v1::SelfSubjectReview, false),
    review!(authorization::v1::SelfSubjectAccessReview, false),
    review!(authorization::v1::SelfSubjectRulesReview, false),
    review!(authorization::v1::SubjectAccessReview, false),
    review!(authorization::v1::LocalSubjectAccessReview, true),
    stored!(rbac::v1::ClusterRole, false, &[], &[], STD, &[]),
    stored!(rbac::v1::ClusterRoleBinding, false, &[], &[], STD, &[]),
    stored!(rbac::v1::Role, true, &[], &[], STD, &[]),
    stored!(rbac::v1::RoleBinding, true, &[], &[], STD, &[]),
    stored!(disc::v1::EndpointSlice, true, &[], &[], STD, &[]),
    stored!(
        crate::lab::istio_types::Gateway,
        true,
        &["gw"],
        &["istio-io", "networking-istio-io"],
        STD,
        &[]
    ),
    stored!(
        crate::lab::istio_types::VirtualService,
        true,
        &["vs"],
        &["istio-io", "networking-istio-io"],
        STD,
        &[]
    ),
    // The sidecar injector's configuration (kube-apiserver has no short name for it).
    stored!(
        admreg::v1::MutatingWebhookConfiguration,
        false,
        &[],
        &["api-extensions"],
        STD,
        &[]
    ),
];

pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// Groups in the order discovery lists them ("" = core).
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for d in RESOURCES {
        if !out.contains(&(d.group, d.version)) {
            out.push((d.group, d.version));
        }
    }
    out
}

fn singular(d: &ResourceDef) -> String {
    if d.singular.is_empty() {
        d.kind.to_lowercase()
    } else {
        d.singular.to_string()
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

pub(crate) fn version_info() -> Value {
    let info = k8s_openapi::apimachinery::pkg::version::Info {
        major: "1".into(),
        minor: "34".into(),
        git_version: "v1.34.0-meshtrace-lab".into(),
        git_commit: "0000000000000000000000000000000000000000".into(),
        git_tree_state: "clean".into(),
        build_date: "2025-08-27T00:00:00Z".into(),
        go_version: "go1.24.6".into(),
        compiler: "gc".into(),
        platform: "linux/amd64".into(),
        emulation_major: Some("1".into()),
        emulation_minor: Some("34".into()),
        min_compatibility_major: Some("1".into()),
        min_compatibility_minor: Some("33".into()),
    };
    serde_json::to_value(info).unwrap_or(Value::Null)
}

fn resource_list(group: &str, version: &str) -> Option<APIResourceList> {
    let defs: Vec<&ResourceDef> = RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in defs {
        resources.push(APIResource {
            name: d.plural.into(),
            singular_name: singular(d),
            namespaced: d.namespaced,
            kind: d.kind.into(),
            verbs: strings(d.verbs),
            short_names: (!d.short_names.is_empty()).then(|| strings(d.short_names)),
            categories: (!d.categories.is_empty()).then(|| strings(d.categories)),
            ..Default::default()
        });
        for s in d.subresources {
            let other_gv = s.group != d.group || s.version != d.version;
            resources.push(APIResource {
                name: format!("{}/{}", d.plural, s.name),
                singular_name: String::new(),
                namespaced: d.namespaced,
                group: other_gv.then(|| s.group.into()),
                version: other_gv.then(|| s.version.into()),
                kind: s.kind.into(),
                verbs: strings(s.verbs),
                ..Default::default()
            });
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(APIResourceList {
        group_version: gv,
        resources,
    })
}

fn group_doc(group: &str, version: &str) -> APIGroup {
    let gv = GroupVersionForDiscovery {
        group_version: format!("{group}/{version}"),
        version: version.into(),
    };
    APIGroup {
        name: group.into(),
        preferred_version: Some(gv.clone()),
        versions: vec![gv],
        ..Default::default()
    }
}

/// apidiscovery.k8s.io/v2 APIGroupDiscovery for one group.
fn aggregated_group(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .map(|d| {
            let mut r = json!({
                "resource": d.plural,
                "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
                "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": singular(d),
                "verbs": d.verbs,
            });
            if !d.short_names.is_empty() {
                r["shortNames"] = json!(d.short_names);
            }
            if !d.categories.is_empty() {
                r["categories"] = json!(d.categories);
            }
            if !d.subresources.is_empty() {
                r["subresources"] = d
                    .subresources
                    .iter()
                    .map(|s| {
                        json!({
                            "subresource": s.name,
                            "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                            "verbs": s.verbs,
                        })
                    })
                    .collect();
            }
            r
        })
        .collect();
    let mut meta = serde_json::Map::new();
    if !group.is_empty() {
        meta.insert("name".into(), json!(group));
    }
    json!({
        "metadata": meta,
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

pub(crate) const AGGREGATED_CT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// What the client asked for in Accept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum As {
    Plain,
    Table,
    Partial,
    PartialList,
    Discovery,
}

/// The first entry of Accept the lab can produce (among `allowed`), as
/// kube-apiserver's negotiation picks; anything unknown means plain JSON.
pub(crate) fn negotiate(req: &Req, allowed: &[As]) -> As {
    for entry in req.accept().split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let (mut r#as, mut g, mut v) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("as", x)) => r#as = x,
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                _ => {}
            }
        }
        let json_ok = matches!(media, "application/json" | "*/*" | "application/*");
        if !json_ok {
            continue;
        }
        let want = match (r#as, g, v) {
            ("", _, _) => As::Plain,
            ("Table", "meta.k8s.io", "v1" | "v1beta1") => As::Table,
            ("PartialObjectMetadata", "meta.k8s.io", "v1") => As::Partial,
            ("PartialObjectMetadataList", "meta.k8s.io", "v1") => As::PartialList,
            ("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2") => As::Discovery,
            _ => continue,
        };
        if want == As::Plain || allowed.contains(&want) {
            return want;
        }
    }
    As::Plain
}

pub(crate) fn discovery(segs: &[&str], req: &Req) -> ApiResult<Reply> {
    let agg = negotiate(req, &[As::Discovery]) == As::Discovery;
    let aggregated = |items: Vec<Value>| Reply::Json {
        code: axum::http::StatusCode::OK,
        body: json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}),
        content_type: Some(AGGREGATED_CT.into()),
    };
    let to_json = |v: Result<Value, serde_json::Error>| {
        v.map(Reply::ok)
            .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
    };
    match segs {
        ["api"] if agg => Ok(aggregated(vec![aggregated_group("", "v1")])),
        ["api"] => to_json(serde_json::to_value(APIVersions {
            versions: vec!["v1".into()],
            server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".into(),
                server_address: req.server_addr.to_string(),
            }],
        })),
        ["apis"] if agg => Ok(aggregated(
            groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, v)| aggregated_group(g, v))
                .collect(),
        )),
        ["apis"] => to_json(serde_json::to_value(APIGroupList {
            groups: groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, v)| group_doc(g, v))
                .collect(),
        })),
        ["apis", g] => match groups().into_iter().find(|(x, _)| x == g && !x.is_empty()) {
            Some((g, v)) => to_json(serde_json::to_value(group_doc(g, v))),
            None => Err(ApiError::no_route()),
        },
        ["api", v] => resource_list("", v).map_or_else(
            || Err(ApiError::no_route()),
            |l| to_json(serde_json::to_value(l)),
        ),
        ["apis", g, v] => resource_list(g, v).map_or_else(
            || Err(ApiError::no_route()),
            |l| to_json(serde_json::to_value(l)),
        ),
        _ => Err(ApiError::no_route()),
    }
}

/// kube's duration.HumanDuration, as the AGE column shows it.
pub(crate) fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => {
            if s % 60 == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{}s", s % 60)
            }
        }
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => {
            if m % 60 == 0 {
                format!("{h}h")
            } else {
                format!("{h}h{}m", m % 60)
            }
        }
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => {
            if h % 24 == 0 {
                format!("{}d", h / 24)
            } else {
                format!("{}d{}h", h / 24, h % 24)
            }
        }
        _ if h < 24 * 365 * 2 => format!("{}d", h / 24),
        _ if h < 24 * 365 * 8 => {
            let d = h / 24;
            if d % 365 == 0 {
                format!("{}y", d / 365)
            } else {
                format!("{}y{}d", d / 365, d % 365)
            }
        }
        _ => format!("{}y", h / 24 / 365),
    }
}

fn age(obj: &Value, now: i64) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| human_duration(now - t.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn ports(list: &Value, port_key: &str) -> String {
    list.as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p[port_key],
                        p["protocol"].as_str().unwrap_or("TCP")
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Extra columns per resource (after NAME, before AGE), as kube-apiserver prints them.
fn columns(plural: &str) -> Vec<(&'static str, &'static str)> {
    match plural {
        "secrets" => vec![("Type", "string"), ("Data", "string")],
        "configmaps" => vec![("Data", "string")],
        "services" => vec![
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
        ],
        "pods" => vec![
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
        ],
        "namespaces" => vec![("Status", "string")],
        "serviceaccounts" => vec![("Secrets", "string")],
        "endpoints" => vec![("Endpoints", "string")],
        "endpointslices" => vec![
            ("AddressType", "string"),
            ("Ports", "string"),
            ("Endpoints", "string"),
        ],
        "deployments" => vec![
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
        ],
        "replicasets" => vec![
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
        ],
        "clusterrolebindings" | "rolebindings" => vec![("Role", "string")],
        "mutatingwebhookconfigurations" => vec![("Webhooks", "integer")],
        _ => vec![],
    }
}

fn cells(plural: &str, o: &Value) -> Vec<Value> {
    let spec = &o["spec"];
    match plural {
        "secrets" => vec![
            json!(o["type"].as_str().unwrap_or("Opaque")),
            json!(count(&o["data"])),
        ],
        "configmaps" => vec![json!(count(&o["data"]) + count(&o["binaryData"]))],
        "services" => {
            let external = match spec["type"].as_str() {
                Some("ExternalName") => spec["externalName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                _ => o["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .map(|i| {
                        i.iter()
                            .filter_map(|x| x["ip"].as_str().or(x["hostname"].as_str()))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            };
            vec![
                json!(spec["type"].as_str().unwrap_or("ClusterIP")),
                json!(or_none(
                    spec["clusterIP"].as_str().unwrap_or_default().to_string()
                )),
                json!(or_none(external)),
                json!(or_none(ports(&spec["ports"], "port"))),
            ]
        }
        "pods" => {
            let total = spec["containers"].as_array().map_or(0, |c| c.len());
            let ready = o["status"]["containerStatuses"]
                .as_array()
                .map_or(0, |c| c.iter().filter(|s| s["ready"] == true).count());
            vec![
                json!(format!("{ready}/{total}")),
                json!(o["status"]["phase"].as_str().unwrap_or("Pending")),
                json!("0"),
            ]
        }
        "namespaces" => vec![json!(o["status"]["phase"].as_str().unwrap_or("Active"))],
        "serviceaccounts" => vec![json!(o["secrets"].as_array().map_or(0, |s| s.len()))],
        "endpoints" => {
            let eps: Vec<String> = o["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| {
                    let ports: Vec<String> = s["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| p["port"].to_string())
                        .collect();
                    s["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(move |a| {
                            let ip = a["ip"].as_str().unwrap_or_default().to_string();
                            if ports.is_empty() {
                                vec![ip]
                            } else {
                                ports.iter().map(|p| format!("{ip}:{p}")).collect()
                            }
                        })
                })
                .collect();
            vec![json!(or_none(eps.join(",")))]
        }
        "endpointslices" => {
            let addrs: Vec<&str> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str())
                })
                .collect();
            let ps: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].to_string())
                .collect();
            vec![
                json!(o["addressType"].as_str().unwrap_or_default()),
                json!(or_none(ps.join(","))),
                json!(or_none(addrs.join(","))),
            ]
        }
        "deployments" => vec![
            json!(format!(
                "{}/{}",
                o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                spec["replicas"].as_i64().unwrap_or(1)
            )),
            json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0)),
            json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0)),
        ],
        "replicasets" => vec![
            json!(spec["replicas"].as_i64().unwrap_or(1)),
            json!(o["status"]["replicas"].as_i64().unwrap_or(0)),
            json!(o["status"]["readyReplicas"].as_i64().unwrap_or(0)),
        ],
        "clusterrolebindings" | "rolebindings" => vec![json!(format!(
            "{}/{}",
            o["roleRef"]["kind"].as_str().unwrap_or_default(),
            o["roleRef"]["name"].as_str().unwrap_or_default()
        ))],
        "mutatingwebhookconfigurations" => {
            vec![json!(o["webhooks"].as_array().map_or(0, |w| w.len()))]
        }
        _ => vec![],
    }
}

pub(crate) fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A meta.k8s.io/v1 Table of `items`; `include` is the includeObject
/// parameter (None, Object, default Metadata).
pub(crate) fn table(
    def: &ResourceDef,
    items: &[Value],
    rv: &str,
    include: Option<&str>,
    now: i64,
) -> Value {
    let mut cols = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace."
    })];
    for (name, ty) in columns(def.plural) {
        cols.push(
            json!({"name": name, "type": ty, "format": "", "description": "", "priority": 0}),
        );
    }
    cols.push(json!({"name": "Age", "type": "string", "format": "", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut c = vec![o["metadata"]["name"].clone()];
            c.extend(cells(def.plural, o));
            c.push(json!(age(o, now)));
            let mut row = json!({"cells": c});
            match include {
                Some("None") => {}
                Some("Object") => row["object"] = o.clone(),
                _ => row["object"] = partial(o),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": cols,
        "rows": rows,
    })
}

pub(crate) const TABLE_CT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// GET /openapi/v3[/...]: only what kubectl needs to see that the server
/// validates fields itself (a PATCH with a `fieldValidation` parameter and
/// the GVK extension per resource). No schemas: kubectl then falls back to
/// its compiled-in types for strategic merge patches.
pub(crate) fn openapi_v3(segs: &[&str]) -> ApiResult<Reply> {
    let gv_path = |g: &str, v: &str| {
        if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        }
    };
    match segs {
        ["openapi", "v3"] => {
            let mut paths = serde_json::Map::new();
            for (g, v) in groups() {
                let p = gv_path(g, v);
                paths.insert(
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=lab")}),
                );
            }
            Ok(Reply::ok(json!({"paths": paths})))
        }
        ["openapi", "v3", rest @ ..] => {
            let want = rest.join("/");
            let Some((g, v)) = groups().into_iter().find(|(g, v)| gv_path(g, v) == want) else {
                return Err(ApiError::no_route());
            };
            let mut paths = serde_json::Map::new();
            for d in RESOURCES.iter().filter(|d| {
                d.group == g && d.version == v && matches!(d.storage, Storage::Stored(_))
            }) {
                let prefix = if g.is_empty() {
                    format!("/api/{v}")
                } else {
                    format!("/apis/{g}/{v}")
                };
                let path = if d.namespaced {
                    format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
                } else {
                    format!("{prefix}/{}/{{name}}", d.plural)
                };
                paths.insert(path, json!({"patch": {
                    "operationId": format!("patch{}", d.kind),
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": d.group, "version": d.version, "kind": d.kind},
                }}));
            }
            Ok(Reply::ok(json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.34.0-meshtrace-lab"},
                "paths": paths,
                "components": {"schemas": {}},
            })))
        }
        _ => Err(ApiError::no_route()),
    }
}
