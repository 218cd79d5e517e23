//! Drives the simulated API server with the real kube-rs client (and the
//! real `kubectl` when it is installed).

use super::objects::{LabelReq, json_patch, labels_match, parse_label_selector, strategic_merge};
use super::resources::human_duration;
use super::*;
use crate::lab::store::ResourceKey;
use crate::lab::tokens::{NameUid, TokenSpec, now_unix};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec, TokenReview,
    TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use std::collections::BTreeMap;

const NS: &str = "istio-system";
const ADMIN: &str = "test-admin-token";
const READER: &str = "istio-reader-service-account";
const GATEWAY: &str = "istio-ingressgateway-service-account";
const ISSUER: &str = "https://lab-remote.invalid";

fn meta(ns: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        resource_names: (!names.is_empty()).then(|| v(names)),
        ..Default::default()
    }
}

fn sa_subject(name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(NS.into()),
        ..Default::default()
    }
}

/// A remote cluster as Istio expects it: the reader SA bound to a reader
/// ClusterRole (tokenreviews, secrets, SARs), a gateway SA with a pod and a
/// Role that lets it read one named Secret.
fn seed(store: &mut Store) {
    store.put(Namespace {
        metadata: meta(None, NS, &[]),
        ..Default::default()
    });
    store.put(Namespace {
        metadata: meta(None, "default", &[]),
        ..Default::default()
    });
    for sa in [READER, GATEWAY, "doomed", "pod-sa"] {
        store.put(ServiceAccount {
            metadata: meta(Some(NS), sa, &[]),
            ..Default::default()
        });
    }
    store.put(Pod {
        metadata: meta(Some(NS), "gw-pod", &[("app", "istio-ingressgateway")]),
        spec: Some(PodSpec {
            service_account_name: Some(GATEWAY.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    store.put(Secret {
        metadata: meta(
            Some(NS),
            "istio-remote-secret-lab-remote",
            &[("istio/multiCluster", "true")],
        ),
        string_data: None,
        data: Some(BTreeMap::from([(
            "lab-remote".into(),
            k8s_openapi::ByteString(b"kubeconfig".to_vec()),
        )])),
        ..Default::default()
    });
    store.put(Secret {
        metadata: meta(Some(NS), "cacerts", &[("app", "ca")]),
        ..Default::default()
    });
    store.put(Secret {
        metadata: meta(
            Some("default"),
            "elsewhere",
            &[("istio/multiCluster", "true")],
        ),
        ..Default::default()
    });
    store.put(ConfigMap {
        metadata: meta(Some(NS), "istio-ca-root-cert", &[]),
        ..Default::default()
    });
    store.put(ClusterRole {
        metadata: meta(None, "istio-reader-clusterrole-istio-system", &[]),
        rules: Some(vec![
            rule(
                &["authentication.k8s.io"],
                &["tokenreviews"],
                &["create"],
                &[],
            ),
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
                &[],
            ),
            rule(
                &[""],
                &[
                    "secrets",
                    "configmaps",
                    "pods",
                    "services",
                    "endpoints",
                    "namespaces",
                ],
                &["get", "list", "watch"],
                &[],
            ),
        ]),
        ..Default::default()
    });
    store.put(ClusterRoleBinding {
        metadata: meta(None, "istio-reader-clusterrole-istio-system", &[]),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "istio-reader-clusterrole-istio-system".into(),
        },
        subjects: Some(vec![sa_subject(READER)]),
    });
    store.put(Role {
        metadata: meta(Some(NS), "read-cacerts", &[]),
        rules: Some(vec![rule(&[""], &["secrets"], &["get"], &["cacerts"])]),
    });
    store.put(RoleBinding {
        metadata: meta(Some(NS), "gateway-reads-cacerts", &[]),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "read-cacerts".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: GATEWAY.into(),
            ..Default::default()
        }]),
    });
}

