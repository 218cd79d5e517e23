//! Fleet mode (`meshtrace --primary CTX` without `--remote`, `meshtrace lab
//! --remotes N`): every remote the primary registers, one report each, the
//! exit code the worst of them, the primary's reads made once.

use assert_cmd::Command;
use meshtrace::lab::world::Lab;
use serde_json::{Value, json};

fn meshtrace() -> Command {
    Command::cargo_bin("meshtrace").expect("binary builds")
}

fn schema() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.json")).unwrap(),
    )
    .unwrap()
}

/// Validates a fleet document: its shape against `$defs/FleetReport`, and
/// each of its reports against the single report's schema (the root).
fn validate_fleet(doc: &Value) {
    let s = schema();
    let fleet = jsonschema::validator_for(
        &json!({"$schema": s["$schema"], "$ref": "#/$defs/FleetReport", "$defs": s["$defs"]}),
    )
    .unwrap();
    let report = jsonschema::validator_for(&s).unwrap();
    let mut errors: Vec<String> = fleet
        .iter_errors(doc)
        .map(|e| format!("fleet: {e} at {}", e.instance_path()))
        .collect();
    for (i, r) in doc["reports"].as_array().unwrap().iter().enumerate() {
        errors.extend(
            report
                .iter_errors(r)
                .map(|e| format!("reports[{i}]: {e} at {}", e.instance_path())),
        );
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

fn run(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = meshtrace().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc, stderr)
}

fn verdicts(doc: &Value) -> Vec<String> {
    doc["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verdict"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_healthy_fleet_passes_with_one_report_per_remote() {
    let (code, doc, err) = run(&["lab", "--remotes", "3", "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    validate_fleet(&doc);
    assert_eq!(doc["schema"], "meshtrace.fleet.v1");
    assert_eq!(doc["verdict"], "pass");
    assert_eq!(doc["counts"], json!({"pass": 3, "warn": 0, "fail": 0}));
    assert_eq!(verdicts(&doc), ["pass", "pass", "pass"]);
    for i in 0..3 {
        let id = format!("remote-{}", i + 1);
        let r = &doc["reports"][i];
        assert_eq!(r["target"]["cluster_id"], id.as_str());
        assert_eq!(r["target"]["remote"], format!("lab-remote-{}", i + 1));
        assert_eq!(doc["remotes"][i]["cluster_id"], id.as_str());
        assert_eq!(
            doc["remotes"][i]["secret"],
            format!("istio-system/istio-remote-secret-{id}")
        );
        // Every step ran and passed: the CSR, the chain and xDS included.
        let steps = r["steps"].as_array().unwrap();
        assert_eq!(steps.len(), meshtrace::model::STEPS.len());
        assert!(steps.iter().all(|s| s["status"] == "pass"), "{id}: {r}");
    }
}

#[test]
fn one_broken_remote_fails_only_that_remote_with_its_code() {
    let (code, doc, err) = run(&[
        "lab",
        "--remotes",
        "3",
        "--fault",
        "no-tokenreview-rbac@2",
        "-o",
        "json",
    ]);
    assert_eq!(code, Some(1), "{err}");
    validate_fleet(&doc);
    assert_eq!(doc["fault"], "no-tokenreview-rbac@2");
    assert_eq!(verdicts(&doc), ["pass", "fail", "pass"]);
    let bad = &doc["reports"][1];
    assert_eq!(bad["target"]["cluster_id"], "remote-2");
    assert_eq!(bad["first_failure"], "remote-rbac");
    let rbac = bad["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "remote-rbac")
        .unwrap();
    assert_eq!(rbac["code"], "remote-rbac/no-tokenreview-create");
    // The fix names the broken remote's own context.
    let cmds = rbac["commands"].to_string();
    assert!(cmds.contains("lab-remote-2"), "{cmds}");
}

#[test]
fn the_exit_code_is_the_worst_remote() {
    // A warning elsewhere is not a failure, unless --fail-on-warn.
    let (code, doc, err) = run(&[
        "lab",
        "--remotes",
        "2",
        "--fault",
        "reader-token-expiring@2",
        "-o",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(verdicts(&doc), ["pass", "warn"]);
    assert_eq!(doc["verdict"], "warn");
    let (code, _, err) = run(&[
        "lab",
        "--remotes",
        "2",
        "--fault",
        "reader-token-expiring@2",
        "--fail-on-warn",
        "-o",
        "json",
    ]);
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn text_is_one_line_per_remote_then_the_failures_in_full() {
    let out = meshtrace()
        .args([
            "lab",
            "--remotes",
            "3",
            "--fault",
            "wrong-ca-data@3",
            "-o",
            "text",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("meshtrace fleet: primary \"lab-primary\", 3 remotes"),
        "{text}"
    );
    let remote_lines: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" remote-") && l.contains("lab-remote-") && l.ends_with(" ms)"))
        .collect();
    assert_eq!(remote_lines.len(), 3, "{text}");
    assert!(remote_lines[0].starts_with("✔ remote-1"), "{text}");
    assert!(
        remote_lines[2].starts_with("✘ remote-3") && remote_lines[2].contains("remote-api-tls/"),
        "{text}"
    );
    assert!(text.contains("FAIL: 1 of 3 remotes failed"), "{text}");
    // Then the failing remote's whole trace, and only that one.
    let full = text
        .split("── remote-3 (lab-remote-3) ──")
        .nth(1)
        .expect(&text);
    assert!(
        full.contains("meshtrace: primary \"lab-primary\" -> remote \"lab-remote-3\""),
        "{full}"
    );
    assert!(!text.contains("── remote-1"), "{text}");
}

/// The lab's kubeconfig without some contexts, as JSON (which is YAML).
fn kubeconfig_without(lab: &Lab, drop: &[&str]) -> tempfile::NamedTempFile {
    let mut kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml).unwrap();
    kc.contexts.retain(|c| !drop.contains(&c.name.as_str()));
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), serde_json::to_string(&kc).unwrap()).unwrap();
    f
}

async fn run_async(args: Vec<String>) -> (Option<i32>, Value, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .unwrap()
}

/// One remote's context fails its preflight (its token is refused): the
/// fleet still runs, that remote is traced with its remote secret's
/// credentials, and its skipped steps name the context and the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_whose_context_fails_its_preflight_does_not_stop_the_fleet() {
    let lab = Lab::start_fleet(Default::default(), 3, None, 1, |_| {})
        .await
        .unwrap();
    let mut kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml).unwrap();
    let user = kc
        .contexts
        .iter()
        .find(|c| c.name == "lab-remote-2")
        .and_then(|c| c.context.as_ref())
        .map(|c| c.user.clone().unwrap())
        .unwrap();
    let bad = "refused-token-0123456789abcdef";
    for a in kc.auth_infos.iter_mut().filter(|a| a.name == user) {
        a.auth_info.as_mut().unwrap().token = Some(bad.to_string().into());
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), serde_json::to_string(&kc).unwrap()).unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let (code, doc, err) = run_async(
        [
            "--kubeconfig",
            &path,
            "--primary",
            "lab-primary",
            "-o",
            "json",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    lab.shutdown();
    assert_eq!(code, Some(0), "{err}\n{doc}");
    validate_fleet(&doc);
    assert_eq!(verdicts(&doc), ["pass", "pass", "pass"]);
    assert!(
        err.contains("\"lab-remote-2\"")
            && err.contains("traced with its remote secret's credentials"),
        "{err}"
    );
    assert!(!err.contains(bad) && !doc.to_string().contains(bad));
    let r = &doc["reports"][1];
    let csr = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "csr")
        .unwrap();
    assert_eq!(csr["status"], "skipped", "{csr}");
    let why = csr["diagnosis"].as_str().unwrap();
    assert!(
        why.contains("kube context \"lab-remote-2\" of remote remote-2 failed its preflight")
            && why.contains("refuses the credentials")
            && !why.contains("add a kube context"),
        "{why}"
    );
    // The other remotes ran everything.
    assert_eq!(doc["reports"][0]["counts"]["skipped"], 0);
    assert_eq!(doc["reports"][2]["counts"]["skipped"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_without_a_context_is_traced_as_istiod_sees_it_and_says_what_it_skipped() {
    let lab = Lab::start_fleet(Default::default(), 3, None, 1, |_| {})
        .await
        .unwrap();
    let kc = kubeconfig_without(&lab, &["lab-remote-3"]);
    let path = kc.path().to_str().unwrap().to_string();
    let (code, doc, err) = run_async(
        [
            "--kubeconfig",
            &path,
            "--primary",
            "lab-primary",
            "-o",
            "json",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    lab.shutdown();
    assert_eq!(code, Some(0), "{err}\n{doc}");
    validate_fleet(&doc);
    assert_eq!(verdicts(&doc), ["pass", "pass", "pass"]);
    let how = &doc["remotes"][2];
    assert!(how.get("context").is_none(), "{how}");
    assert!(
        how["context_rule"]
            .as_str()
            .unwrap()
            .contains("the remote secret's own credentials"),
        "{how}"
    );
    let r = &doc["reports"][2];
    assert_eq!(r["target"]["remote"], "");
    for s in r["steps"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let needs_rights = [
            "injection-webhook",
            "gateway-token",
            "token-review",
            "csr",
            "issued-chain",
            "xds",
        ];
        if needs_rights.contains(&id) {
            assert_eq!(s["status"], "skipped", "{s}");
            assert_eq!(s["code"], format!("{id}/no-context"), "{s}");
            let why = s["diagnosis"].as_str().unwrap();
            assert!(
                why.contains("no kube context for remote remote-3")
                    && why.contains("--remote-context remote-3=CTX"),
                "{why}"
            );
        } else {
            // Read with istiod's own credentials: no false alarm.
            assert_eq!(s["status"], "pass", "{s}");
        }
    }
    // The remotes with a context ran everything.
    assert_eq!(doc["reports"][0]["counts"]["skipped"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_context_picks_the_context_and_bad_ones_exit_2_quoting_them() {
    let lab = Lab::start_fleet(Default::default(), 2, None, 1, |_| {})
        .await
        .unwrap();
    let kc = kubeconfig_without(&lab, &[]);
    let path = kc.path().to_str().unwrap().to_string();
    let with = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "--kubeconfig",
            &path,
            "--primary",
            "lab-primary",
            "-o",
            "json",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // Given explicitly, it is used (and said so).
    let (code, doc, err) = run_async(with(&["--remote-context", "remote-2=lab-remote-2"])).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        doc["remotes"][1]["context_rule"],
        "--remote-context remote-2=lab-remote-2"
    );
    // An ID the primary does not register: exit 2, naming it and the known ones.
    let (code, _, err) = run_async(with(&["--remote-context", "remote-9=lab-remote-1"])).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"remote-9=lab-remote-1\"")
            && err.contains("no cluster ID \"remote-9\"")
            && err.contains("registered: remote-1, remote-2"),
        "{err}"
    );
    // A context that is not in the kubeconfig.
    let (code, _, err) = run_async(with(&["--remote-context", "remote-1=nowhere"])).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"remote-1=nowhere\"") && err.contains("\"nowhere\""),
        "{err}"
    );
    lab.shutdown();
}

#[test]
fn malformed_fleet_flags_exit_2_quoting_the_value() {
    for (args, says) in [
        (
            vec!["--primary", "p", "--remote-context", "remote-1"],
            "\"remote-1\" is not ID=CONTEXT",
        ),
        (
            vec!["--primary", "p", "--remote-context", "=ctx"],
            "\"=ctx\" is not ID=CONTEXT",
        ),
        (
            vec!["lab", "--remotes", "0"],
            "\"0\" is not a number of remotes",
        ),
        (
            vec!["lab", "--remotes", "2", "--fault", "stale-root@x"],
            "\"stale-root@x\"",
        ),
        (
            vec!["lab", "--remotes", "2", "--fault", "stale-root@3"],
            "--fault stale-root@3: the lab has 2 remotes",
        ),
        (
            vec!["lab", "--remotes", "2", "-o", "markdown"],
            "-o markdown shows one remote's trace",
        ),
    ] {
        let out = meshtrace().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The primary's reads are made once for the whole fleet: many traces
/// asking the same GET at once send one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_reads_send_one_request_for_many_askers() {
    use k8s_openapi::api::core::v1::Namespace;
    let lab = Lab::start(None).await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml).unwrap();
    let (client, _) = meshtrace::engine::target::client_for(
        &kc,
        "lab-primary",
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let (shared, stats) = meshtrace::probe::kube_cache::shared_reads(client);
    let api: kube::Api<Namespace> = kube::Api::all(shared);
    let reads = (0..20).map(|_| api.get("istio-system"));
    let got = futures::future::join_all(reads).await;
    assert!(got.iter().all(|r| r.is_ok()));
    // A 404 is an answer too, shared like any other.
    let missing = futures::future::join_all((0..5).map(|_| api.get_opt("nope"))).await;
    assert!(missing.iter().all(|r| matches!(r, Ok(None))));
    lab.shutdown();
    assert_eq!(stats.counts(), (25, 2));
}

/// `--watch` on a fleet: run after run, the fleet each time, then which
/// remotes changed; Ctrl-C ends with the last run's (worst) code.
#[test]
#[allow(unsafe_code)]
fn watch_reruns_the_fleet_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let bin = assert_cmd::cargo::cargo_bin("meshtrace");
    let mut child = std::process::Command::new(bin)
        .args([
            "lab",
            "--remotes",
            "2",
            "--fault",
            "no-tokenreview-rbac@2",
            "--watch",
            "1s",
            "-o",
            "text",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while let Some(Ok(line)) = lines.next() {
        let done = line.starts_with("nothing changed since run 1");
        seen.push(line);
        if done || std::time::Instant::now() > deadline {
            break;
        }
    }
    // SAFETY: kill(2) on the pid of our own child, which has not been waited for.
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    let text = seen.join("\n");
    assert!(
        text.contains("── run 1 ·") && text.contains("── run 2 ·"),
        "{text}"
    );
    assert_eq!(
        text.matches("FAIL: 1 of 2 remotes failed").count(),
        2,
        "two runs of the fleet:\n{text}"
    );
    assert!(text.contains("nothing changed since run 1"), "{text}");
    assert_eq!(status.code(), Some(1), "{text}");
}

/// Several `--remote`: each is matched to the key whose server is its own,
/// and one no labelled remote secret points at is traced on its own, where
/// `remote-secret` says why istiod does not know it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_remotes_include_one_istiod_does_not_register() {
    let fault = meshtrace::lab::faults::find("secret-unlabelled");
    let lab = Lab::start_fleet(Default::default(), 2, fault, 2, |_| {})
        .await
        .unwrap();
    let kc = kubeconfig_without(&lab, &[]);
    let path = kc.path().to_str().unwrap().to_string();
    let args = [
        "--kubeconfig",
        &path,
        "--primary",
        "lab-primary",
        "--remote",
        "lab-remote-1",
        "--remote",
        "lab-remote-2",
        "-o",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let (code, doc, err) = run_async(args).await;
    lab.shutdown();
    assert_eq!(code, Some(1), "{err}");
    validate_fleet(&doc);
    assert_eq!(doc["remotes"][0]["cluster_id"], "remote-1");
    assert_eq!(doc["remotes"][0]["context"], "lab-remote-1");
    let extra = &doc["remotes"][1];
    assert!(extra.get("cluster_id").is_none(), "{extra}");
    assert!(
        extra["context_rule"]
            .as_str()
            .unwrap()
            .starts_with("--remote lab-remote-2: no remote secret istiod registers"),
        "{extra}"
    );
    assert_eq!(verdicts(&doc), ["pass", "fail"]);
    let rs = doc["reports"][1]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "remote-secret")
        .unwrap()
        .clone();
    assert_eq!(rs["code"], "remote-secret/not-labelled", "{rs}");
}

/// A remote secret is the primary's text: a key with escape sequences and
/// a kubeconfig istiod refuses reach the fleet's outputs cleaned, and the
/// remote is still traced (and fails where istiod would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_remote_secret_key_is_cleaned_and_traced() {
    use k8s_openapi::api::core::v1::Secret;
    let lab = Lab::start_fleet(Default::default(), 2, None, 1, |_| {})
        .await
        .unwrap();
    let evil = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J";
    {
        let mut p = lab.primary_state.write().unwrap();
        let mut data = std::collections::BTreeMap::new();
        data.insert(
            evil.to_string(),
            k8s_openapi::ByteString(b"not: [a kubeconfig".to_vec()),
        );
        p.store.put(Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("istio-remote-secret-evil".into()),
                namespace: Some("istio-system".into()),
                labels: Some([("istio/multiCluster".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        });
    }
    let kc = kubeconfig_without(&lab, &[]);
    let path = kc.path().to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        meshtrace()
            .args([
                "--kubeconfig",
                &path,
                "--primary",
                "lab-primary",
                "-o",
                "text",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    lab.shutdown();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    // Three remotes: the two healthy ones and the one istiod cannot load.
    assert!(text.contains("3 remotes registered"), "{text}");
    assert!(text.contains("FAIL: 1 of 3 remotes failed"), "{text}");
    assert!(text.contains("remote-kubeconfig/"), "{text}");
}

/// `--watch` on a fleet reads the remotes again before every run: a remote
/// secret deleted between runs is said to be no longer registered, and the
/// next run traces only what istiod still registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(unsafe_code)]
async fn watch_reads_the_remotes_again_each_run() {
    use k8s_openapi::api::core::v1::Secret;
    use std::io::{BufRead, BufReader};
    let lab = Lab::start_fleet(Default::default(), 2, None, 1, |_| {})
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc_path = dir.path().join("kubeconfig");
    std::fs::write(&kc_path, &lab.kubeconfig_yaml).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml).unwrap();
    let primary = meshtrace::engine::target::client_for(
        &kc,
        "lab-primary",
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap()
    .0;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("meshtrace"))
        .arg("--kubeconfig")
        .arg(&kc_path)
        .args(["--primary", "lab-primary", "--watch", "1s", "-o", "text"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut deleted = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        // After the first run: the second remote's secret goes away.
        if !deleted && line.starts_with("next run in") {
            let secrets: kube::Api<Secret> = kube::Api::namespaced(primary.clone(), "istio-system");
            secrets
                .delete("istio-remote-secret-remote-2", &Default::default())
                .await
                .unwrap();
            deleted = true;
        }
        let done = line.starts_with("Δ changed since run 1") || line.starts_with("nothing changed");
        seen.push(line);
        if done {
            break;
        }
    }
    // SAFETY: kill(2) on the pid of our own child, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let _ = child.wait();
    lab.shutdown();
    let text = seen.join("\n");
    assert!(text.contains("2 remotes registered"), "{text}");
    assert!(text.contains("1 remote registered"), "{text}");
    assert!(
        text.contains("Δ changed since run 1: remote-2: no longer registered"),
        "{text}"
    );
}
