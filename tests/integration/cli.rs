//! The command line as a user runs it: exit codes, formats, bad input.

use assert_cmd::Command;

fn meshtrace() -> Command {
    Command::cargo_bin("meshtrace").expect("binary builds")
}

#[test]
fn lab_json_names_the_failing_step_first_and_exits_1() {
    let out = meshtrace()
        .args(["lab", "--fault", "no-tokenreview-rbac", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["schema"], "meshtrace.v1");
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["first_failure"], "remote-rbac");
    assert_eq!(v["target"]["fault"], "no-tokenreview-rbac");
}

#[test]
fn healthy_lab_text_exits_0() {
    let out = meshtrace().args(["lab", "-o", "text"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PASS: every step passed"), "{text}");
    assert!(text.contains("issued-chain"));
}

#[test]
fn warnings_fail_only_with_fail_on_warn() {
    let out = meshtrace()
        .args(["lab", "--fault", "root-expiring", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = meshtrace()
        .args([
            "lab",
            "--fault",
            "root-expiring",
            "-o",
            "json",
            "--fail-on-warn",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn mermaid_and_markdown_render_the_flow() {
    let out = meshtrace()
        .args(["lab", "--fault", "stale-root", "-o", "mermaid"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("sequenceDiagram"));
    assert!(
        text.contains("-x") && text.contains("root-of-trust"),
        "{text}"
    );
    let out = meshtrace()
        .args(["lab", "--fault", "stale-root", "-o", "markdown"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("```mermaid") && text.contains("docs/checks.md#root-of-trust"),
        "{text}"
    );
}

#[test]
fn list_faults_lists_each_with_its_step() {
    let out = meshtrace().args(["lab", "--list-faults"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for f in meshtrace::lab::faults::FAULTS {
        assert!(
            text.lines()
                .any(|l| l.starts_with(f.name) && l.contains(f.step.as_str())),
            "{} missing",
            f.name
        );
    }
}

#[test]
fn bad_input_exits_2_and_quotes_the_value() {
    let out = meshtrace()
        .args(["lab", "--fault", "no-such-fault"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"no-such-fault\""));

    let out = meshtrace()
        .args([
            "--primary",
            "a",
            "--remote",
            "b",
            "--kubeconfig",
            "/nonexistent/kc",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kc"));

    let out = meshtrace()
        .args(["lab", "--timeout", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fast"));
}

#[test]
fn unknown_context_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: real\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\ncurrent-context: real\n",
    )
    .unwrap();
    let out = meshtrace()
        .args([
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--primary",
            "real",
            "--remote",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nope\"") && err.contains("real"), "{err}");
}

/// The JSON output carries every field docs/schema.json requires, and the
/// enums there match the model's ids.
#[test]
fn json_matches_documented_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.json")).unwrap(),
    )
    .unwrap();
    let out = meshtrace()
        .args(["lab", "--fault", "wrong-ca-data", "-o", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in schema["required"].as_array().unwrap() {
        assert!(
            report.get(key.as_str().unwrap()).is_some(),
            "report lacks required {key}"
        );
    }
    let text = schema.to_string();
    for s in meshtrace::model::STEPS {
        assert!(
            text.contains(&format!("\"{}\"", s.id.as_str())),
            "schema lacks step id {}",
            s.id
        );
    }
    for step in report["steps"].as_array().unwrap() {
        for key in [
            "id",
            "title",
            "status",
            "duration_ms",
            "started_ms",
            "evidence",
            "link",
        ] {
            assert!(step.get(key).is_some(), "step lacks {key}: {step}");
        }
        if step["status"] == "skipped" && step["id"] != "csr" {
            assert!(
                step["blocked_by"].as_array().is_some_and(|b| !b.is_empty()),
                "{step}"
            );
        }
    }
}

/// `-o events` records a run; `replay` shows it again in any format, exactly.
#[test]
fn replay_of_a_recording_gives_back_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let rec = meshtrace()
        .args(["lab", "--fault", "gateway-audience", "-o", "events"])
        .output()
        .unwrap();
    assert_eq!(rec.status.code(), Some(1));
    let events = dir.path().join("run.jsonl");
    std::fs::write(&events, &rec.stdout).unwrap();
    let events = events.to_str().unwrap();

    // Events in, events out: byte for byte.
    let again = meshtrace()
        .args(["replay", events, "-o", "events"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&rec.stdout)
    );

    // The report of the replay is the report of the recorded run.
    let json = meshtrace()
        .args(["replay", events, "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["first_failure"], "gateway-token");
    assert_eq!(report["target"]["fault"], "gateway-audience");
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&rec.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "trace-finished");
    assert_eq!(report["total_ms"], last["total_ms"]);

    // A saved report replays too, to the same report.
    let report_file = dir.path().join("run.json");
    std::fs::write(&report_file, &json.stdout).unwrap();
    let from_report = meshtrace()
        .args(["replay", report_file.to_str().unwrap(), "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(from_report.status.code(), Some(1));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&from_report.stdout).unwrap(),
        report
    );

    // From stdin, into Markdown.
    let md = meshtrace()
        .args(["replay", "-", "-o", "markdown"])
        .write_stdin(rec.stdout.clone())
        .output()
        .unwrap();
    assert_eq!(md.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&md.stdout).contains("gateway-token"));
}

#[test]
fn replay_refuses_what_is_not_a_whole_recording() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"event\":\"trace-started\",\"target\":{\"primary\":\"a\",\"remote\":\"b\",\"istio_namespace\":\"istio-system\",\"mode\":\"clusters\"}}\n{\"event\":\"step-started\",\"id\":\"csr\",\"at_ms\":\"soon\"}\n",
    )
    .unwrap();
    let out = meshtrace()
        .args(["replay", bad.to_str().unwrap(), "-o", "text"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.jsonl:2:") && err.contains("soon"),
        "{err}"
    );

    // A recording cut short: what it has is shown, and it is not a pass.
    let rec = meshtrace().args(["lab", "-o", "events"]).output().unwrap();
    let head: Vec<&str> = std::str::from_utf8(&rec.stdout)
        .unwrap()
        .lines()
        .take(4)
        .collect();
    let out = meshtrace()
        .args(["replay", "-", "-o", "text"])
        .write_stdin(head.join("\n"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("INCOMPLETE"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends before the trace finished"));

    // Flags that change how a trace runs have no place in a replay.
    let out = meshtrace()
        .args(["replay", "-", "--no-csr"])
        .write_stdin(rec.stdout.clone())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-csr"));
}

/// `--watch` without the full screen: run after run, what changed, and
/// Ctrl-C ends it with the last run's exit code.
#[test]
// libc: send SIGINT, as Ctrl-C does.
#[allow(unsafe_code)]
fn watch_reruns_until_ctrl_c_and_exits_with_the_last_verdict() {
    use std::io::{BufRead, BufReader};
    let bin = assert_cmd::cargo::cargo_bin("meshtrace");
    let mut child = std::process::Command::new(bin)
        .args([
            "lab",
            "--fault",
            "secret-unlabelled",
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
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
        text.matches("FAIL at remote-secret").count(),
        2,
        "two runs, each failing at remote-secret:\n{text}"
    );
    assert!(text.contains("nothing changed since run 1"), "{text}");
    assert_eq!(status.code(), Some(1), "{text}");

    // Formats that print one document refuse it.
    let out = meshtrace()
        .args(["lab", "--watch", "5s", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-o json"));
}

#[test]
fn a_failing_exec_plugin_is_said_in_words_and_its_output_is_sanitized() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        r#"apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: x
  context: {cluster: c, user: u}
- name: y
  context: {cluster: c, user: u}
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: sh
      args: ["-c", "printf 'login expired; last token eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl \\033]0;t\\007' >&2; exit 3"]
      interactiveMode: Never
"#,
    )
    .unwrap();
    let out = meshtrace()
        .args([
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--primary",
            "x",
            "--remote",
            "y",
            "-o",
            "text",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the kubeconfig's exec plugin failed (exit status: 3): login expired; last token [redacted JWT]"),
        "{err}"
    );
    assert!(!err.contains("Output {"), "Rust Debug output: {err}");
    assert!(!err.contains("c2lnbmF0dXJl"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
}

/// `explain` prints a code's entry offline, and refuses an unknown one with
/// exit 2 and a suggestion.
#[test]
fn explain_prints_docs_offline_and_refuses_unknown_codes() {
    let out = meshtrace()
        .args(["explain", "remote-rbac"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SelfSubjectAccessReview") && text.contains("https://"),
        "{text}"
    );
    let out = meshtrace().args(["explain", "--list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<step>/timeout"));
    let out = meshtrace()
        .args(["explain", "remote-rbak"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"remote-rbak\"") && err.contains("did you mean remote-rbac"),
        "{err}"
    );
}

/// The lines meshtrace printed on stderr.
fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bad_flag_values_exit_2_quoting_the_value() {
    let cases: &[(&str, &str, &str)] = &[
        ("--gateway", "foo", "NAMESPACE/NAME"),
        ("--gateway", "/x", "NAMESPACE/NAME"),
        ("--gateway", "x/", "NAMESPACE/NAME"),
        ("--gateway", "a/b/c", "NAMESPACE/NAME"),
        ("--gateway", "Istio_System/gw", "DNS-1123 label"),
        ("--gateway", "istio-system/GW", "DNS-1123 subdomain"),
        ("--istiod-addr", "nope", "HOST:PORT"),
        ("--istiod-addr", "127.0.0.1:99999", "from 1 to 65535"),
        ("--istiod-addr", ":15012", "no host"),
        ("--istiod-debug-addr", "nope", "HOST:PORT"),
        ("--istiod-debug-addr", "127.0.0.1:0", "from 1 to 65535"),
        ("--timeout", "0s", "zero"),
        ("--warn-within", "0s", "zero"),
    ];
    for (flag, value, says) in cases {
        let out = meshtrace().args(["lab", flag, value]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("{value:?}")) && err.contains(says) && err.contains(flag),
            "{flag} {value}: {err}"
        );
    }
}

#[test]
fn good_addresses_pass_the_flag_check() {
    // Parsing accepts them; the run then stops at the next check (the same
    // context twice), which proves the value itself was not refused.
    for (flag, value) in [
        ("--istiod-addr", "[::1]:15012"),
        ("--istiod-addr", "host.example:15012"),
        ("--istiod-debug-addr", "http://127.0.0.1:15014/"),
        ("--gateway", "istio-system/istio-eastwestgateway"),
    ] {
        let out = meshtrace()
            .args(["--primary", "same", "--remote", "same", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("are the same context \"same\"") && !lines[0].contains(value),
            "{flag} {value}: {lines:?}"
        );
    }
}

#[test]
fn the_same_context_twice_is_refused() {
    let out = meshtrace()
        .args(["--primary", "kind-one", "--remote", "kind-one"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--primary and --remote are the same context \"kind-one\""),
        "{err}"
    );
}

#[test]
fn a_missing_kubeconfig_is_one_line_with_a_suggestion() {
    let out = meshtrace()
        .args([
            "--primary",
            "a",
            "--remote",
            "b",
            "--kubeconfig",
            "/nonexistent/kc",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line.matches("/nonexistent/kc").count(), 1, "{line}");
    assert!(
        line.contains("does not exist")
            && line.contains("--kubeconfig")
            && line.contains("meshtrace lab"),
        "{line}"
    );
}

#[test]
fn an_istio_namespace_in_neither_cluster_gets_did_you_mean() {
    let out = meshtrace()
        .args(["lab", "--istio-namespace", "istio-sytem", "-o", "text"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("--istio-namespace \"istio-sytem\" exists in neither cluster")
            && lines[0].contains("did you mean \"istio-system\"?"),
        "{lines:?}"
    );
    assert!(out.stdout.is_empty(), "no step ran");
}

/// Runs the binary with `kubeconfig` (the lab's contexts, edited) while the
/// lab serves; returns the exit code and stderr's lines.
async fn run_against_lab(kubeconfig: String) -> (Option<i32>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, kubeconfig).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        meshtrace()
            .args([
                "--kubeconfig",
                kc.to_str().unwrap(),
                "--primary",
                "lab-primary",
                "--remote",
                "lab-remote",
                "--timeout",
                "2s",
                "-o",
                "text",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (out.status.code(), stderr_lines(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_context_exits_2_in_one_line_naming_it() {
    let lab = meshtrace::lab::world::Lab::start(None).await.unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let kubeconfig = lab.kubeconfig_yaml.replace(&lab.remote.url, &closed);
    assert_ne!(kubeconfig, lab.kubeconfig_yaml);
    let started = std::time::Instant::now();
    let (code, lines) = run_against_lab(kubeconfig).await;
    lab.shutdown();
    assert_eq!(code, Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.starts_with("meshtrace: --remote context \"lab-remote\"")
            && line.contains(&closed)
            && line.contains("cannot reach the API server")
            && line.contains("refused"),
        "{line}"
    );
    // Not the steps' RBAC advice: no step ran.
    assert!(!line.contains("needs list pods"), "{line}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_exit_2_naming_the_401() {
    let lab = meshtrace::lab::world::Lab::start(None).await.unwrap();
    // The remote context's token, swapped for one the lab never issued.
    let marker = "- name: lab-remote-admin\n  user:\n    token: ";
    let at = lab.kubeconfig_yaml.find(marker).unwrap() + marker.len();
    let end = at + lab.kubeconfig_yaml[at..].find('\n').unwrap();
    let wrong = "not-the-lab-token-0123456789abcdef";
    let kubeconfig = format!(
        "{}{wrong}{}",
        &lab.kubeconfig_yaml[..at],
        &lab.kubeconfig_yaml[end..]
    );
    let (code, lines) = run_against_lab(kubeconfig).await;
    let server = lab.remote.url.clone();
    lab.shutdown();
    assert_eq!(code, Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.starts_with("meshtrace: --remote context \"lab-remote\"")
            && line.contains(server.trim_end_matches('/'))
            && line.contains("refuses the credentials")
            && line.contains("401"),
        "{line}"
    );
    assert!(!line.contains(wrong), "the token is never printed: {line}");
}