struct Lab {
    server: ApiServer,
    cluster: SharedCluster,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

fn start() -> Lab {
    crate::install_crypto_provider();
    let ca = Ca::root("lab test apiserver CA", "meshtrace lab", 30);
    let mut cl = ClusterSim::new("lab-remote", Arc::new(SigningKeys::generate(ISSUER)), ADMIN);
    seed(&mut cl.store);
    let cluster: SharedCluster = Arc::new(RwLock::new(cl));
    let bound = BoundApiServer::bind(&ca).expect("bind");
    assert!(bound.url.starts_with("https://127.0.0.1:"));
    let server = bound.serve(cluster.clone());
    Lab { server, cluster }
}

fn kubeconfig_yaml(lab: &Lab, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(&lab.server.ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: u\n    namespace: {NS}\ncurrent-context: lab\n",
        lab.server.url
    )
}

async fn client(lab: &Lab, token: &str) -> Client {
    let kc = Kubeconfig::from_yaml(&kubeconfig_yaml(lab, token)).expect("kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

/// A client that does not retry 503s (kube's default retries them for minutes).
async fn client_no_retry(lab: &Lab, token: &str) -> Client {
    let kc = Kubeconfig::from_yaml(&kubeconfig_yaml(lab, token)).expect("kubeconfig");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    cfg.default_retry = false;
    Client::try_from(cfg).expect("client")
}

async fn token_for(
    admin: &Client,
    sa: &str,
    audiences: &[&str],
    pod: Option<&str>,
) -> Result<String, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
            expiration_seconds: Some(3600),
            bound_object_ref: pod.map(|p| BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(p.into()),
                uid: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = api
        .create_token_request(sa, &PostParams::default(), &tr)
        .await?;
    Ok(out.status.and_then(|s| s.token).unwrap_or_default())
}

async fn review(c: &Client, token: &str, audiences: &[&str]) -> Result<TokenReview, kube::Error> {
    let api: Api<TokenReview> = Api::all(c.clone());
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: token.into(),
            audiences: (!audiences.is_empty())
                .then(|| audiences.iter().map(|s| s.to_string()).collect()),
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &tr).await
}

fn api_status(r: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_by_label_selector_get_and_404() {
    let lab = start();
    let c = client(&lab, ADMIN).await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let names = |l: kube::core::ObjectList<Secret>| {
        l.items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect::<Vec<_>>()
    };
    let l = secrets
        .list(&ListParams::default().labels("istio/multiCluster=true"))
        .await
        .unwrap();
    assert_eq!(names(l.clone()), vec!["istio-remote-secret-lab-remote"]);
    assert!(l.metadata.resource_version.is_some_and(|rv| !rv.is_empty()));
    let l = secrets
        .list(&ListParams::default().labels("!istio/multiCluster"))
        .await
        .unwrap();
    assert_eq!(names(l), vec!["cacerts"]);
    let l = secrets
        .list(&ListParams::default().labels("app!=ca,istio/multiCluster"))
        .await
        .unwrap();
    assert_eq!(names(l), vec!["istio-remote-secret-lab-remote"]);
    let l = secrets
        .list(&ListParams::default().labels("app in (ca,other)"))
        .await
        .unwrap();
    assert_eq!(names(l), vec!["cacerts"]);
    let l = secrets
        .list(&ListParams::default().fields("metadata.name=cacerts"))
        .await
        .unwrap();
    assert_eq!(names(l), vec!["cacerts"]);
    // All namespaces.
    let all: Api<Secret> = Api::all(c.clone());
    let l = all
        .list(&ListParams::default().labels("istio/multiCluster=true"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 2);
    let got = secrets.get("istio-remote-secret-lab-remote").await.unwrap();
    assert_eq!(got.data.unwrap()["lab-remote"].0, b"kubeconfig");
    let (code, reason, msg) = api_status(secrets.get("nope").await);
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (404, "NotFound", "secrets \"nope\" not found")
    );
    let crs: Api<ClusterRole> = Api::all(c.clone());
    let (_, _, msg) = api_status(crs.get("nope").await);
    assert_eq!(
        msg,
        "clusterroles.rbac.authorization.k8s.io \"nope\" not found"
    );
    let (code, _, msg) = api_status(secrets.list(&ListParams::default().labels("a b")).await);
    assert_eq!(code, 400, "{msg}");
    assert_eq!(
        c.apiserver_version().await.unwrap().git_version,
        "v1.34.0-meshtrace-lab"
    );
}

/// `limit` and `continue` as kube-apiserver serves them: pages in key
/// order, a continue token while more match, none on the last page; a
/// selector applies before the limit; a bad token or limit is a 400.
#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let lab = start();
    {
        let mut cl = lab.cluster.write().unwrap();
        for i in 0..7 {
            cl.store.put(ConfigMap {
                metadata: meta(
                    Some("paged"),
                    &format!("cm-{i}"),
                    &[("page", if i % 2 == 0 { "even" } else { "odd" })],
                ),
                ..Default::default()
            });
        }
    }
    let c = client(&lab, ADMIN).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "paged");
    let mut names = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let l = cms.list(&lp).await.unwrap();
        assert!(l.items.len() <= 3);
        pages += 1;
        names.extend(l.items.into_iter().filter_map(|m| m.metadata.name));
        match l.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
    // The selector first, then the limit: 4 even ones, pages of 2.
    let l = cms
        .list(&ListParams::default().labels("page=even").limit(2))
        .await
        .unwrap();
    let first: Vec<_> = l
        .items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert_eq!(first, ["cm-0", "cm-2"]);
    let t = l.metadata.continue_.expect("a continue token");
    let l = cms
        .list(
            &ListParams::default()
                .labels("page=even")
                .limit(2)
                .continue_token(&t),
        )
        .await
        .unwrap();
    let second: Vec<_> = l
        .items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert_eq!(second, ["cm-4", "cm-6"]);
    assert!(l.metadata.continue_.is_none_or(|t| t.is_empty()));
    // Exactly one page's worth: no token.
    let l = cms.list(&ListParams::default().limit(7)).await.unwrap();
    assert_eq!(l.items.len(), 7);
    assert!(l.metadata.continue_.is_none_or(|t| t.is_empty()));
    let (code, _, msg) = api_status(cms.list(&ListParams::default().continue_token("%%%")).await);
    assert_eq!(code, 400, "{msg}");
    assert!(msg.starts_with("continue key is not valid"), "{msg}");
}

#[tokio::test]
async fn crud_patch_apply_delete() {
    let lab = start();
    let c = client(&lab, ADMIN).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
    let cm = ConfigMap {
        metadata: meta(None, "cfg", &[("a", "1")]),
        data: Some(BTreeMap::from([("k".into(), "v".into())])),
        ..Default::default()
    };
    let made = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(made.metadata.namespace.as_deref(), Some(NS));
    let uid = made.metadata.uid.clone().unwrap();
    let (code, reason, msg) = api_status(cms.create(&PostParams::default(), &cm).await);
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (409, "AlreadyExists", "configmaps \"cfg\" already exists")
    );
    // Update with a stale resourceVersion conflicts; with the current one it works.
    let mut stale = made.clone();
    stale.metadata.resource_version = Some("1".into());
    let (code, reason, _) = api_status(cms.replace("cfg", &PostParams::default(), &stale).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let mut upd = made.clone();
    upd.data = Some(BTreeMap::from([("k".into(), "v2".into())]));
    let upd = cms
        .replace("cfg", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(upd.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(upd.data.unwrap()["k"], "v2");
    let p = cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.labels.unwrap(),
        BTreeMap::from([("b".to_string(), "2".to_string())])
    );
    let p = cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"x": "y"}, "$retainKeys": ["data"]})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap().len(), 2);
    let p = cms
        .patch("cfg", &PatchParams::apply("meshtrace"), &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"z": "1"}})))
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["z"], "1");
    // Apply creates what is missing.
    let p = cms
        .patch("fresh", &PatchParams::apply("meshtrace"), &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"z": "1"}})))
        .await
        .unwrap();
    assert_eq!(p.metadata.namespace.as_deref(), Some(NS));
    // Bad input is a 400, never a panic.
    let (code, _, msg) = api_status(
        cms.patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": 5}})),
        )
        .await,
    );
    assert_eq!(code, 400);
    assert!(
        msg.starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap"),
        "{msg}"
    );
    let deleted = cms.delete("cfg", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "delete returns a Status");
    assert_eq!(api_status(cms.get("cfg").await).0, 404);
    // A watch stays open without events and ends at its timeout.
    let started = std::time::Instant::now();
    let stream = cms
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    let events: Vec<_> = stream.collect().await;
    assert!(events.is_empty(), "{events:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    // A streaming list gets the current objects, then the closing bookmark.
    let stream = cms
        .watch(&WatchParams::streaming_lists().timeout(1), "")
        .await
        .unwrap();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 3, "{events:?}"); // "fresh", "istio-ca-root-cert", bookmark
    assert!(
        matches!(&events[0], Ok(kube::core::WatchEvent::Added(c)) if c.metadata.name.as_deref() == Some("fresh"))
    );
    assert!(matches!(&events[2], Ok(kube::core::WatchEvent::Bookmark(b))
        if b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str) == Some("true")));
    // Discovery, both flavours.
    let d = kube::discovery::Discovery::new(c.clone())
        .run()
        .await
        .unwrap();
    assert!(d.has_group("discovery.k8s.io") && d.has_group("rbac.authorization.k8s.io"));
    let d = kube::discovery::Discovery::new(c.clone())
        .run_aggregated()
        .await
        .unwrap();
    let (ar, caps) = d
        .get("")
        .unwrap()
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.plural == "secrets")
        .unwrap();
    assert_eq!(ar.kind, "Secret");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    // Deleting a namespace takes its contents with it.
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.delete(NS, &DeleteParams::default()).await.unwrap();
    assert!(
        lab.cluster
            .read()
            .unwrap()
            .store
            .list_raw(&ResourceKey::of::<Secret>(), Some(NS))
            .is_empty()
    );
}

