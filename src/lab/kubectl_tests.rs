//! The real `kubectl` against the whole lab: every kind of request the
//! printed fixes send (label/annotate, the three patch types, typed creates
//! in protobuf, client- and server-side apply, rollouts and `set env`) is
//! accepted, and does to the lab what it does to a cluster.
//!
//! kubectl comes from PATH. Without it these tests print why and pass,
//! unless MESHTRACE_REQUIRE_KUBECTL=1 (CI), which makes a missing kubectl a
//! failure.

use crate::lab::faults::{self, FaultId};
use crate::lab::world::{GATEWAY, Lab, NS, PRIMARY_CONTEXT, REMOTE_CONTEXT};
use serde_json::Value;
use std::path::PathBuf;

/// kubectl is there, or the test is skipped (None), or, when CI requires
/// it, fails.
fn kubectl_present() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("MESHTRACE_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "kubectl is not on PATH and MESHTRACE_REQUIRE_KUBECTL=1"
        );
        eprintln!("note: kubectl is not on PATH; skipping the kubectl test");
    }
    found
}

struct Kubectl {
    lab: Lab,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn start(fault: Option<FaultId>) -> Kubectl {
        let lab = Lab::start(fault.map(faults::get))
            .await
            .expect("lab starts");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &lab.kubeconfig_yaml).unwrap();
        Kubectl {
            lab,
            _dir: dir,
            kubeconfig,
        }
    }

    /// `sh -c script` with KUBECONFIG set: (success, stdout + stderr).
    async fn sh(&self, script: &str) -> (bool, String) {
        let out = tokio::process::Command::new("sh")
            .args(["-c", script])
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .await
            .expect("run sh");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Run `script`; it must succeed.
    async fn ok(&self, script: &str) -> String {
        let (ok, out) = self.sh(script).await;
        assert!(ok, "{script}\n{out}");
        out
    }

    /// `kubectl get -o json` of one object in `ctx`.
    async fn get(&self, ctx: &str, what: &str) -> Value {
        let out = self
            .ok(&format!(
                "kubectl --context {ctx} -n {NS} get {what} -o json"
            ))
            .await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"))
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        self.lab.shutdown();
    }
}

