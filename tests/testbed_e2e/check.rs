//! One fault, end to end: inject it (through a [`Session`] that reverts it),
//! ask the real istiod as the gateway would, trace with meshtrace, and check
//! meshtrace's report (a) against the expected step, (b) its status and
//! diagnosis, (c) against the lab's report for the same fault and (d)
//! against istiod's answer.

use crate::bed::{Session, lock, runtime, tail, testbed_default};
use crate::probe::{
    self, Answer, GatewayView, ask_istiod, ask_stays_issued, ask_until, lab_trace, summary, trace,
    wait_healthy,
};
use meshtrace::engine::TraceOptions;
use meshtrace::lab::faults::{self, Fault};
use meshtrace::model::{Status, StepId, TraceReport};
use std::time::{Duration, Instant};

/// What meshtrace must report for a fault.
#[derive(Debug, Clone)]
pub struct Expect {
    pub name: &'static str,
    /// The lab's fault of the same name: its step, status and finding code
    /// are the expectation, and the lab's own report is compared.
    pub lab: Option<&'static Fault>,
    pub step: StepId,
    pub status: Status,
    /// What identifies the cause: the lab fault's finding code, or for a
    /// case only the test bed has, a word of the diagnosis.
    pub cause: Cause,
}

#[derive(Debug, Clone, Copy)]
pub enum Cause {
    Code(&'static str),
    Keyword(&'static str),
}

impl Cause {
    /// None when `s` names this cause, else what is wrong.
    fn mismatch(&self, s: &meshtrace::model::StepResult) -> Option<String> {
        match *self {
            Cause::Code(want) => {
                let got = s.finding.as_ref().map(|f| f.code.as_str());
                (got != Some(want))
                    .then(|| format!("expected code {want}, got {}", got.unwrap_or("no finding")))
            }
            Cause::Keyword(k) => {
                let diag = s.diagnosis.clone().unwrap_or_default();
                (!diag.to_lowercase().contains(&k.to_lowercase()))
                    .then(|| format!("the diagnosis lacks {k:?}: {diag}"))
            }
        }
    }
}

/// The lab's fault `name`: expected step, status and code are the lab's.
pub fn lab(name: &'static str) -> Expect {
    let f = faults::find(name).unwrap_or_else(|| panic!("the lab has no fault {name:?}"));
    Expect {
        name,
        lab: Some(f),
        step: f.step,
        status: f.status,
        cause: Cause::Code(f.code),
    }
}

/// A fault only the test bed expresses (or expresses differently).
pub fn testbed_only(
    name: &'static str,
    step: StepId,
    status: Status,
    keyword: &'static str,
) -> Expect {
    assert!(
        faults::find(name).is_none(),
        "{name} is a lab fault: use lab()"
    );
    Expect {
        name,
        lab: None,
        step,
        status,
        cause: Cause::Keyword(keyword),
    }
}

/// What istiod must answer a CSR.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    Unauthenticated,
    Issued,
    /// Issued, and the leaf carries this URI SAN.
    IssuedFor(String),
    /// The CSR never reaches istiod's CA (TCP or TLS fails first).
    NotReached,
}

impl Want {
    fn matches(&self, a: &Answer) -> bool {
        match (self, a) {
            (Want::Unauthenticated, Answer::Unauthenticated(_)) => true,
            (Want::Issued, Answer::Issued { .. }) => true,
            (Want::IssuedFor(san), Answer::Issued { uri_sans, .. }) => uri_sans.contains(san),
            (Want::NotReached, Answer::NotReached(_)) => true,
            _ => false,
        }
    }
}

/// Steps of the authentication path: when meshtrace says one of them fails,
/// istiod must refuse the gateway (gRPC Unauthenticated).
pub fn auth_path(step: StepId) -> bool {
    use StepId::*;
    matches!(
        step,
        RemoteSecret
            | RemoteKubeconfig
            | RemoteApiTls
            | RemoteIdentity
            | RemoteRbac
            | GatewayPod
            | GatewayToken
            | TokenReview
    )
}

/// How a test drives the check after injecting its fault.
pub struct Plan {
    /// What the gateway would send (its token, cluster ID, root, address).
    pub gateway: GatewayView,
    pub want: Want,
    /// Why `want` departs from the auth-path rule (`auth_path`), if it does.
    pub rule_exception: Option<&'static str>,
    /// More CSRs to check: (why, what is sent, what istiod must answer).
    pub extra: Vec<(&'static str, GatewayView, Want)>,
    pub trace_opts: TraceOptions,
    /// A string istiod must log after the injection (its own reason).
    pub istiod_log: Option<String>,
    /// Steps whose status may differ between the lab and the test bed, and why.
    pub lab_differs: Vec<(StepId, &'static str)>,
    /// Words meshtrace's diagnosis of the first failing step must hold on
    /// the test bed, beyond the lab fault's code.
    pub says: Vec<&'static str>,
}

impl Plan {
    pub fn new(tb: &crate::bed::Testbed, gateway: GatewayView, want: Want) -> Plan {
        Plan {
            gateway,
            want,
            rule_exception: None,
            extra: Vec::new(),
            trace_opts: probe::options(tb.istiod_addr_flag()),
            istiod_log: None,
            lab_differs: Vec::new(),
            says: Vec::new(),
        }
    }
    pub fn says(mut self, words: &'static str) -> Plan {
        self.says.push(words);
        self
    }
    pub fn log(mut self, needle: impl Into<String>) -> Plan {
        self.istiod_log = Some(needle.into());
        self
    }
    pub fn also(mut self, why: &'static str, g: GatewayView, want: Want) -> Plan {
        self.extra.push((why, g, want));
        self
    }
    pub fn exception(mut self, why: &'static str) -> Plan {
        self.rule_exception = Some(why);
        self
    }
}

async fn ask_for(g: &GatewayView, want: &Want) -> Answer {
    match want {
        // istiod's secret controller is an informer: give it a moment.
        Want::Unauthenticated => {
            ask_until(g, Duration::from_secs(10), |a| {
                matches!(a, Answer::Unauthenticated(_))
            })
            .await
        }
        Want::IssuedFor(_) => ask_until(g, Duration::from_secs(10), |a| want.matches(a)).await,
        // Must issue, and keep issuing for a second (no late reaction).
        Want::Issued => ask_stays_issued(g, Duration::from_secs(1)).await,
        Want::NotReached => ask_istiod(g).await,
    }
}

/// Runs one fault test on the default profile; see the module docs.
pub fn run_case(expect: Expect, inject: impl FnOnce(&mut Session) -> Result<Plan, String>) {
    let Some(tb) = testbed_default(expect.name) else {
        return;
    };
    run_case_on(tb, expect, inject);
}

/// Runs one fault test on whatever profile the test bed runs: the fault
/// must be flagged at the same step, with the same code, as on the default
/// profile, the lab of that profile must agree, and the real istiod must
/// answer as meshtrace says (tests/testbed_e2e/portable.rs).
pub fn run_portable_case(
    expect: Expect,
    inject: impl FnOnce(&mut Session) -> Result<Plan, String>,
) {
    let Some(tb) = crate::bed::testbed() else {
        return;
    };
    run_case_on(tb, expect, inject);
}

fn run_case_on(
    tb: &'static crate::bed::Testbed,
    expect: Expect,
    inject: impl FnOnce(&mut Session) -> Result<Plan, String>,
) {
    let _guard = lock();
    let t0 = Instant::now();
    let rt = runtime();
    if let Err(e) = rt.block_on(wait_healthy(tb, Duration::from_secs(30))) {
        panic!(
            "[{}] the test bed is not healthy before the test, nothing injected:\n{e}\n(if istiod's log ends its remote-secret events with `Deleting cluster_id=...` and \
             nothing after it, its secret controller is hung, see tests/testbed/README.md: restart it with tests/testbed/restart-istiod, or everything with TB_RESTART=1 tests/testbed/up)",
            expect.name
        );
    }
    let lab_report = expect.lab.map(|f| rt.block_on(lab_trace(tb, f)));

    let mut s = Session::new(tb, &rt, expect.name);
    let plan = match inject(&mut s) {
        Ok(p) => p,
        Err(e) => panic!("[{}] injecting the fault failed: {e}", expect.name),
    };
    let answer = rt.block_on(ask_for(&plan.gateway, &plan.want));
    let extra: Vec<Answer> = plan
        .extra
        .iter()
        .map(|(_, g, w)| rt.block_on(ask_for(g, w)))
        .collect();
    let report = rt.block_on(trace(tb, plan.trace_opts.clone()));
    let log = s.istiod_log();
    let ctx = format!(
        "\nmeshtrace on the test bed: {}\nistiod answered the gateway's CSR: {}\nistiod logged since the injection (tail):\n{}",
        summary(&report),
        answer.short(),
        tail(&log, 15)
    );
    println!(
        "[{}] test bed: first failure {:?} ({:?}); lab: {}; istiod: {}{}",
        expect.name,
        report.first_failure.map(|s| s.as_str()),
        report
            .first_failure
            .and_then(|f| report.step(f))
            .map(|s| s.status),
        lab_report
            .as_ref()
            .map(|r| format!("{:?}", r.first_failure.map(|s| s.as_str())))
            .unwrap_or_else(|| "-".into()),
        answer.short(),
        extra
            .iter()
            .zip(&plan.extra)
            .map(|(a, (why, _, _))| format!("; {why}: {}", a.short()))
            .collect::<String>(),
    );

    if let Some(d) = report
        .first_failure
        .and_then(|f| report.step(f))
        .and_then(|s| s.diagnosis.clone())
    {
        println!("[{}] meshtrace: {d}", expect.name);
    }
    if let Some(why) = istiod_reason(&log) {
        println!("[{}] istiod logged: {why}", expect.name);
    }
    assert_report(&expect, &report, &ctx);
    if let Some(step) = report.first_failure.and_then(|f| report.step(f)) {
        let diag = step.diagnosis.as_deref().unwrap_or("");
        for words in &plan.says {
            assert!(
                diag.contains(words),
                "[{}] the diagnosis lacks {words:?}: {diag}{ctx}",
                expect.name
            );
        }
    }
    if let Some(lr) = &lab_report {
        assert_lab_agrees(&expect, &report, lr, &plan.lab_differs);
    }
    assert_istiod_agrees(&expect, &report, &plan, &answer, &ctx);
    for (a, (why, _, want)) in extra.iter().zip(&plan.extra) {
        assert!(
            want.matches(a),
            "[{}] {why}: istiod should answer {want:?}, answered {}{ctx}",
            expect.name,
            a.short()
        );
    }
    if let Some(needle) = &plan.istiod_log {
        if let Err(e) = s.wait_istiod_log(needle, Duration::from_secs(3)) {
            panic!("[{}] {e}", expect.name);
        }
    }
    // meshtrace's own fix, run as the user would paste it: the real API
    // servers and the real istiod must agree that it fixes the fault. The
    // session's revert then runs too, as a safety net for what the fix does
    // not touch.
    apply_printed_fix(tb, &rt, &expect, &report, &plan);
    drop(s); // revert, and wait until the test bed is healthy again
    println!(
        "[{}] ok in {:.1} s (revert included)",
        expect.name,
        t0.elapsed().as_secs_f64()
    );
}

/// Why a printed command cannot run on the test bed, if it cannot. The bed
/// runs kube-apiservers, kube-controller-managers (so istioctl's token
/// Secret is filled) and istiod as processes, but no kubelet: istiod's and
/// the gateway's Deployments describe processes, and a rollout of them
/// never gets a running pod.
pub fn not_runnable_on_testbed(command: &str) -> Option<&'static str> {
    if command.contains("istioctl") && std::env::var_os("TB_ISTIOCTL").is_none() {
        return Some("no istioctl: the test bed's env names none (TB_ISTIOCTL)");
    }
    if command.contains("deployment/") || command.contains(" deployment ") {
        return Some(
            "the test bed runs no kubelet: istiod and the gateway are processes that a Deployment describes, so a rollout never completes (the lab proves Deployment fixes)",
        );
    }
    None
}

/// Runs the first failing step's `commands` with the test bed's kubectl, as a
/// user would paste them, then requires a healthy trace within 30 s (istiod
/// reloads a changed remote secret within seconds). Faults without commands,
/// or with commands the bed cannot run (see [`not_runnable_on_testbed`]),
/// say so and are reverted by the session alone.
fn apply_printed_fix(
    tb: &crate::bed::Testbed,
    rt: &tokio::runtime::Runtime,
    expect: &Expect,
    report: &TraceReport,
    plan: &Plan,
) {
    let name = expect.name;
    let Some(step) = report.first_failure.and_then(|f| report.step(f)) else {
        return;
    };
    let Some(f) = &step.finding else {
        panic!("[{name}] {} did not pass without a finding", step.id);
    };
    if f.commands.is_empty() {
        println!(
            "[{name}] {}: no commands printed ({}); the session reverts it",
            f.code,
            f.note.as_deref().unwrap_or("no note")
        );
        return;
    }
    // The bed's gateway is a bare Pod: where a fix must change how the
    // gateway is defined, meshtrace prints no command for it, only the note.
    if f.note
        .as_deref()
        .is_some_and(|n| n.contains("(no Deployment found)"))
    {
        println!(
            "[{name}] {}: the printed commands are only part of the fix here; the note names the rest (the bed's gateway is a bare Pod): {}",
            f.code,
            f.commands.join(" && ")
        );
        return;
    }
    if let Some(why) = f.commands.iter().find_map(|c| not_runnable_on_testbed(c)) {
        println!(
            "[{name}] {}: the printed fix is not run here: {why}",
            f.code
        );
        return;
    }
    let kubectl_dir = tb
        .kubectl
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // The bed's own kubectl and istioctl, as a user's shell would find them.
    let istioctl_dir = std::env::var_os("TB_ISTIOCTL")
        .map(std::path::PathBuf::from)
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or_default();
    let path = format!(
        "{kubectl_dir}:{istioctl_dir}:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    for c in &f.commands {
        println!("[{name}] running meshtrace's fix: {c}");
        let out = std::process::Command::new("sh")
            .args(["-c", c])
            .env("KUBECONFIG", &tb.kubeconfig)
            .env("PATH", &path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("[{name}] cannot run sh: {e}"));
        assert!(
            out.status.success(),
            "[{name}] meshtrace's printed fix failed on the test bed ({}):\n{c}\n{}",
            out.status,
            crate::bed::redact(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    let t0 = Instant::now();
    loop {
        let r = rt.block_on(trace(tb, plan.trace_opts.clone()));
        let gone = r
            .steps
            .iter()
            .all(|s| s.finding.as_ref().is_none_or(|x| x.code != f.code));
        if gone && r.verdict == meshtrace::model::Verdict::Pass {
            println!(
                "[{name}] meshtrace's fix turned the trace green in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            return;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            panic!(
                "[{name}] meshtrace's printed fix ({}) did not turn the trace green within 30 s: {}",
                f.commands.join(" && "),
                summary(&r)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// istiod's own words for the last problem it logged: why it refused a
/// client, or why it could not build a remote cluster.
fn istiod_reason(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        if let Some(i) = l.find("KubeJWTAuthenticator: ") {
            return Some(l[i + "KubeJWTAuthenticator: ".len()..].to_string());
        }
        l.find("create remote cluster failed: ")
            .map(|i| l[i..].split('\t').next().unwrap_or("").to_string())
    })
}

/// (a), (b): the first failing step, its status and diagnosis; every other
/// step passes or is skipped because of it; no secret in the report.
pub fn assert_report(e: &Expect, r: &TraceReport, ctx: &str) {
    let name = e.name;
    let first = r
        .first_failure
        .unwrap_or_else(|| panic!("[{name}] meshtrace found nothing wrong{ctx}"));
    assert_eq!(
        first, e.step,
        "[{name}] first failing step is {first}, expected {}{ctx}",
        e.step
    );
    let step = r.step(first).expect("step in report");
    assert_eq!(
        step.status, e.status,
        "[{name}] {first} is {:?}, expected {:?}{ctx}",
        step.status, e.status
    );
    if let Some(why) = e.cause.mismatch(step) {
        panic!("[{name}] {why}{ctx}");
    }
    assert!(
        step.hint.as_deref().is_some_and(|h| !h.is_empty()),
        "[{name}] no hint{ctx}"
    );
    for s in &r.steps {
        if s.id == first {
            continue;
        }
        // A step the lab's fault declares failing too (`Fault::and_fails`):
        // the real path breaks there as well.
        let also = e.lab.is_some_and(|f| f.also_fails.contains(&s.id));
        match s.status {
            Status::Pass => {}
            Status::Fail if also => {}
            Status::Skipped if also => {}
            Status::Skipped => assert!(
                s.blocked_by.contains(&first)
                    || s.blocked_by
                        .iter()
                        .any(|b| e.lab.is_some_and(|f| f.also_fails.contains(b))),
                "[{name}] {} skipped, blocked by {:?}, not by {first}{ctx}",
                s.id,
                s.blocked_by
            ),
            other => panic!("[{name}] {} is {other:?} too: {:?}{ctx}", s.id, s.diagnosis),
        }
    }
    let json = serde_json::to_string(r).unwrap();
    assert!(
        !json.contains("PRIVATE KEY"),
        "[{name}] a private key in the report"
    );
    assert_eq!(
        crate::bed::redact(&json),
        json,
        "[{name}] something that looks like a JWT in the report"
    );
}

/// (c) lab fidelity: the lab's report for the same fault names the same
/// first step with the same status, both name the cause (code), and
/// every step has the same status (unless the plan says why not).
pub fn assert_lab_agrees(
    e: &Expect,
    tb: &TraceReport,
    lab: &TraceReport,
    differs: &[(StepId, &'static str)],
) {
    let name = e.name;
    let both = format!("\nlab:      {}\ntest bed: {}", summary(lab), summary(tb));
    assert_eq!(
        lab.first_failure,
        Some(e.step),
        "[{name}] the lab itself does not report its fault at {}{both}",
        e.step
    );
    assert_eq!(
        tb.first_failure, lab.first_failure,
        "[{name}] LAB AND TEST BED DISAGREE on the first failing step{both}"
    );
    let (ls, ts) = (lab.step(e.step).unwrap(), tb.step(e.step).unwrap());
    assert_eq!(
        ts.status, ls.status,
        "[{name}] lab and test bed disagree on the status of {}{both}",
        e.step
    );
    for (who, s) in [("lab", ls), ("test bed", ts)] {
        if let Some(why) = e.cause.mismatch(s) {
            panic!("[{name}] the {who}: {why}{both}");
        }
    }
    for s in &tb.steps {
        let l = lab.step(s.id).map(|l| l.status);
        if l != Some(s.status) && !differs.iter().any(|(id, _)| *id == s.id) {
            panic!(
                "[{name}] lab and test bed disagree on step {}: lab {:?}, test bed {:?}{both}",
                s.id, l, s.status
            );
        }
    }
}

/// (d) agreement with the real istiod: an authentication-path failure means
/// istiod refuses the gateway; anything else means istiod still issues.
pub fn assert_istiod_agrees(e: &Expect, r: &TraceReport, plan: &Plan, answer: &Answer, ctx: &str) {
    let name = e.name;
    let first = r.first_failure.expect("checked before");
    let status = r.step(first).map(|s| s.status).unwrap();
    // A failing csr step is istiod's own refusal when it says Unauthenticated.
    let csr_refused = first == StepId::Csr
        && r.step(first).is_some_and(|s| {
            s.evidence
                .get("grpc_status")
                .and_then(|g| g.get("code"))
                .and_then(|c| c.as_str())
                == Some("Unauthenticated")
        });
    let by_rule = if status == Status::Fail && (auth_path(first) || csr_refused) {
        Want::Unauthenticated
    } else {
        Want::Issued
    };
    match plan.rule_exception {
        None => assert!(
            plan.want == by_rule
                || (by_rule == Want::Issued && matches!(plan.want, Want::IssuedFor(_))),
            "[{name}] the test expects istiod to answer {:?}, but meshtrace's first failure {first} ({status:?}) means {by_rule:?}",
            plan.want
        ),
        Some(why) => println!(
            "[{name}] istiod's answer departs from the auth-path rule ({by_rule:?}): {why}"
        ),
    }
    assert!(
        plan.want.matches(answer),
        "[{name}] ISTIOD DISAGREES: meshtrace reports {first} {status:?}, so istiod should answer {:?}; it answered {}{ctx}",
        plan.want,
        answer.short()
    );
}