#[tokio::test]
async fn token_request_then_token_review() {
    let lab = start();
    let admin = client(&lab, ADMIN).await;
    let reader_token = token_for(&admin, READER, &[], None).await.unwrap();
    let reader = client(&lab, &reader_token).await;
    let gw = token_for(&admin, GATEWAY, &["istio-ca"], Some("gw-pod"))
        .await
        .unwrap();

    let ok = review(&reader, &gw, &["istio-ca"])
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(ok.authenticated, Some(true));
    assert_eq!(ok.audiences, Some(vec!["istio-ca".to_string()]));
    assert_eq!(ok.error, None);
    let user = ok.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:istio-system:istio-ingressgateway-service-account")
    );
    let sa_uid = lab
        .cluster
        .read()
        .unwrap()
        .store
        .get::<ServiceAccount>(NS, GATEWAY)
        .unwrap()
        .metadata
        .uid;
    assert_eq!(user.uid, sa_uid);
    assert_eq!(
        user.groups.unwrap(),
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:istio-system",
            "system:authenticated"
        ]
    );
    assert_eq!(
        user.extra.unwrap()["authentication.kubernetes.io/pod-name"],
        vec!["gw-pod".to_string()]
    );

    // Wrong audience.
    let bad = review(&reader, &gw, &["other"])
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        bad.authenticated, None,
        "kube-apiserver omits authenticated=false"
    );
    assert_eq!(
        bad.error.as_deref(),
        Some(
            "[invalid bearer token, token audiences [\"istio-ca\"] is invalid for the target audiences [\"other\"]]"
        )
    );
    // No audiences in the spec: the API server's own, which a istio-ca token lacks.
    let bad = review(&reader, &gw, &[]).await.unwrap().status.unwrap();
    assert_eq!(
        bad.error.as_deref(),
        Some(format!("[invalid bearer token, token audiences [\"istio-ca\"] is invalid for the target audiences [\"{ISSUER}\"]]").as_str())
    );

    // Expired (TokenRequest cannot mint one; sign it with the cluster's key).
    let expired = {
        let cl = lab.cluster.read().unwrap();
        let uid = cl
            .store
            .get::<ServiceAccount>(NS, GATEWAY)
            .unwrap()
            .metadata
            .uid
            .unwrap();
        let now = now_unix();
        cl.keys.mint(&TokenSpec {
            namespace: NS.into(),
            service_account: GATEWAY.into(),
            service_account_uid: uid,
            audiences: vec!["istio-ca".into()],
            issued_at: now - 7200,
            expires_at: now - 60,
            pod: None,
        })
    };
    let bad = review(&reader, &expired, &["istio-ca"])
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        bad.error.as_deref(),
        Some("[invalid bearer token, service account token has expired]")
    );

    // Service account deleted after the token was issued.
    let doomed = token_for(&admin, "doomed", &["istio-ca"], None)
        .await
        .unwrap();
    assert_eq!(
        review(&reader, &doomed, &["istio-ca"])
            .await
            .unwrap()
            .status
            .unwrap()
            .authenticated,
        Some(true)
    );
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    sas.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let bad = review(&reader, &doomed, &["istio-ca"])
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        bad.error.as_deref(),
        Some("[invalid bearer token, serviceaccounts \"doomed\" not found]")
    );
    // ... and recreated under the same name: a new UID.
    sas.create(
        &PostParams::default(),
        &ServiceAccount {
            metadata: meta(None, "doomed", &[]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let bad = review(&reader, &doomed, &["istio-ca"])
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        bad.error
            .unwrap()
            .starts_with("[invalid bearer token, service account UID (")
    );

    // Bound pod deleted.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    pods.delete("gw-pod", &DeleteParams::default())
        .await
        .unwrap();
    let bad = review(&reader, &gw, &["istio-ca"])
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        bad.error.as_deref(),
        Some("[invalid bearer token, service account token has been invalidated]")
    );

    // The admin's static token reviews as the admin.
    let ok = review(&reader, ADMIN, &["istio-ca"])
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(ok.user.unwrap().username.as_deref(), Some("lab-admin"));
}