const P: &str = PRIMARY_CONTEXT;
const R: &str = REMOTE_CONTEXT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_annotate_and_the_three_patch_types() {
    if !kubectl_present() {
        return;
    }
    let k = Kubectl::start(Some(FaultId::SecretUnlabelled)).await;
    // label / annotate --overwrite: secret, namespace, service, pod.
    for (ctx, what) in [
        (P, "secret istio-remote-secret-remote"),
        (R, "namespace istio-system"),
        (R, "service istio-eastwestgateway"),
        (R, &format!("pod {}", k.lab.gateway_pod())),
    ] {
        k.ok(&format!(
            "kubectl --context {ctx} -n {NS} label {what} meshtrace.test/l=one && kubectl --context {ctx} -n {NS} label {what} meshtrace.test/l=two --overwrite && kubectl --context {ctx} -n {NS} annotate {what} meshtrace.test/a=x --overwrite"
        ))
        .await;
        let v = k.get(ctx, what).await;
        assert_eq!(v["metadata"]["labels"]["meshtrace.test/l"], "two", "{what}");
        assert_eq!(
            v["metadata"]["annotations"]["meshtrace.test/a"], "x",
            "{what}"
        );
    }
    // Without --overwrite an existing label is refused, as kubectl does it.
    let (ok, out) = k
        .sh(&format!(
            "kubectl --context {R} -n {NS} label service istio-eastwestgateway meshtrace.test/l=three"
        ))
        .await;
    assert!(!ok && out.contains("already has a value"), "{out}");

    // JSON patch: a rule added to a ClusterRole, a Service's selector removed.
    k.ok(&format!(
        r#"kubectl --context {R} patch clusterrole istio-reader-clusterrole-istio-system --type=json -p '[{{"op":"add","path":"/rules/-","value":{{"apiGroups":["example.com"],"resources":["things"],"verbs":["get"]}}}}]'"#
    ))
    .await;
    let role = k
        .get(R, "clusterrole istio-reader-clusterrole-istio-system")
        .await;
    let last = role["rules"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["resources"][0], "things");
    k.ok(&format!(
        r#"kubectl --context {R} -n {NS} patch service istio-eastwestgateway --type=json -p '[{{"op":"remove","path":"/spec/selector"}}]'"#
    ))
    .await;
    let svc = k.get(R, "service istio-eastwestgateway").await;
    assert!(svc["spec"].get("selector").is_none(), "{svc}");
    // A JSON patch that does not apply is a 422 with kube's words.
    let (ok, out) = k
        .sh(&format!(
            r#"kubectl --context {R} -n {NS} patch service istio-eastwestgateway --type=json -p '[{{"op":"remove","path":"/spec/nothing"}}]'"#
        ))
        .await;
    assert!(!ok && out.contains("missing path"), "{out}");

    // Merge patch of a ConfigMap; strategic merge of a Deployment's env
    // (merged by name: the other variables stay).
    k.ok(&format!(
        r#"kubectl --context {P} -n {NS} patch configmap istio --type=merge -p '{{"data":{{"extra":"1"}}}}'"#
    ))
    .await;
    let cm = k.get(P, "configmap istio").await;
    assert_eq!(cm["data"]["extra"], "1");
    assert!(cm["data"]["mesh"].is_string());
    k.ok(&format!(
        r#"kubectl --context {R} -n {NS} patch deployment {GATEWAY} --type=strategic -p '{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"istio-proxy","env":[{{"name":"MESHTRACE_TEST","value":"1"}}]}}]}}}}}}}}'"#
    ))
    .await;
    let d = k.get(R, &format!("deployment {GATEWAY}")).await;
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.contains(&"MESHTRACE_TEST") && names.contains(&"CA_ADDR"),
        "{names:?}"
    );
    // A JSON patch of the pod template's volumes.
    k.ok(&format!(
        r#"kubectl --context {R} -n {NS} patch deployment {GATEWAY} --type=json -p '[{{"op":"replace","path":"/spec/template/spec/volumes/1/projected/sources/0/serviceAccountToken/audience","value":"other"}}]'"#
    ))
    .await;
    let pods = k
        .ok(&format!(
            "kubectl --context {R} -n {NS} get pods -l app={GATEWAY} -o jsonpath='{{.items[*].spec.volumes[1].projected.sources[0].serviceAccountToken.audience}}'"
        ))
        .await;
    assert_eq!(pods, "other", "one pod, from the new template");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_creates_in_protobuf() {
    if !kubectl_present() {
        return;
    }
    let k = Kubectl::start(None).await;
    k.ok(&format!(
        "kubectl --context {R} -n {NS} create serviceaccount sa-made && \
         kubectl --context {R} create clusterrole cr-made --verb=create --resource=tokenreviews.authentication.k8s.io && \
         kubectl --context {R} create clusterrolebinding crb-made --clusterrole=cr-made --serviceaccount={NS}:sa-made && \
         kubectl --context {R} -n {NS} create role role-made --verb=get --resource=secrets && \
         kubectl --context {R} -n {NS} create rolebinding rb-made --role=role-made --serviceaccount={NS}:sa-made && \
         kubectl --context {R} -n {NS} create configmap cm-made --from-literal=k=v && \
         kubectl --context {R} -n {NS} create secret generic secret-made --from-literal=k=v && \
         kubectl --context {R} create namespace ns-made"
    ))
    .await;
    let crb = k.get(R, "clusterrolebinding crb-made").await;
    assert_eq!(crb["roleRef"]["name"], "cr-made");
    assert_eq!(crb["subjects"][0]["name"], "sa-made");
    assert_eq!(crb["subjects"][0]["namespace"], NS);
    // The binding is in force: the account may now create tokenreviews.
    let can = k
        .ok(&format!(
            "kubectl --context {R} auth can-i create tokenreviews --as=system:serviceaccount:{NS}:sa-made"
        ))
        .await;
    // (kubectl adds a warning: the context's namespace does not apply.)
    assert_eq!(can.lines().next(), Some("yes"), "{can}");
    let role = k.get(R, "role role-made").await;
    assert_eq!(role["rules"][0]["resources"][0], "secrets");
    let secret = k.get(R, "secret secret-made").await;
    assert_eq!(secret["data"]["k"], "dg==");
    assert_eq!(k.get(R, "configmap cm-made").await["data"]["k"], "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_side_apply() {
    if !kubectl_present() {
        return;
    }
    let k = Kubectl::start(None).await;
    let cm = |keys: &str| {
        format!(
            "printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: applied\\n  namespace: {NS}\\ndata:\\n{keys}' | kubectl --context {R} apply -f -"
        )
    };
    // Create, then drop a key: client-side apply deletes what it applied before.
    assert!(
        k.ok(&cm("  a: \"1\"\\n  b: \"2\"\\n"))
            .await
            .contains("created")
    );
    assert!(k.ok(&cm("  a: \"1\"\\n")).await.contains("configured"));
    let v = k.get(R, "configmap applied").await;
    assert_eq!(v["data"], serde_json::json!({"a": "1"}));
    assert!(
        v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    // A pipeline: create --dry-run=client -o yaml | apply, for a Secret over
    // an existing one (stringData lands in data).
    k.ok(&format!(
        "kubectl --context {P} -n {NS} create secret generic cacerts --from-literal=extra=x --dry-run=client -o yaml | kubectl --context {P} apply -f -"
    ))
    .await;
    let s = k.get(P, "secret cacerts").await;
    assert_eq!(s["data"]["extra"], "eA==");
    assert!(
        s["data"]["root-cert.pem"].is_string(),
        "the other keys stay"
    );
    // Server-side apply: Service and EndpointSlice, created then changed.
    let svc = |port: u16| {
        format!(
            "printf 'apiVersion: v1\\nkind: Service\\nmetadata:\\n  name: ssa-svc\\n  namespace: {NS}\\nspec:\\n  ports:\\n  - name: tcp\\n    port: {port}\\n' | kubectl --context {R} apply --server-side -f -"
        )
    };
    assert!(k.ok(&svc(15012)).await.contains("serverside-applied"));
    k.ok(&svc(15013)).await;
    assert_eq!(
        k.get(R, "service ssa-svc").await["spec"]["ports"][0]["port"],
        15013
    );
    let slice = format!(
        "printf 'apiVersion: discovery.k8s.io/v1\\nkind: EndpointSlice\\nmetadata:\\n  name: ssa-slice\\n  namespace: {NS}\\n  labels:\\n    kubernetes.io/service-name: ssa-svc\\naddressType: IPv4\\nendpoints:\\n- addresses: [127.0.0.1]\\nports:\\n- name: tcp\\n  port: 1234\\n'"
    );
    k.ok(&format!(
        "{slice} | kubectl --context {R} apply --server-side -f -"
    ))
    .await;
    k.ok(&format!(
        "{slice} | sed 's/1234/1235/' | kubectl --context {R} apply -f -"
    ))
    .await;
    let v = k.get(R, "endpointslice ssa-slice").await;
    assert_eq!(v["ports"][0]["port"], 1235);
    assert_eq!(v["endpoints"][0]["addresses"][0], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_restart_istiod_and_replace_the_gateway_pod() {
    if !kubectl_present() {
        return;
    }
    let k = Kubectl::start(Some(FaultId::IstiodTokenAudiences)).await;
    // Kubernetes' chain: pod -> ReplicaSet -> Deployment.
    let first_istiod = k.lab.istiod_pod();
    assert!(first_istiod.starts_with("istiod-"), "{first_istiod}");
    let pod = k.get(P, &format!("pod {first_istiod}")).await;
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicaSet");
    let rs = k
        .get(
            P,
            &format!("replicaset {}", owner["name"].as_str().unwrap()),
        )
        .await;
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["name"], "istiod");
    assert!(rs["metadata"]["labels"]["pod-template-hash"].is_string());
    let d = k.get(P, "deployment istiod").await;
    assert_eq!(d["metadata"]["labels"]["app"], "istiod");
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("CLUSTER_ID") && env.contains("TOKEN_AUDIENCES"),
        "{env}"
    );

    assert_eq!(k.lab.istiod.restarts(), 0);
    k.ok(&format!(
        "kubectl --context {P} -n {NS} set env deployment/istiod TOKEN_AUDIENCES=istio-ca,extra && \
         kubectl --context {P} -n {NS} rollout status deployment/istiod --timeout=20s"
    ))
    .await;
    assert_eq!(k.lab.istiod.restarts(), 1);
    assert!(
        k.lab
            .istiod
            .logs()
            .iter()
            .any(|l| l.contains("istiod restarted (#1): TOKEN_AUDIENCES=istio-ca,extra")),
        "{:?}",
        k.lab.istiod.logs()
    );
    // The old pod is gone; the new one is the Deployment's, and the pod
    // proxy to istiod's monitoring port follows it.
    let pods = k
        .ok(&format!(
            "kubectl --context {P} -n {NS} get pods -l app=istiod -o jsonpath='{{.items[*].metadata.name}}'"
        ))
        .await;
    assert!(
        !pods.contains(&first_istiod) && pods.starts_with("istiod-"),
        "{pods}"
    );
    let clusterz = k
        .ok(&format!(
            "kubectl --context {P} get --raw /api/v1/namespaces/{NS}/pods/{pods}:15014/proxy/debug/clusterz"
        ))
        .await;
    assert!(clusterz.contains("\"id\":\"remote\""), "{clusterz}");
    let out = k
        .ok(&format!(
            "kubectl --context {P} -n {NS} rollout restart deployment/istiod && \
             kubectl --context {P} -n {NS} rollout status deployment/istiod --timeout=20s"
        ))
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(k.lab.istiod.restarts(), 2);
    let d = k.get(P, "deployment istiod").await;
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(d["metadata"]["generation"], 3);

    // The gateway's Deployment: set env replaces its pod with one built
    // from the new template.
    let before = k.get(R, &format!("pod {}", k.lab.gateway_pod())).await;
    k.ok(&format!(
        "kubectl --context {R} -n {NS} set env deployment/{GATEWAY} ISTIO_META_CLUSTER_ID=other && \
         kubectl --context {R} -n {NS} rollout status deployment/{GATEWAY} --timeout=20s"
    ))
    .await;
    let list = k
        .ok(&format!(
            "kubectl --context {R} -n {NS} get pods -l app={GATEWAY} -o json"
        ))
        .await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_ne!(items[0]["metadata"]["uid"], before["metadata"]["uid"]);
    assert!(
        items[0]["spec"]["containers"][0]["env"]
            .to_string()
            .contains("\"other\"")
    );
    // A deleted pod comes back (its ReplicaSet makes another).
    let name = items[0]["metadata"]["name"].as_str().unwrap().to_string();
    k.ok(&format!("kubectl --context {R} -n {NS} delete pod {name}"))
        .await;
    let again = k
        .ok(&format!(
            "kubectl --context {R} -n {NS} get pods -l app={GATEWAY} -o jsonpath='{{.items[*].metadata.name}}'"
        ))
        .await;
    assert!(!again.is_empty() && again != name, "{again}");
    // kubectl scale goes through the scale subresource.
    let count = format!(
        "kubectl --context {R} -n {NS} get pods -l app={GATEWAY} -o jsonpath='{{.items[*].metadata.name}}' | wc -w"
    );
    k.ok(&format!(
        "kubectl --context {R} -n {NS} scale deployment/{GATEWAY} --replicas=0"
    ))
    .await;
    assert_eq!(k.ok(&count).await.trim(), "0");
    k.ok(&format!(
        "kubectl --context {R} -n {NS} scale deployment/{GATEWAY} --replicas=1 && kubectl --context {R} -n {NS} rollout status deployment/{GATEWAY} --timeout=20s"
    ))
    .await;
    assert_eq!(k.ok(&count).await.trim(), "1");
}
