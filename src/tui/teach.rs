//! Teaching mode's page for one hop: who sends what to whom, why it
//! matters, what breaks it, the line istiod or the agent logs then (from
//! [`crate::sequence::Teach`]), and the hop's real object as the trace
//! recorded it in its evidence: YAML, a token's decoded claims (never its
//! signature), a certificate chain as a tree. Pure: lines for a width.

use super::app::{App, Command};
use super::text;
use super::theme::Theme;
use crate::model::{Status, StepId, TraceState};
use crate::sequence::{self, Kind, Message};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use serde_json::Value;

/// One line of a rendered object: its indent and text, and whether it is a
/// note of meshtrace's rather than the object's own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjLine {
    pub indent: usize,
    pub text: String,
    pub note: bool,
}

fn obj(indent: usize, text: impl Into<String>) -> ObjLine {
    ObjLine {
        indent,
        text: text.into(),
        note: false,
    }
}

fn note(indent: usize, text: impl Into<String>) -> ObjLine {
    ObjLine {
        indent,
        text: text.into(),
        note: true,
    }
}

/// Who sends what to whom, in one sentence.
pub fn who(msg: &Message) -> String {
    match msg.kind {
        Kind::Observation => format!("meshtrace reads, in the {}: {}", msg.from.label(), msg.text),
        _ if msg.from == msg.to => format!("{}, inside: {}", msg.from.label(), msg.text),
        Kind::Reply => format!(
            "{} answers {}: {}",
            msg.from.label(),
            msg.to.label(),
            msg.text
        ),
        Kind::Call => format!("{} → {}: {}", msg.from.label(), msg.to.label(), msg.text),
    }
}