#[tokio::test]
async fn token_request_validation() {
    let lab = start();
    let admin = client(&lab, ADMIN).await;
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    let short = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(300),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (code, reason, msg) = api_status(
        api.create_token_request(GATEWAY, &PostParams::default(), &short)
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        msg,
        "TokenRequest.authentication.k8s.io \"istio-ingressgateway-service-account\" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"
    );
    let (code, _, msg) = api_status(token_for(&admin, "ghost", &[], None).await);
    assert_eq!(
        (code, msg.as_str()),
        (404, "serviceaccounts \"ghost\" not found")
    );
    let (code, _, msg) = api_status(token_for(&admin, GATEWAY, &[], Some("ghost-pod")).await);
    assert_eq!((code, msg.as_str()), (404, "pods \"ghost-pod\" not found"));
    let (code, _, msg) = api_status(token_for(&admin, READER, &[], Some("gw-pod")).await);
    assert_eq!(code, 400, "{msg}");
    // Defaults: one hour, the API server's audiences.
    let out = api
        .create_token_request(
            GATEWAY,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(Default::default()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.spec.as_ref().unwrap().expiration_seconds, Some(3600));
    assert_eq!(out.spec.unwrap().audiences, Some(vec![ISSUER.to_string()]));
    let exp = out
        .status
        .unwrap()
        .expiration_timestamp
        .unwrap()
        .0
        .as_second();
    assert!((exp - now_unix() - 3600).abs() < 10);
}

#[tokio::test]
async fn rbac_forbidden_messages_and_resource_names() {
    let lab = start();
    let admin = client(&lab, ADMIN).await;
    let gw = client(&lab, &token_for(&admin, GATEWAY, &[], None).await.unwrap()).await;
    let (code, reason, msg) = api_status(review(&gw, "x", &[]).await);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        msg,
        "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:istio-system:istio-ingressgateway-service-account\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
    );
    let secrets: Api<Secret> = Api::namespaced(gw.clone(), NS);
    let (_, _, msg) = api_status(secrets.list(&ListParams::default()).await);
    assert_eq!(
        msg,
        "secrets is forbidden: User \"system:serviceaccount:istio-system:istio-ingressgateway-service-account\" cannot list resource \"secrets\" in API group \"\" in the namespace \"istio-system\""
    );
    // The RoleBinding grants get on one named Secret only.
    assert!(secrets.get("cacerts").await.is_ok());
    let (code, _, msg) = api_status(secrets.get("istio-remote-secret-lab-remote").await);
    assert_eq!(code, 403);
    assert!(
        msg.starts_with("secrets \"istio-remote-secret-lab-remote\" is forbidden: User"),
        "{msg}"
    );
    let other_ns: Api<Secret> = Api::namespaced(gw.clone(), "default");
    assert_eq!(api_status(other_ns.get("cacerts").await).0, 403);
    // Token creation is the serviceaccounts/token subresource.
    let sas: Api<ServiceAccount> = Api::namespaced(gw.clone(), NS);
    let (_, _, msg) = api_status(
        sas.create_token_request(
            GATEWAY,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(Default::default()),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(msg.contains("cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"istio-system\""), "{msg}");
}

#[tokio::test]
async fn self_subject_and_access_reviews() {
    let lab = start();
    let admin = client(&lab, ADMIN).await;
    let reader = client(&lab, &token_for(&admin, READER, &[], None).await.unwrap()).await;

    let ssr: Api<SelfSubjectReview> = Api::all(reader.clone());
    let me = ssr
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(
        info.username.as_deref(),
        Some("system:serviceaccount:istio-system:istio-reader-service-account")
    );
    let uid = lab
        .cluster
        .read()
        .unwrap()
        .store
        .get::<ServiceAccount>(NS, READER)
        .unwrap()
        .metadata
        .uid;
    assert_eq!(info.uid, uid);
    let ssr_admin: Api<SelfSubjectReview> = Api::all(admin.clone());
    let me = ssr_admin
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    assert_eq!(
        me.status.unwrap().user_info.unwrap().groups.unwrap(),
        vec!["system:masters", "system:authenticated"]
    );

    let ssar: Api<SelfSubjectAccessReview> = Api::all(reader.clone());
    let ask = |verb: &str, group: &str, resource: &str, ns: Option<&str>| SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: ns.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let yes = ssar
        .create(
            &PostParams::default(),
            &ask("create", "authentication.k8s.io", "tokenreviews", None),
        )
        .await
        .unwrap();
    let st = yes.status.unwrap();
    assert!(st.allowed);
    assert_eq!(
        st.reason.as_deref(),
        Some(
            "RBAC: allowed by ClusterRoleBinding \"istio-reader-clusterrole-istio-system\" of ClusterRole \"istio-reader-clusterrole-istio-system\" to ServiceAccount \"istio-reader-service-account/istio-system\""
        )
    );
    let no = ssar
        .create(
            &PostParams::default(),
            &ask("delete", "", "secrets", Some(NS)),
        )
        .await
        .unwrap();
    assert!(!no.status.unwrap().allowed);

    // SubjectAccessReview about someone else (the reader may create them).
    let sar: Api<SubjectAccessReview> = Api::all(reader.clone());
    let about_gw = |resource: &str, name: &str| SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{NS}:{GATEWAY}")),
            groups: Some(vec!["system:serviceaccounts".into()]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".into()),
                resource: Some(resource.into()),
                name: Some(name.into()),
                namespace: Some(NS.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(
        sar.create(&PostParams::default(), &about_gw("secrets", "cacerts"))
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
    assert!(
        !sar.create(&PostParams::default(), &about_gw("secrets", "other"))
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
    let gw = client(&lab, &token_for(&admin, GATEWAY, &[], None).await.unwrap()).await;
    let sar_gw: Api<SubjectAccessReview> = Api::all(gw);
    assert_eq!(
        api_status(
            sar_gw
                .create(&PostParams::default(), &about_gw("secrets", "cacerts"))
                .await
        )
        .0,
        403
    );
}

#[tokio::test]
async fn unauthorized_tokens_get_401() {
    let lab = start();
    let admin = client(&lab, ADMIN).await;
    // Same issuer and a real SA UID, but signed by another cluster's key.
    let foreign = {
        let cl = lab.cluster.read().unwrap();
        let uid = cl
            .store
            .get::<ServiceAccount>(NS, READER)
            .unwrap()
            .metadata
            .uid
            .unwrap();
        let now = now_unix();
        SigningKeys::generate(ISSUER).mint(&TokenSpec {
            namespace: NS.into(),
            service_account: READER.into(),
            service_account_uid: uid,
            audiences: vec![ISSUER.into()],
            issued_at: now,
            expires_at: now + 600,
            pod: Some(NameUid {
                name: "gw-pod".into(),
                uid: "x".into(),
            }),
        })
    };
    for token in [foreign.as_str(), "not-a-jwt", "test-admin-token-but-longer"] {
        let c = client(&lab, token).await;
        let secrets: Api<Secret> = Api::namespaced(c, NS);
        let (code, reason, msg) = api_status(secrets.list(&ListParams::default()).await);
        assert_eq!(
            (code, reason.as_str(), msg.as_str()),
            (401, "Unauthorized", "Unauthorized")
        );
    }
    // A TokenReview of the foreign token fails with the signature error.
    let st = review(&admin, &foreign, &[]).await.unwrap().status.unwrap();
    assert!(st.error.unwrap().starts_with("[invalid bearer token, "));
    // A token for audience istio-ca is not good for the API server itself.
    let gw = token_for(&admin, GATEWAY, &["istio-ca"], None)
        .await
        .unwrap();
    let c = client(&lab, &gw).await;
    let ssr: Api<SelfSubjectReview> = Api::all(c);
    assert_eq!(
        api_status(
            ssr.create(&PostParams::default(), &SelfSubjectReview::default())
                .await
        )
        .0,
        401
    );
}

#[test]
fn label_selectors_parse_and_match() {
    let reqs = parse_label_selector("a=1, b!=2,c,!d,e in (x, y),f notin (z)").unwrap();
    assert_eq!(reqs[0], LabelReq::Eq("a".into(), "1".into()));
    assert_eq!(
        reqs[4],
        LabelReq::In("e".into(), vec!["x".into(), "y".into()])
    );
    assert!(labels_match(
        &reqs,
        &json!({"a": "1", "b": "3", "c": "", "e": "y"})
    ));
    assert!(!labels_match(
        &reqs,
        &json!({"a": "1", "c": "", "d": "", "e": "y"})
    ));
    assert!(!labels_match(
        &reqs,
        &json!({"a": "1", "c": "", "e": "y", "f": "z"})
    ));
    assert!(parse_label_selector("a b").is_err());
    assert!(parse_label_selector("e in (x").is_err());
    assert!(parse_label_selector("").unwrap().is_empty());
}

#[test]
fn patches() {
    let mut o = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}, "finalizers": ["x", "y"]});
    strategic_merge(
        &mut o,
        &json!({
            "$setElementOrder/containers": [{"name": "a"}],
            "spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}]},
            "$deleteFromPrimitiveList/finalizers": ["x"],
        }),
    );
    assert_eq!(
        o,
        json!({"spec": {"containers": [{"name": "a", "image": "2"}]}, "finalizers": ["y"]})
    );
    let mut d = json!({"metadata": {"labels": {"a/b": "1"}}, "l": [1, 2]});
    json_patch(
        &mut d,
        &json!([
            {"op": "remove", "path": "/metadata/labels/a~1b"},
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "replace", "path": "/l/0", "value": 0},
            {"op": "test", "path": "/l/1", "value": 2},
        ]),
    )
    .unwrap();
    assert_eq!(d, json!({"metadata": {"labels": {}}, "l": [0, 2, 3]}));
    assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    assert!(json_patch(&mut d, &json!({"op": "add"})).is_err());
}

#[test]
fn ages_print_like_kubectl() {
    assert_eq!(human_duration(5), "5s");
    assert_eq!(human_duration(150), "2m30s");
    assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
    assert_eq!(human_duration(86400 * 3), "3d");
    assert_eq!(human_duration(86400 * 400), "400d");
}

/// The real kubectl against the lab: discovery, get (server-side tables),
/// label, describe, apply, edit, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("note: kubectl is not on PATH; skipping the kubectl test");
        return;
    }
    let lab = start();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, kubeconfig_yaml(&lab, ADMIN)).unwrap();
    let cache = dir.path().join("cache");
    let kubectl = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env_remove("KUBECONFIG");
        async move {
            let out = cmd.output().await.expect("run kubectl");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        }
    };
    let (ok, out) = kubectl(&[
        "get",
        "secrets,configmaps,services,pods,serviceaccounts,endpointslices,endpoints",
        "-n",
        NS,
    ])
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("secret/istio-remote-secret-lab-remote"),
        "{out}"
    );
    assert!(out.contains("configmap/istio-ca-root-cert"), "{out}");
    assert!(out.contains("pod/gw-pod"), "{out}");
    assert!(
        out.contains("serviceaccount/istio-reader-service-account"),
        "{out}"
    );
    let (ok, out) = kubectl(&["get", "ns"]).await;
    assert!(
        ok && out.contains("istio-system") && out.contains("Active") && out.contains("AGE"),
        "{out}"
    );
    let (ok, out) = kubectl(&["get", "secrets", "-n", NS, "-l", "istio/multiCluster=true"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("TYPE")
            && out.contains("DATA")
            && out.contains("istio-remote-secret-lab-remote"),
        "{out}"
    );
    assert!(!out.contains("cacerts"), "{out}");
    let (ok, out) = kubectl(&[
        "label",
        "secret",
        "cacerts",
        "-n",
        NS,
        "topology.istio.io/network=net1",
    ])
    .await;
    assert!(ok && out.contains("secret/cacerts labeled"), "{out}");
    let labels = lab
        .cluster
        .read()
        .unwrap()
        .store
        .get::<Secret>(NS, "cacerts")
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(labels["topology.istio.io/network"], "net1");
    let (ok, out) = kubectl(&[
        "get",
        "secret",
        "cacerts",
        "-n",
        NS,
        "-o",
        "jsonpath={.metadata.labels}",
    ])
    .await;
    assert!(ok && out.contains("net1"), "{out}");
    let (ok, out) = kubectl(&["describe", "secret", "cacerts", "-n", NS]).await;
    assert!(
        ok && out.contains("Name:") && out.contains("cacerts"),
        "{out}"
    );
    let (ok, out) = kubectl(&["describe", "ns", NS]).await;
    assert!(ok && out.contains(NS) && out.contains("Active"), "{out}");
    // An EndpointSlice put into the store without defaults: kubectl describe
    // dereferences the port protocol, which the server defaults.
    lab.cluster
        .write()
        .unwrap()
        .store
        .put(k8s_openapi::api::discovery::v1::EndpointSlice {
            metadata: meta(
                Some(NS),
                "istiod-abcde",
                &[("kubernetes.io/service-name", "istiod")],
            ),
            address_type: "IPv4".into(),
            endpoints: Some(vec![k8s_openapi::api::discovery::v1::Endpoint {
                addresses: vec!["192.0.2.10".into()],
                ..Default::default()
            }]),
            ports: Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
                port: Some(15012),
                name: Some("tcp-istiod".into()),
                ..Default::default()
            }]),
        });
    let (ok, out) = kubectl(&["describe", "endpointslice", "istiod-abcde", "-n", NS]).await;
    assert!(
        ok && out.contains("15012") && out.contains("TCP") && out.contains("192.0.2.10"),
        "{out}"
    );
    let (ok, out) = kubectl(&[
        "get",
        "endpointslices",
        "-n",
        NS,
        "-l",
        "kubernetes.io/service-name=istiod",
    ])
    .await;
    assert!(
        ok && out.contains("IPv4") && out.contains("192.0.2.10"),
        "{out}"
    );
    // Typed kubectl commands send protobuf bodies.
    let (ok, out) = kubectl(&[
        "create",
        "secret",
        "generic",
        "made",
        "-n",
        NS,
        "--from-literal=k=v",
    ])
    .await;
    assert!(ok && out.contains("secret/made created"), "{out}");
    let made: Secret = lab.cluster.read().unwrap().store.get(NS, "made").unwrap();
    assert_eq!(made.data.unwrap()["k"].0, b"v");
    let (ok, out) = kubectl(&[
        "create",
        "token",
        READER,
        "-n",
        NS,
        "--audience",
        "istio-ca",
        "--duration",
        "1h",
    ])
    .await;
    assert!(ok, "{out}");
    let st = lab.cluster.read().unwrap().authenticate_token(
        out.trim(),
        &["istio-ca".into()],
        now_unix(),
    );
    assert_eq!(
        st.unwrap().username,
        format!("system:serviceaccount:{NS}:{READER}")
    );
    let (ok, out) = kubectl(&["create", "token", READER, "-n", NS, "--duration", "5m"]).await;
    assert!(
        !ok && out.contains("may not specify a duration less than 10 minutes"),
        "{out}"
    );
    // apply (client-side, twice: create then patch), and server-side.
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: istio-system\ndata:\n  a: \"1\"\n").unwrap();
    let (ok, out) = kubectl(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok && out.contains("configmap/applied created"), "{out}");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: istio-system\ndata:\n  a: \"2\"\n").unwrap();
    let (ok, out) = kubectl(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok && out.contains("configmap/applied configured"), "{out}");
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok && out.contains("serverside-applied"), "{out}");
    let data = lab
        .cluster
        .read()
        .unwrap()
        .store
        .get::<ConfigMap>(NS, "applied")
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["a"], "2");
    // edit with a scripted editor.
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/a: \"2\"/a: \"3\"/' \"$1\"\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&kc)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["edit", "configmap", "applied", "-n", NS]);
    cmd.env("KUBE_EDITOR", &editor).env_remove("KUBECONFIG");
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = lab
        .cluster
        .read()
        .unwrap()
        .store
        .get::<ConfigMap>(NS, "applied")
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["a"], "3");
    let (ok, out) = kubectl(&["delete", "configmap", "applied", "-n", NS]).await;
    assert!(ok && out.contains("configmap \"applied\" deleted"), "{out}");
    let (ok, out) = kubectl(&["get", "configmap", "applied", "-n", NS]).await;
    assert!(
        !ok && out.contains("configmaps \"applied\" not found"),
        "{out}"
    );
    let (ok, out) = kubectl(&["auth", "can-i", "create", "tokenreviews"]).await;
    assert!(ok && out.starts_with("yes\n"), "{out}");
    // Impersonation (--as) is honoured, so can-i answers for the other user.
    let gw_user = format!("system:serviceaccount:{NS}:{GATEWAY}");
    let (_, out) = kubectl(&[
        "auth", "can-i", "list", "secrets", "-n", NS, "--as", &gw_user,
    ])
    .await;
    assert!(out.starts_with("no"), "{out}");
    let (ok, out) = kubectl(&["get", "secret", "cacerts", "-n", NS, "--as", &gw_user]).await;
    assert!(ok && out.contains("cacerts"), "{out}");
    let (ok, out) = kubectl(&["auth", "whoami", "--as", &gw_user]).await;
    assert!(
        ok && out.contains("system:serviceaccounts:istio-system"),
        "{out}"
    );
    let (ok, out) = kubectl(&["auth", "whoami"]).await;
    assert!(ok && out.contains("lab-admin"), "{out}");
    // An SA token: forbidden, with kube-apiserver's message.
    let admin = client(&lab, ADMIN).await;
    let gw_token = token_for(&admin, GATEWAY, &[], None).await.unwrap();
    std::fs::write(&kc, kubeconfig_yaml(&lab, &gw_token)).unwrap();
    let (ok, out) = kubectl(&["get", "secrets", "-n", NS, "--as", "someone"]).await;
    assert!(!ok && out.contains("users \"someone\" is forbidden: User \"system:serviceaccount:istio-system:istio-ingressgateway-service-account\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"), "{out}");
    let (ok, out) = kubectl(&["get", "secrets", "-n", NS]).await;
    assert!(!ok && out.contains("secrets is forbidden: User \"system:serviceaccount:istio-system:istio-ingressgateway-service-account\" cannot list resource \"secrets\""), "{out}");
}

