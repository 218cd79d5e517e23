//! Fleet mode on real parts: a test bed with more than one remote cluster
//! (`tests/testbed/up --remotes 2`: remote2's own kube-apiserver and
//! controller-manager, gateway and remote secret, synced by the same real
//! istiod). `meshtrace --primary CTX` with no `--remote` traces every remote
//! istiod registers; each result is compared with what the real istiod does
//! for that remote's gateway. On a bed with one remote these tests say so
//! and pass (`.ci/run` brings up the two-remote bed for them).

use crate::bed::{GATEWAY, GATEWAY_SA, NS, Testbed, Token, lock, runtime, testbed_default};
use crate::probe::{Answer, GatewayView, ask_until};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The bed's other remotes (`TB_MORE_REMOTES`), None (and why) when it has none.
fn more_remotes(test: &str) -> Option<(&'static Testbed, Vec<String>)> {
    let tb = testbed_default(test)?;
    let more: Vec<String> = std::env::var("TB_MORE_REMOTES")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if more.is_empty() {
        println!(
            "{test}: needs a test bed with more than one remote (tests/testbed/up --remotes 2); this one has one: skipped"
        );
        return None;
    }
    Some((tb, more))
}

fn kubectl(tb: &Testbed, kubeconfig: &Path, ctx: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(&tb.kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", ctx, "--request-timeout=10s"])
        .args(args)
        .output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl --context {ctx} {}: {}",
            args.join(" "),
            crate::bed::redact(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The binary in fleet mode: `--primary` and no `--remote`, JSON.
fn fleet_json(tb: &Testbed, kubeconfig: &Path) -> (Option<i32>, Value, String) {
    let out = assert_cmd::Command::cargo_bin("meshtrace")
        .expect("binary builds")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--primary",
            &tb.primary_ctx,
            "--istiod-debug-addr",
            &tb.istiod_monitoring,
            "-o",
            "json",
        ])
        .output()
        .expect("meshtrace runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "fleet output is not JSON ({e}): exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status.code()
        )
    });
    (out.status.code(), v, stderr)
}