/// The hop's object, from the evidence of the steps that recorded it.
pub fn object(msg: &Message, st: &TraceState) -> Vec<ObjLine> {
    let mut out = vec![];
    for (step, key) in msg.teach.object {
        let Some(id) = StepId::parse(step) else {
            continue;
        };
        let Some(r) = st.result(id) else {
            out.push(note(0, format!("{key}: {id} has not run yet")));
            continue;
        };
        match r.evidence.get(*key) {
            Some(v) => value(key, v, 0, &mut out),
            None if !r.blocked_by.is_empty() => out.push(note(
                0,
                format!(
                    "{key}: not read, {id} was blocked by {}",
                    r.blocked_by
                        .iter()
                        .map(|b| b.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            None => out.push(note(
                0,
                format!("{key}: not in {id}'s evidence ({})", r.status.as_str()),
            )),
        }
    }
    out
}

fn is_token(v: &Value) -> bool {
    v.get("claims").is_some_and(Value::is_object) && v.get("fingerprint").is_some()
}

fn is_cert(v: &Value) -> bool {
    v.get("issuer").is_some() && v.get("subject").is_some()
}

fn value(key: &str, v: &Value, indent: usize, out: &mut Vec<ObjLine>) {
    if is_token(v) {
        token(key, v, indent, out);
    } else if let Some(tok) = v.get("token").filter(|t| is_token(t)) {
        // A credential: its type, then the token as claims.
        out.push(obj(indent, format!("{key}:")));
        if let Some(t) = v.get("type").and_then(Value::as_str) {
            out.push(obj(indent + 2, format!("type: {t}")));
        }
        token("token", tok, indent + 2, out);
    } else if is_cert(v) {
        out.push(obj(indent, format!("{key}:")));
        chain(std::slice::from_ref(v), indent + 2, out);
    } else if let Some(certs) = v
        .as_array()
        .filter(|a| !a.is_empty() && a.iter().all(is_cert))
    {
        out.push(obj(
            indent,
            format!("{key}: {} certificate(s), root first", certs.len()),
        ));
        chain(certs, indent + 2, out);
    } else if let Some(certs) = v
        .get("certificates")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty() && a.iter().all(is_cert))
    {
        out.push(obj(indent, format!("{key}:")));
        if let Some(s) = v.get("source").and_then(Value::as_str) {
            out.push(obj(indent + 2, format!("source: {s}")));
        }
        chain(certs, indent + 2, out);
    } else {
        yaml(key, v, indent, out);
    }
}

/// `key: v` as YAML, one object line per YAML line.
fn yaml(key: &str, v: &Value, indent: usize, out: &mut Vec<ObjLine>) {
    let mut m = serde_json::Map::new();
    m.insert(key.to_string(), v.clone());
    match serde_saphyr::to_string(&Value::Object(m)) {
        Ok(y) => {
            for l in y.lines().filter(|l| *l != "---") {
                let trimmed = l.trim_start();
                out.push(obj(indent + (l.len() - trimmed.len()), trimmed));
            }
        }
        Err(e) => out.push(note(indent, format!("{key}: cannot show as YAML: {e}"))),
    }
}

/// A token as its header and decoded claims: the trace keeps no more of it
/// (a fingerprint, never the token or its signature).
fn token(key: &str, v: &Value, indent: usize, out: &mut Vec<ObjLine>) {
    out.push(obj(indent, format!("{key}: a JWT, decoded")));
    let i = indent + 2;
    if let Some(f) = v.get("fingerprint").and_then(Value::as_str) {
        out.push(obj(i, format!("fingerprint: {f}")));
    }
    for part in ["header", "claims"] {
        if let Some(p) = v.get(part) {
            yaml(part, p, i, out);
        }
    }
    if let Some(e) = v.get("expiry").and_then(Value::as_str) {
        out.push(obj(i, format!("expiry: {e}")));
    }
    out.push(note(
        i,
        "signature: not shown; meshtrace never prints a token or its signature",
    ));
}

/// Certificates (leaf first, as TLS and the CSR answer send them) as a tree
/// from the root down.
fn chain(certs: &[Value], indent: usize, out: &mut Vec<ObjLine>) {
    let s = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    for (depth, c) in certs.iter().rev().enumerate() {
        let at = indent + depth * 3;
        let subject = s(c, "subject");
        let issuer = s(c, "issuer");
        let branch = if depth == 0 { "● " } else { "└─● " };
        let name = if subject.is_empty() {
            "(no subject: a workload leaf)".to_string()
        } else {
            subject.clone()
        };
        let role = match c.get("is_ca").and_then(Value::as_bool) {
            Some(true) if subject == issuer => "  root, self-signed",
            Some(true) => "  CA",
            _ => "",
        };
        let head_at = at.saturating_sub(if depth == 0 { 0 } else { 3 });
        out.push(obj(head_at, format!("{branch}{name}{role}")));
        let body = at + 2;
        if subject != issuer {
            out.push(obj(body, format!("issuer: {issuer}")));
        }
        for (k, what) in [("uri_sans", "SPIFFE"), ("dns_sans", "DNS")] {
            for san in c.get(k).and_then(Value::as_array).into_iter().flatten() {
                if let Some(san) = san.as_str() {
                    out.push(obj(body, format!("{what}: {san}")));
                }
            }
        }
        let (nb, na) = (s(c, "not_before"), s(c, "not_after"));
        if !nb.is_empty() || !na.is_empty() {
            out.push(obj(
                body,
                format!("valid: {} → {} UTC", minutes(&nb), minutes(&na)),
            ));
        }
        if let Some(sha) = c.get("sha256").and_then(Value::as_str) {
            out.push(obj(body, format!("sha256: {}…", &sha[..sha.len().min(16)])));
        }
    }
}

/// `2026-12-03T06:30:21Z` as `2026-12-03 06:30`: a line that fits, to the
/// minute (a leaf lives an hour; a root ten years).
fn minutes(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(head) if rfc3339.as_bytes().get(10) == Some(&b'T') => head.replace('T', " "),
        _ => rfc3339.to_string(),
    }
}

/// The message of the hop teaching mode shows now.
pub fn current(app: &App) -> Option<&'static Message> {
    sequence::messages().nth(app.teaching?)
}

fn heading(s: &str, th: &Theme) -> Line<'static> {
    Line::styled(s.to_string(), th.label.add_modifier(Modifier::UNDERLINED))
}

