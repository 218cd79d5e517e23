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
fn a_bad_theme_file_exits_2_quoting_the_slot_or_colour_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (json, want) in [
        (r#"{"pas": {"fg": "green"}}"#, "unknown slot \"pas\""),
        (
            r#"{"fail": {"fg": "reddish"}}"#,
            "fg \"reddish\" is not a colour",
        ),
    ] {
        let f = dir.path().join("room.json");
        std::fs::write(&f, json).unwrap();
        let out = meshtrace()
            .args(["lab", "-o", "text", "--theme-file"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{json}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(err.contains(&*f.to_string_lossy()), "names the file: {err}");
        assert!(out.stdout.is_empty(), "nothing ran: {:?}", out.stdout);
    }
    // A good one is accepted (the text output ignores it).
    let f = dir.path().join("ok.json");
    std::fs::write(&f, r##"{"fail": {"fg": "#ff5f5f", "bold": true}}"##).unwrap();
    let out = meshtrace()
        .args(["lab", "-o", "text", "--theme-file"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

#[test]
fn version_names_the_commit() {
    let out = meshtrace().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let inner = text
        .trim()
        .strip_prefix(concat!("meshtrace ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("meshtrace VERSION (COMMIT): {text}"));
    let commit = inner.trim_end_matches("-dirty");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "a short commit or unknown: {inner}"
    );
}

#[test]
fn completions_cover_every_subcommand_and_flag() {
    for (shell, marker) in [
        ("bash", "_meshtrace()"),
        ("zsh", "#compdef meshtrace"),
        ("fish", "complete -c meshtrace"),
    ] {
        let out = meshtrace().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {marker}");
        for word in [
            "lab",
            "replay",
            "explain",
            "--primary",
            "--remote",
            "--fault",
            "--output",
        ] {
            let word = if shell == "fish" {
                word.trim_start_matches("--")
            } else {
                word
            };
            assert!(text.contains(word), "{shell} completes {word}");
        }
    }
    let out = meshtrace().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is the operator's mistake"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

#[test]
fn the_manual_page_is_roff_with_every_subcommand() {
    let out = meshtrace().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(".TH meshtrace 1"),
        "{}",
        &text[..200.min(text.len())]
    );
    for word in [
        "lab",
        "replay",
        "explain",
        "completions",
        "\\-\\-primary",
        "Exit codes",
    ] {
        assert!(text.contains(word), "the manual page mentions {word}");
    }
}

/// `--skip STEP`: where the operator's account lacks a step's rights. The
/// step is reported skipped with its own code and says why; what needs it
/// is blocked; a step that is not one is refused with exit 2.
#[test]
fn skip_runs_without_the_named_steps_and_says_so() {
    let out = meshtrace()
        .args([
            "lab",
            "--fault",
            "webhook-missing",
            "--skip",
            "istiod-exposure,injection-webhook",
            "--skip",
            "xds",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The broken webhook is not looked at: the rest passes.
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    for id in ["istiod-exposure", "injection-webhook", "xds"] {
        let s = v["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .unwrap_or_else(|| panic!("{id} in {stdout}"));
        assert_eq!(s["status"], "skipped", "{s}");
        assert_eq!(s["code"], format!("{id}/skipped-by-flag"), "{s}");
        assert!(
            s["diagnosis"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("--skip {id}"))),
            "{s}"
        );
    }
    let passed = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "pass")
        .count();
    assert_eq!(passed, meshtrace::model::STEPS.len() - 3, "{stdout}");

    // A needed step skipped blocks what needs it.
    let out = meshtrace()
        .args(["lab", "--skip", "csr", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for id in ["issued-chain", "xds"] {
        let s = v["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .expect("step");
        assert_eq!(s["code"], format!("{id}/blocked"), "{s}");
        assert_eq!(s["blocked_by"], serde_json::json!(["csr"]), "{s}");
    }

    let out = meshtrace()
        .args(["lab", "--skip", "injection-webhok"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"injection-webhok\" is not a step; did you mean injection-webhook?"),
        "{err}"
    );
}

/// Writes `kubeconfig` and runs the binary with it and `args` while the lab
/// serves (blocking, off the runtime's threads).
async fn run_with_kubeconfig(
    kubeconfig: String,
    args: Vec<String>,
) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, kubeconfig).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        meshtrace()
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (dir, out)
}

/// No `--primary`: the kubeconfig's current context, said on stderr; not
/// when that context is the `--remote` one, or there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_defaults_to_the_current_context_where_unambiguous() {
    let lab = meshtrace::lab::world::Lab::start(None).await.unwrap();
    let with_current = |c: &str| {
        let base: String = lab
            .kubeconfig_yaml
            .lines()
            .filter(|l| !l.starts_with("current-context:"))
            .map(|l| format!("{l}\n"))
            .collect();
        if c.is_empty() {
            base
        } else {
            format!("{base}current-context: {c}\n")
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (_d, out) = run_with_kubeconfig(
        with_current("lab-primary"),
        args(&["--remote", "lab-remote", "-o", "json"]),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("no --primary: the current context \"lab-primary\" is the primary"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["target"]["primary"], "lab-primary");

    let (_d, out) = run_with_kubeconfig(
        with_current("lab-remote"),
        args(&["--remote", "lab-remote"]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the current context \"lab-remote\" is the --remote one"),
        "{err}"
    );

    let (_d, out) = run_with_kubeconfig(with_current(""), args(&["--remote", "lab-remote"])).await;
    lab.shutdown();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("need --primary CTX") && err.contains("no current-context"),
        "{err}"
    );
}

/// `--output-dir DIR`: JSON, Markdown and the recording written beside the
/// chosen output; the recording replays to the same verdict; bad uses are
/// refused with exit 2.
#[test]
fn output_dir_bundles_json_markdown_and_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ticket-1234");
    let out = meshtrace()
        .args([
            "lab",
            "--fault",
            "no-tokenreview-rbac",
            "-o",
            "text",
            "--output-dir",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrote report.json, report.md, events.jsonl in"),
        "{err}"
    );
    // stdout is still the text report.
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL at remote-rbac"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["first_failure"], "remote-rbac");
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("remote-rbac") && md.contains("```"), "{md}");
    let events = std::fs::read_to_string(out_dir.join("events.jsonl")).unwrap();
    assert!(
        events.lines().count() > meshtrace::model::STEPS.len(),
        "{events}"
    );
    assert!(events.lines().next().unwrap().contains("\"trace-started\""));
    let replay = meshtrace()
        .args(["replay", "-o", "json"])
        .arg(out_dir.join("events.jsonl"))
        .output()
        .unwrap();
    let replayed: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(replayed["first_failure"], "remote-rbac");
    assert_eq!(replayed["verdict"], json["verdict"]);

    // A file where the directory should be; --watch; fleet mode.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = meshtrace()
        .args(["lab", "-o", "json", "--output-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists and is not a directory"));
    let out = meshtrace()
        .args(["lab", "-o", "text", "--watch", "5s", "--output-dir"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch runs until stopped"));
    let out = meshtrace()
        .args(["lab", "--remotes", "2", "-o", "json", "--output-dir"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bundles one remote's trace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The krew manifest for a release names each tarball's URL and its real
/// sha256 (no placeholder), and refuses what krew would.
#[test]
fn krew_manifest_names_each_tarball_with_its_sha256() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    std::fs::copy(
        assert_cmd::cargo::cargo_bin("meshtrace"),
        stage.join("meshtrace"),
    )
    .unwrap();
    std::fs::write(stage.join("README.md"), "meshtrace\n").unwrap();
    let tarball = dir.path().join("meshtrace-v0.1.0-linux-amd64.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&stage)
        .arg("-czf")
        .arg(&tarball)
        .args(["meshtrace", "README.md"])
        .status()
        .unwrap();
    assert!(tar.success());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/krew-manifest");
    let out = std::process::Command::new(&script)
        .args(["v0.1.0", "https://example.test/releases/v0.1.0/"])
        .arg(&tarball)
        .output()
        .unwrap();
    let manifest = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sum = hex::encode(sha2::Sha256::digest(std::fs::read(&tarball).unwrap()));
    assert!(
        manifest.contains(&format!("    sha256: {sum}\n")),
        "{manifest}"
    );
    assert!(
        manifest.contains(
            "    uri: https://example.test/releases/v0.1.0/meshtrace-v0.1.0-linux-amd64.tar.gz\n"
        ),
        "{manifest}"
    );
    assert!(manifest.contains("  version: v0.1.0\n") && manifest.contains("    bin: meshtrace\n"));
    for (args, said) in [
        (vec!["0.1", "https://x.test"], "is not a semver tag"),
        (vec!["v0.1.0", "http://x.test"], "must be an https URL"),
    ] {
        let out = std::process::Command::new(&script)
            .args(args)
            .arg(&tarball)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(said));
    }
}