/// `cluster ID -> (verdict, first failure)` of a fleet document.
fn verdicts(v: &Value) -> Vec<(String, String, String)> {
    let remotes = v["remotes"].as_array().cloned().unwrap_or_default();
    let reports = v["reports"].as_array().cloned().unwrap_or_default();
    remotes
        .iter()
        .zip(reports.iter())
        .map(|(m, r)| {
            (
                m["cluster_id"].as_str().unwrap_or("?").to_string(),
                r["verdict"].as_str().unwrap_or("?").to_string(),
                r["first_failure"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Remote `id`'s gateway as it asks the real istiod: a token from that
/// remote's API server, its cluster ID, through the load balancer.
fn gateway_of(tb: &Testbed, id: &str) -> GatewayView {
    let token = kubectl(
        tb,
        &tb.kubeconfig,
        &format!("tb-{id}"),
        &[
            "-n",
            NS,
            "create",
            "token",
            GATEWAY_SA,
            "--audience",
            "istio-ca",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            GATEWAY,
            "--duration",
            "10m",
        ],
    )
    .unwrap_or_else(|e| panic!("{id}'s gateway token: {e}"));
    GatewayView {
        token: Token(token.trim().to_string()),
        cluster_id: id.to_string(),
        root_pem: tb.root_pem.clone(),
        addr: tb.dial_addr(),
        server_name: tb.server_name.clone(),
    }
}

/// What the real istiod answers remote `id`'s gateway, asked until it issues
/// (its informers take a moment after a change).
fn istiod_answers(tb: &Testbed, id: &str) -> Answer {
    runtime().block_on(ask_until(
        &gateway_of(tb, id),
        Duration::from_secs(10),
        Answer::is_issued,
    ))
}

#[test]
fn fleet_traces_every_remote_istiod_registers() {
    let Some((tb, more)) = more_remotes("fleet_traces_every_remote_istiod_registers") else {
        return;
    };
    let _g = lock();
    let (code, v, stderr) = fleet_json(tb, &tb.kubeconfig);
    let got = verdicts(&v);
    println!("fleet on the real test bed: {got:?}");
    assert_eq!(v["schema"], "meshtrace.fleet.v1");
    let mut want: Vec<String> = vec![tb.remote_cluster_id.clone()];
    want.extend(more.iter().cloned());
    want.sort();
    let ids: Vec<String> = got.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(ids, want, "every remote secret key, in cluster ID order");
    assert!(
        got.iter().all(|(_, verdict, _)| verdict == "pass") && code == Some(0),
        "exit {code:?}: {got:?}\nstderr: {stderr}"
    );
    // Each remote through the context whose server is its remote secret's.
    for m in v["remotes"].as_array().unwrap() {
        let id = m["cluster_id"].as_str().unwrap();
        assert_eq!(m["context"], format!("tb-{id}"), "{m}");
        assert!(
            m["context_rule"]
                .as_str()
                .is_some_and(|r| r.contains("server")),
            "{m}"
        );
    }
    // The real istiod issues to each remote's gateway, as meshtrace says.
    for id in &want {
        let a = istiod_answers(tb, id);
        assert!(a.is_issued(), "istiod for {id}'s gateway: {}", a.short());
    }
}

/// A remote whose context the operator does not have: traced with the
/// remote secret's own credentials (istiod's view); the steps that need the
/// remote's own rights are skipped as `<step>/no-context`, the rest pass.
#[test]
fn fleet_without_a_context_uses_istiods_view() {
    let Some((tb, more)) = more_remotes("fleet_without_a_context_uses_istiods_view") else {
        return;
    };
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let raw = kubectl(
        tb,
        &tb.kubeconfig,
        &tb.primary_ctx,
        &["config", "view", "--raw"],
    )
    .unwrap();
    std::fs::write(&kc, raw).unwrap();
    let gone = &more[0];
    kubectl(
        tb,
        &kc,
        &tb.primary_ctx,
        &["config", "delete-context", &format!("tb-{gone}")],
    )
    .unwrap();
    let (code, v, stderr) = fleet_json(tb, &kc);
    let got = verdicts(&v);
    println!("fleet without tb-{gone}: {got:?}");
    assert_eq!(code, Some(0), "{got:?}\nstderr: {stderr}");
    let i = got
        .iter()
        .position(|(id, _, _)| id == gone)
        .unwrap_or_else(|| panic!("{gone} in {got:?}"));
    let m = &v["remotes"][i];
    assert!(m.get("context").is_none(), "{m}");
    let r = &v["reports"][i];
    let mut skipped = vec![];
    for s in r["steps"].as_array().unwrap() {
        match s["status"].as_str() {
            Some("pass") => {}
            Some("skipped") => {
                assert_eq!(
                    s["code"],
                    format!("{}/no-context", s["id"].as_str().unwrap()),
                    "{s}"
                );
                skipped.push(s["id"].as_str().unwrap().to_string());
            }
            other => panic!("{gone}: step {} is {other:?}: {s}", s["id"]),
        }
    }
    for id in [
        "gateway-token",
        "token-review",
        "csr",
        "issued-chain",
        "xds",
    ] {
        assert!(skipped.iter().any(|s| s == id), "{id} skipped: {skipped:?}");
    }
    // What was checked passed with istiod's own credentials; istiod agrees
    // (it issues to that remote's gateway).
    assert!(istiod_answers(tb, gone).is_issued());
}

/// One remote broken, the others untouched: istiod's reader may no longer
/// create TokenReviews in remote2. meshtrace fails that remote at
/// remote-rbac and passes the rest (exit 1, the worst); the real istiod
/// refuses that remote's gateway and still issues to the others.
#[test]
fn fleet_names_the_one_broken_remote() {
    let Some((tb, more)) = more_remotes("fleet_names_the_one_broken_remote") else {
        return;
    };
    let _g = lock();
    let broken = more[0].clone();
    let ctx = format!("tb-{broken}");
    let crb = "istio-reader-clusterrole-istio-system";
    let saved = kubectl(
        tb,
        &tb.kubeconfig,
        &ctx,
        &["get", "clusterrolebinding", crb, "-o", "json"],
    )
    .expect("the reader's binding");
    let saved = crate::bed::clean(&serde_json::from_str(&saved).unwrap());
    struct Restore<'a>(&'a Testbed, String, Value);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), self.2.to_string()).unwrap();
            let path = f.path().display().to_string();
            if let Err(e) = kubectl(self.0, &self.0.kubeconfig, &self.1, &["apply", "-f", &path]) {
                eprintln!("RESTORE FAILED: {e}");
            }
        }
    }
    let _restore = Restore(tb, ctx.clone(), saved);
    kubectl(
        tb,
        &tb.kubeconfig,
        &ctx,
        &["delete", "clusterrolebinding", crb],
    )
    .unwrap();
    // The real istiod first: its TokenReview in remote2 is now forbidden.
    let g_answer = {
        let t0 = std::time::Instant::now();
        loop {
            let a = istiod_answers_once(tb, &broken);
            if !a.is_issued() || t0.elapsed() > Duration::from_secs(10) {
                break a;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(
        matches!(g_answer, Answer::Unauthenticated(_)),
        "istiod for {broken}'s gateway without the reader's TokenReview right: {}",
        g_answer.short()
    );
    let (code, v, _) = fleet_json(tb, &tb.kubeconfig);
    let got = verdicts(&v);
    println!(
        "fleet with {broken} broken: {got:?}; istiod: {}",
        g_answer.short()
    );
    assert_eq!(code, Some(1), "{got:?}");
    for (id, verdict, first) in &got {
        if *id == broken {
            assert_eq!(
                (verdict.as_str(), first.as_str()),
                ("fail", "remote-rbac"),
                "{got:?}"
            );
        } else {
            assert_eq!(verdict, "pass", "{got:?}");
            assert!(istiod_answers(tb, id).is_issued(), "{id} still issued");
        }
    }
}

/// One ask, no retry (for a fault whose answer must change).
fn istiod_answers_once(tb: &Testbed, id: &str) -> Answer {
    runtime().block_on(crate::probe::ask_istiod(&gateway_of(tb, id)))
}