fn para(s: &str, w: usize, style: ratatui::style::Style, out: &mut Vec<Line<'static>>) {
    for l in text::wrap_words(s, w.saturating_sub(2)) {
        out.push(Line::from(vec![Span::raw("  "), Span::styled(l, style)]));
    }
}

/// The detail pane's teaching section for the current hop, `w` cells
/// wide: who sends what, why, what breaks it and its log line.
pub fn intro(app: &App, w: usize) -> Vec<Line<'static>> {
    let th = app.theme();
    let Some(msg) = current(app) else {
        return vec![];
    };
    // Who sends what to whom is above (the step's hops) and in the note.
    let mut out = vec![Line::raw("")];
    out.push(heading("Why it matters", th));
    para(msg.teach.why, w, th.text, &mut out);
    out.push(Line::raw(""));
    out.push(heading("What breaks here", th));
    para(msg.teach.breaks, w, th.text, &mut out);
    let log = &msg.teach.log;
    out.push(Line::raw(""));
    let who = match log.who {
        "agent" => "the gateway's agent",
        w => w,
    };
    out.push(heading(&format!("What {who} logs then"), th));
    para(log.line, w, th.code, &mut out);
    para(
        &format!("(istio/istio {})", log.source),
        w,
        th.muted,
        &mut out,
    );
    if app.lab_controls {
        let n = picker::faults_for(msg).len();
        let hint = match n {
            0 => "no lab fault breaks this hop".to_string(),
            1 => "b breaks this hop (1 lab fault)".to_string(),
            n => format!("b breaks this hop ({n} lab faults)"),
        };
        para(&hint, w, th.accent, &mut out);
    }
    out
}

/// The current hop's object, after the step's cause and fix.
pub fn object_lines(st: &TraceState, app: &App, w: usize) -> Vec<Line<'static>> {
    let th = app.theme();
    let Some(msg) = current(app) else {
        return vec![];
    };
    let mut out = vec![Line::raw("")];
    out.push(heading("The object, as the trace read it", th));
    let body = object(msg, st);
    if body.is_empty() {
        para("nothing recorded for this hop", w, th.muted, &mut out);
    }
    for l in body {
        let pad = 2 + l.indent;
        let style = if l.note { th.muted } else { th.code };
        for (i, piece) in text::wrap_words(&l.text, w.saturating_sub(pad).max(8))
            .into_iter()
            .enumerate()
        {
            // A wrapped piece sits two further in: it continues the line.
            let extra = if i == 0 { 0 } else { 2 };
            out.push(Line::from(vec![
                Span::raw(" ".repeat(pad + extra)),
                Span::styled(piece, style),
            ]));
        }
    }
    out
}

use super::picker;

/// The last fix `f` applied: what ran and each changed object's diff.
pub fn applied_lines(app: &App, w: usize) -> Vec<Line<'static>> {
    let th = app.theme();
    let mut out = vec![];
    if let Some(e) = &app.lab_error {
        out.push(Line::raw(""));
        out.push(heading("Not done (b or f)", th));
        para(e, w, th.warn, &mut out);
    }
    let Some((id, a)) = &app.applied else {
        return out;
    };
    out.push(Line::raw(""));
    out.push(heading(&format!("Fix applied (f): {id}"), th));
    for c in &a.commands {
        para(&format!("$ {c}"), w, th.code, &mut out);
    }
    if a.diffs.is_empty() {
        para(
            "the commands changed no object of either lab cluster",
            w,
            th.muted,
            &mut out,
        );
    }
    for d in &a.diffs {
        para(
            &format!("{}: {}", d.cluster, d.object),
            w,
            th.label,
            &mut out,
        );
        for (sign, l) in &d.lines {
            let style = match sign {
                '+' => th.pass,
                '-' => th.fail,
                _ => th.muted,
            };
            let shown = if *sign == '@' {
                "  …".to_string()
            } else {
                format!("{sign} {l}")
            };
            para(&shown, w, style, &mut out);
        }
    }
    if a.more > 0 {
        para(
            &format!("… and {} more objects changed", a.more),
            w,
            th.muted,
            &mut out,
        );
    }
    out
}