#[tokio::test]
async fn bad_input_is_a_status_not_a_panic() {
    let lab = start();
    let c = client(&lab, ADMIN).await;
    let send = |method: &str, path: &str, ct: &str, body: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let c = c.clone();
        async move { c.request::<serde_json::Value>(req).await }
    };
    let cases = [
        (
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "application/json",
            "not json",
            400,
        ),
        (
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "application/json",
            "{\"spec\":{\"token\":\"\"}}",
            400,
        ),
        (
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "application/json",
            "{\"kind\":\"Pod\",\"spec\":{}}",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/istio-system/secrets",
            "application/json",
            "[1,2]",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/istio-system/secrets",
            "application/json",
            "{\"metadata\":\"x\"}",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/istio-system/secrets",
            "application/json",
            "{\"metadata\":{}}",
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/istio-system/secrets",
            "application/json",
            "{\"metadata\":{\"name\":\"a\",\"namespace\":\"other\"}}",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/istio-system/secrets",
            "application/vnd.kubernetes.protobuf",
            "k8s\0garbage",
            415,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/istio-system/secrets/cacerts",
            "text/plain",
            "{}",
            415,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/istio-system/secrets/cacerts",
            "application/merge-patch+json",
            "\"str\"",
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/istio-system/secrets/cacerts",
            "application/json-patch+json",
            "[{\"op\":\"bogus\",\"path\":\"/a\"}]",
            422,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/istio-system/secrets/new",
            "application/apply-patch+yaml",
            "- just\n- a list\n",
            400,
        ),
        (
            "PUT",
            "/api/v1/namespaces/istio-system/secrets/cacerts",
            "application/json",
            "{\"metadata\":{\"name\":\"other\"}}",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/istio-system/secrets/cacerts",
            "application/json",
            "{}",
            405,
        ),
        (
            "GET",
            "/api/v1/namespaces/istio-system/secrets?labelSelector=a%20in%20(b",
            "application/json",
            "",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/istio-system/secrets?watch=1&timeoutSeconds=x",
            "application/json",
            "",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/istio-system/widgets",
            "application/json",
            "",
            404,
        ),
        (
            "GET",
            "/api/v1/namespaces/istio-system/pods/gw-pod/exec",
            "application/json",
            "",
            404,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/istio-system/secrets/cacerts",
            "application/json",
            "{\"preconditions\":{\"uid\":\"nope\"}}",
            409,
        ),
        (
            "POST",
            "/api/v1/namespaces/istio-system/serviceaccounts/istio-reader-service-account/token",
            "application/json",
            "{\"spec\":{\"boundObjectRef\":{\"kind\":\"Node\",\"name\":\"n\"}}}",
            400,
        ),
    ];
    for (method, path, ct, body, want) in cases {
        let (code, _, msg) = api_status(send(method, path, ct, body).await);
        assert_eq!(code, want, "{method} {path} {body:?}: {msg}");
    }
    // Health and version need no credentials; everything else does.
    let anon = {
        let kc = Kubeconfig::from_yaml(
            &kubeconfig_yaml(&lab, ADMIN).replace(&format!("    token: {ADMIN}\n"), "    {}\n"),
        )
        .unwrap();
        Client::try_from(
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .unwrap(),
        )
        .unwrap()
    };
    let get = |p: &str| http::Request::get(p).body(Vec::new()).unwrap();
    assert_eq!(anon.request_text(get("/readyz")).await.unwrap(), "ok");
    assert!(anon.apiserver_version().await.is_ok());
    assert_eq!(api_status(anon.request_text(get("/api")).await).0, 401);
    // The server still answers after all that.
    assert_eq!(c.request_text(get("/livez")).await.unwrap(), "ok");
}