/// What a finished lab task did.
#[derive(Debug)]
pub enum LabDone {
    Rebuilt(String),
    Fixed(StepId, crate::lab::session::Applied),
}

/// Start carrying out `b` (a picker choice) or `f` on the lab, off the UI
/// loop: a rebuild or a kubectl run takes a second or more. A fault `b`
/// picks goes on remote `at` (from 1; the open remote of a lab's fleet).
pub fn start_lab_task(
    app: &mut App,
    st: &TraceState,
    lab: std::sync::Arc<crate::lab::session::LabSession>,
    cmd: Command,
    at: usize,
) -> tokio::task::JoinHandle<Result<LabDone, String>> {
    app.lab_busy = true;
    match cmd {
        Command::ApplyFix(id) => {
            let commands = st
                .result(id)
                .and_then(|r| r.finding.as_ref())
                .map(|f| f.commands.clone())
                .unwrap_or_default();
            app.note = Some(format!(
                "applying the fix of {id} to the lab: {} command(s)…",
                commands.len()
            ));
            tokio::spawn(async move {
                lab.apply(&commands)
                    .await
                    .map(|a| LabDone::Fixed(id, a))
                    .map_err(|e| format!("fix of {id} not applied: {e}"))
            })
        }
        Command::Break(choice) => {
            let fault = match choice {
                picker::Choice::Fault(id) => Some(crate::lab::faults::get(id)),
                picker::Choice::Healthy => None,
            };
            app.note = Some(match fault {
                Some(f) => format!("rebuilding the lab with fault {}…", f.name),
                None => "rebuilding the lab healthy…".into(),
            });
            tokio::spawn(async move { lab.rebuild(fault, at).await.map(LabDone::Rebuilt) })
        }
        _ => tokio::spawn(async { Err("not a lab command".to_string()) }),
    }
}

/// Resolves when the lab task ends; never while there is none.
pub async fn lab_task_done(
    task: &mut Option<tokio::task::JoinHandle<Result<LabDone, String>>>,
) -> Result<LabDone, String> {
    match task {
        Some(t) => t
            .await
            .unwrap_or_else(|e| Err(format!("the lab task failed: {e}"))),
        None => std::future::pending().await,
    }
}

/// Fold a finished lab task into the UI; true when the trace must re-run.
pub fn on_lab_done(app: &mut App, done: Result<LabDone, String>) -> bool {
    app.lab_busy = false;
    app.lab_gen += 1;
    match done {
        Ok(LabDone::Rebuilt(msg)) => {
            app.applied = None;
            app.lab_error = None;
            app.note = Some(msg);
            true
        }
        Ok(LabDone::Fixed(id, a)) => {
            app.note = Some(format!(
                "applied the fix of {id}: {} command(s) ran, {} object(s) changed; re-running",
                a.commands.len(),
                a.diffs.len() + a.more
            ));
            app.applied = Some((id, a));
            app.lab_error = None;
            true
        }
        Err(e) => {
            // The whole reason in the detail pane; the footer is too narrow for it.
            app.note = Some("not done: the detail pane says why".into());
            app.lab_error = Some(e);
            false
        }
    }
}

impl App {
    /// `b`, `f` and the open picker. `Some(x)`: the key was theirs and
    /// `on_key` returns `x`; `None`: not theirs.
    pub fn teach_key(&mut self, key: KeyEvent, st: &TraceState) -> Option<Option<Command>> {
        if let Some(p) = self.picker.as_mut() {
            return Some(match picker::on_key(p, key) {
                picker::Outcome::Open => None,
                picker::Outcome::Close => {
                    self.picker = None;
                    None
                }
                picker::Outcome::Choose(c) => {
                    self.picker = None;
                    Some(Command::Break(c))
                }
            });
        }
        if self.help {
            return None;
        }
        match key.code {
            KeyCode::Char('b') => Some(self.open_picker(st)),
            KeyCode::Char('f') => Some(self.fix(st)),
            _ => None,
        }
    }

    fn lab_ready(&mut self, what: &str) -> bool {
        if !self.lab_controls {
            self.note = Some(format!(
                "{what} works in the built-in lab only (meshtrace lab --step)"
            ));
            return false;
        }
        if self.lab_busy {
            self.note = Some("the lab is busy with the last b or f".into());
            return false;
        }
        true
    }

    fn open_picker(&mut self, st: &TraceState) -> Option<Command> {
        if !self.lab_ready("b (break this hop)") {
            return None;
        }
        let id = self.selected_id();
        let hop = self
            .teaching
            .or_else(|| sequence::messages().position(|m| m.verifies(id)))?;
        match picker::Picker::for_hop(hop, st.target.fault.as_deref()) {
            Some(p) => self.picker = Some(p),
            None => {
                self.note = Some(format!(
                    "no lab fault breaks hop {}; try another hop",
                    hop + 1
                ))
            }
        }
        None
    }

    fn fix(&mut self, st: &TraceState) -> Option<Command> {
        if !self.lab_ready("f (apply the fix)") {
            return None;
        }
        if self.running(st) {
            self.note = Some("the trace is still running; f once it has finished".into());
            return None;
        }
        let sel = self.selected_id();
        let problem = |id| {
            st.result(id)
                .is_some_and(|r| matches!(r.status, Status::Fail | Status::Warn))
        };
        let Some(id) = Some(sel)
            .filter(|id| problem(*id))
            .or_else(|| super::app::first_problem(st))
        else {
            self.note = Some("nothing to fix: no step failed or warned".into());
            return None;
        };
        let finding = st.result(id).and_then(|r| r.finding.as_ref());
        match finding {
            Some(f) if !f.commands.is_empty() => Some(Command::ApplyFix(id)),
            // Short: the footer drops a note wider than itself; the Fix says why.
            Some(_) | None => {
                self.note = Some(format!(
                    "{id}: no command fixes this from here; its Fix says why"
                ));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TraceEvent;

    /// A healthy lab trace, run in process: the objects are the engine's.
    fn lab_state(fault: Option<&str>) -> TraceState {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            crate::install_crypto_provider();
            let lab = crate::lab::world::Lab::start(fault.and_then(crate::lab::faults::find))
                .await
                .unwrap();
            let opts = crate::engine::TraceOptions::default();
            let (clusters, target) = crate::cli::lab_target(&lab, &opts).await.unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<TraceEvent>();
            crate::engine::run(clusters, opts, target, tx).await;
            let mut st = TraceState::default();
            while let Ok(e) = rx.try_recv() {
                st.apply(&e);
            }
            lab.shutdown();
            st
        })
    }

    /// Three base64url runs joined by dots: the shape of a whole JWT.
    fn looks_like_jwt(s: &str) -> bool {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .any(|w| {
                let parts: Vec<&str> = w.split('.').collect();
                parts.len() == 3 && parts.iter().all(|p| p.len() >= 10)
            })
    }

    #[test]
    fn every_hop_has_content_and_its_object_is_in_a_real_trace() {
        let st = lab_state(None);
        for (k, msg) in sequence::messages().enumerate() {
            let t = &msg.teach;
            for (what, s) in [
                ("why", t.why),
                ("breaks", t.breaks),
                ("log who", t.log.who),
                ("log line", t.log.line),
                ("log source", t.log.source),
            ] {
                assert!(!s.trim().is_empty(), "hop {}: no {what}", k + 1);
            }
            assert!(
                matches!(t.log.who, "istiod" | "agent"),
                "hop {}: {}",
                k + 1,
                t.log.who
            );
            assert!(t.log.source.ends_with(".go"), "{}", t.log.source);
            assert!(!t.object.is_empty(), "hop {}: no object", k + 1);
            for (step, key) in t.object {
                let id = StepId::parse(step).unwrap_or_else(|| panic!("{step} is no step"));
                let r = st.result(id).expect("every step ran in the healthy lab");
                assert!(
                    r.evidence.contains_key(*key),
                    "hop {}: {step} has no evidence {key:?}",
                    k + 1
                );
            }
            let body = object(msg, &st);
            assert!(
                body.iter()
                    .all(|l| !l.note || l.text.starts_with("signature: not shown")),
                "hop {}: healthy, every part is there: {body:?}",
                k + 1
            );
            for l in &body {
                assert!(!looks_like_jwt(&l.text), "hop {}: {:?}", k + 1, l.text);
                assert!(!l.text.contains("PRIVATE KEY"), "{:?}", l.text);
            }
        }
    }

    #[test]
    fn the_token_shows_claims_and_no_signature_and_the_chain_is_a_tree() {
        let st = lab_state(None);
        let token = sequence::messages()
            .find(|m| m.text.starts_with("service-account token"))
            .unwrap();
        let t: Vec<String> = object(token, &st).into_iter().map(|l| l.text).collect();
        assert!(t.iter().any(|l| l == "aud:"), "{t:?}");
        assert!(
            t.iter()
                .any(|l| l.starts_with("iss: https://remote.invalid"))
        );
        assert!(t.iter().any(|l| l.starts_with("signature: not shown")));
        let chain = sequence::messages()
            .find(|m| m.text.starts_with("cert_chain"))
            .unwrap();
        let c = object(chain, &st);
        let root = c
            .iter()
            .position(|l| l.text.starts_with("● ") && l.text.contains("root, self-signed"))
            .expect("the root heads the tree");
        let leaf = c
            .iter()
            .position(|l| l.text.starts_with("└─● (no subject"))
            .expect("the leaf is a branch");
        assert!(root < leaf);
        let spiffe = c
            .iter()
            .find(|l| {
                l.text
                    .starts_with("SPIFFE: spiffe://cluster.local/ns/istio-system/sa/")
            })
            .expect("the leaf's SPIFFE ID");
        assert!(spiffe.indent > c[root].indent, "deeper than the root");
        assert!(c.iter().any(|l| l.text.starts_with("valid: ")));
    }

    #[test]
    fn a_blocked_step_says_why_its_object_is_missing() {
        let st = lab_state(Some("no-tokenreview-rbac"));
        let chain = sequence::messages()
            .find(|m| m.text.starts_with("cert_chain"))
            .unwrap();
        let c = object(chain, &st);
        assert!(
            c.iter().any(|l| l.note && l.text.contains("blocked by")),
            "{c:?}"
        );
    }

    /// A finished trace of the lab with a token, a chain and one failure,
    /// made by hand so the snapshot is the same on every run.
    fn screen_state() -> TraceState {
        use crate::model::{STEPS, Status, StepResult, Target};
        use serde_json::json;
        let mut st = TraceState::default();
        st.apply(&TraceEvent::TraceStarted {
            target: Target {
                primary: "lab-primary".into(),
                remote: "lab-remote".into(),
                istio_namespace: "istio-system".into(),
                mode: crate::model::Mode::Lab,
                fault: None,
                cluster_id: None,
            },
            meshtrace_version: None,
            at: None,
        });
        let token = json!({
            "fingerprint": "sha256:d0eb02e6bda5bc04",
            "header": {"typ": "JWT", "alg": "ES256", "kid": "998901a6f70c9a74"},
            "claims": {"iss": "https://remote.invalid",
                "sub": "system:serviceaccount:istio-system:istio-eastwestgateway-service-account",
                "aud": ["istio-ca"], "exp": 1796280460, "iat": 1796279860,
                "kubernetes.io": {"namespace": "istio-system",
                    "pod": {"name": "istio-eastwestgateway-6f475dfccc-bd648"}}},
            "expiry": "expires in 10m",
        });
        for s in STEPS {
            let mut evidence = crate::model::Evidence::new();
            if s.id == StepId::GatewayToken {
                evidence.insert("token".into(), token.clone());
                evidence.insert("audience".into(), json!("istio-ca"));
                evidence.insert(
                    "service_account".into(),
                    json!("istio-system/istio-eastwestgateway-service-account"),
                );
            }
            st.apply(&TraceEvent::StepFinished {
                result: StepResult {
                    id: s.id,
                    title: s.id.info().title.into(),
                    status: Status::Pass,
                    duration_ms: 2.0,
                    started_ms: s.id.index() as f64,
                    evidence,
                    finding: None,
                    diagnosis: None,
                    hint: None,
                    link: s.id.doc_link(),
                    blocked_by: vec![],
                },
            });
        }
        st.apply(&TraceEvent::TraceFinished {
            total_ms: 96.0,
            at: None,
        });
        st
    }

    fn teaching_app(hop: usize) -> App {
        let mut a = App::new(super::super::theme::cycle("default", false), true);
        a.lab_controls = true;
        let st = TraceState::default();
        for _ in 0..hop {
            a.on_key(
                KeyEvent::new(KeyCode::Char(' '), crossterm::event::KeyModifiers::NONE),
                &st,
            );
        }
        a
    }

    fn render(st: &TraceState, a: &App, w: u16, h: u16) -> String {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
        t.draw(|f| {
            super::super::view::draw(f, st, a);
        })
        .unwrap();
        t.backend().to_string()
    }

    /// The detail pane scrolled to the hop's object, as PgDn would.
    fn scrolled_to_object(st: &TraceState, a: &mut App, w: u16) {
        let text_w = if w >= super::super::view::SIDE_BY_SIDE {
            (w as u32 * 42 / 100) as u16 - 4
        } else {
            w - 4
        };
        let l = super::super::detail::lines(st, a, text_w);
        a.detail_scroll = l
            .iter()
            .position(|l| l.to_string().contains("The object"))
            .expect("the object is in the detail") as u16;
        a.detail_max_scroll = u16::MAX;
    }

    #[test]
    fn teaching_screen_with_the_token_shown() {
        let st = screen_state();
        let hop = sequence::messages()
            .position(|m| m.text.starts_with("service-account token"))
            .unwrap();
        for (w, h) in [(80, 24), (200, 60)] {
            let mut a = teaching_app(hop);
            assert_eq!(a.selected_id(), StepId::GatewayToken);
            scrolled_to_object(&st, &mut a, w);
            let s = render(&st, &a, w, h);
            assert!(s.contains("The object, as the trace read it"), "{s}");
            assert!(s.contains("fingerprint: sha256:d0eb02e6bda5bc04"), "{s}");
            if h >= 60 {
                assert!(s.contains("iss: https://remote.invalid"), "{s}");
                assert!(s.contains("signature: not shown"), "{s}");
            }
            assert!(s.contains("b break"), "the footer names b: {s}");
            // The current hop stays in the diagram, even where its note
            // does not fit under it (80x24: the detail pane carries it).
            assert!(
                s.contains(&format!("▶{}", hop + 1)),
                "hop {} shown: {s}",
                hop + 1
            );
            // The footer's right side never overwrites a key.
            assert!(s.contains("q quit"), "{s}");
            insta::assert_snapshot!(format!("teaching_token_{w}x{h}"), s);
        }
    }

    /// The picker says, per fault, whether `f` can fix it afterwards.
    #[test]
    fn picker_says_which_faults_f_can_fix() {
        use crate::lab::faults::FaultId;
        let st = screen_state();
        let hop = sequence::messages()
            .position(|m| {
                super::super::picker::faults_for(m)
                    .iter()
                    .any(|f| f.id == FaultId::ChainSingleElement)
            })
            .unwrap();
        use super::super::picker::{Choice, Picker, row};
        let p = Picker::for_hop(hop, None).unwrap();
        let text = |id| row(&Choice::Fault(id)).1;
        assert!(
            text(FaultId::ChainSingleElement)
                .ends_with("[f cannot fix it: no command fixes it (see docs/faults.md)]"),
            "{}",
            text(FaultId::ChainSingleElement)
        );
        assert!(text(FaultId::ChainWrongTrustDomain).ends_with("[f fixes it]"));
        assert!(
            p.choices
                .contains(&Choice::Fault(FaultId::ChainWrongTrustDomain))
        );
        assert_eq!(
            crate::lab::faults::no_fix_from_tui(FaultId::IstiodNoEndpoints),
            Some("its fix needs an address the lab cannot have")
        );
        // Drawn, the marks are there.
        let mut a = teaching_app(hop);
        a.picker = Some(p);
        let s = render(&st, &a, 200, 60);
        assert!(s.contains("[f fixes it]") && s.contains("[f cannot"), "{s}");
    }

    #[test]
    fn picker_screen() {
        let st = screen_state();
        let hop = sequence::messages()
            .position(|m| m.text.starts_with("service-account token"))
            .unwrap();
        for (w, h) in [(80, 24), (200, 60)] {
            let mut a = teaching_app(hop);
            assert_eq!(
                a.on_key(
                    KeyEvent::new(KeyCode::Char('b'), crossterm::event::KeyModifiers::NONE),
                    &st
                ),
                None
            );
            let p = a.picker.as_ref().expect("b opens the picker in the lab");
            assert_eq!(p.hop, hop);
            let s = render(&st, &a, w, h);
            assert!(s.contains(&format!("Break hop {}", hop + 1)), "{s}");
            assert!(s.contains("gateway-audience"), "{s}");
            assert!(s.contains("healthy"), "{s}");
            insta::assert_snapshot!(format!("picker_{w}x{h}"), s);
            // Enter chooses; the event loop rebuilds the lab.
            let enter = KeyEvent::new(KeyCode::Enter, crossterm::event::KeyModifiers::NONE);
            let first = a.picker.as_ref().unwrap().chosen();
            assert_eq!(a.on_key(enter, &st), Some(Command::Break(first)));
            assert!(a.picker.is_none());
        }
    }

    #[test]
    fn b_and_f_outside_the_lab_say_so_and_f_needs_a_problem() {
        let st = screen_state();
        let key = |c| KeyEvent::new(KeyCode::Char(c), crossterm::event::KeyModifiers::NONE);
        let mut a = App::new(super::super::theme::cycle("default", false), true);
        assert_eq!(a.on_key(key('b'), &st), None);
        assert!(a.picker.is_none());
        assert!(a.note.as_deref().unwrap().contains("built-in lab only"));
        assert_eq!(a.on_key(key('f'), &st), None);
        assert!(a.note.as_deref().unwrap().contains("built-in lab only"));
        a.lab_controls = true;
        assert_eq!(a.on_key(key('f'), &st), None);
        assert_eq!(
            a.note.as_deref(),
            Some("nothing to fix: no step failed or warned")
        );
    }

    #[test]
    fn a_refused_fix_says_why_in_the_detail_and_a_done_one_shows_its_diff() {
        let mut a = App::new(super::super::theme::cycle("default", false), true);
        let text = |a: &App| {
            applied_lines(a, 60)
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(!on_lab_done(
            &mut a,
            Err("this fix needs istioctl, which is not on PATH".into())
        ));
        assert_eq!(
            a.note.as_deref(),
            Some("not done: the detail pane says why")
        );
        assert!(text(&a).contains("needs istioctl"), "{}", text(&a));
        let done = crate::lab::session::Applied {
            commands: vec!["kubectl label secret s a=b".into()],
            diffs: vec![crate::lab::session::ObjectDiff {
                cluster: "lab-primary".into(),
                object: "secret istio-system/s changed".into(),
                lines: vec![(' ', "labels:".into()), ('+', "  a: b".into())],
            }],
            more: 0,
        };
        assert!(on_lab_done(
            &mut a,
            Ok(LabDone::Fixed(StepId::RemoteSecret, done))
        ));
        let t = text(&a);
        assert!(!t.contains("needs istioctl"), "{t}");
        assert!(t.contains("Fix applied (f): remote-secret"), "{t}");
        assert!(t.contains("$ kubectl label secret s a=b"), "{t}");
        assert!(t.contains("+   a: b"), "{t}");
    }
}