/// A plain-HTTP backend that answers every request with its own request
/// line and whether an Authorization header reached it.
async fn echo_backend() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let line = format!(
            "{} {} auth={}",
            req.method(),
            req.uri(),
            req.headers().contains_key(header::AUTHORIZATION)
        );
        ([(header::CONTENT_TYPE, "text/plain")], line)
    });
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

/// The pod proxy as kube-apiserver serves it: RBAC on pods/proxy (the name
/// with its port), 404 for an unknown pod, 503 for a port nobody listens
/// on, 400 for a malformed name; and what the pod answers, passed through
/// without the caller's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_proxy_forwards_and_refuses_like_kube_apiserver() {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodStatus};
    let lab = start();
    let backend = echo_backend().await;
    {
        let mut cl = lab.cluster.write().unwrap();
        cl.store.put(Pod {
            metadata: meta(Some(NS), "istiod-x", &[("app", "istiod")]),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "discovery".into(),
                    ports: Some(vec![ContainerPort {
                        container_port: 15014,
                        name: Some("http-monitoring".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.0.0.5".into()),
                phase: Some("Running".into()),
                ..Default::default()
            }),
        });
        cl.pod_proxies
            .insert(format!("{NS}/istiod-x:15014"), backend);
    }
    let admin = client_no_retry(&lab, ADMIN).await;
    let get = |path: String| http::Request::get(path).body(Vec::new()).unwrap();
    let base = format!("/api/v1/namespaces/{NS}/pods");
    let text = admin
        .request_text(get(format!(
            "{base}/istiod-x:15014/proxy/debug/clusterz?pretty=1"
        )))
        .await
        .unwrap();
    assert_eq!(text, "GET /debug/clusterz?pretty=1 auth=false");
    // Without a port: the pod's first container port.
    let text = admin
        .request_text(get(format!("{base}/istiod-x/proxy/")))
        .await
        .unwrap();
    assert_eq!(text, "GET / auth=false");
    let (code, reason, message) = api_status(
        admin
            .request_text(get(format!("{base}/istiod-x:15015/proxy/debug/clusterz")))
            .await,
    );
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (
            503,
            "ServiceUnavailable",
            "error trying to reach service: dial tcp 10.0.0.5:15015: connect: connection refused"
        )
    );
    let (code, _, message) = api_status(
        admin
            .request_text(get(format!("{base}/nope:15014/proxy/debug/clusterz")))
            .await,
    );
    assert_eq!((code, message.as_str()), (404, "pods \"nope\" not found"));
    let (code, _, message) = api_status(
        admin
            .request_text(get(format!("{base}/a:b:c:d/proxy/x")))
            .await,
    );
    assert_eq!(
        (code, message.as_str()),
        (400, "invalid pod request \"a:b:c:d\"")
    );
    // The reader may read pods, but not proxy to them.
    let reader_token = token_for(&admin, READER, &[], None).await.unwrap();
    let reader = client(&lab, &reader_token).await;
    let (code, reason, message) = api_status(
        reader
            .request_text(get(format!("{base}/istiod-x:15014/proxy/debug/clusterz")))
            .await,
    );
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (
            403,
            "Forbidden",
            "pods \"istiod-x:15014\" is forbidden: User \"system:serviceaccount:istio-system:istio-reader-service-account\" cannot get resource \"pods/proxy\" in API group \"\" in the namespace \"istio-system\""
        )
    );
    // A bad credential: 401 from the API server, nothing forwarded.
    let nobody = client_no_retry(&lab, "not-a-token").await;
    let (code, reason, _) = api_status(
        nobody
            .request_text(get(format!("{base}/istiod-x:15014/proxy/debug/clusterz")))
            .await,
    );
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
}

/// As kube-apiserver does (`UnauthenticatedHTTP2DOSMitigation`), the lab
/// closes an HTTP/2 connection (GOAWAY) after a 401, and keeps it open after
/// an authenticated answer.
#[tokio::test]
async fn an_http2_connection_is_closed_after_a_401_only() {
    use http_body_util::{BodyExt, Empty};
    use rustls::pki_types::pem::PemObject;
    let lab = start();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(lab.server.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(lab.server.addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let mut conn = tokio::spawn(conn);
    let get = |token: &str| {
        hyper::Request::get(format!("{}/api/v1/namespaces/{NS}", lab.server.url))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let ok = sender.send_request(get(ADMIN)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.version(), axum::http::Version::HTTP_2);
    let _ = ok.into_body().collect().await;
    let ok = sender.send_request(get(ADMIN)).await.unwrap();
    assert_eq!(
        ok.status(),
        StatusCode::OK,
        "a second request on the connection"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut conn)
            .await
            .is_err(),
        "the connection stays open after authenticated requests"
    );
    let refused = sender.send_request(get("not-a-token")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let _ = refused.into_body().collect().await;
    tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .expect("the server closes the connection after the 401")
        .unwrap()
        .expect("gracefully");
}
