//! Snapshot tests of whole screens at fixed sizes (ratatui's TestBackend,
//! insta), built from hand-made events folded into a TraceState exactly as
//! the live UI does. Snapshots drop colour, so a few cells are checked for
//! their style too.

use super::app::{App, Focus};
use super::theme::{self, Theme};
use super::view;
use crate::model::{Evidence, STEPS, Status, StepId, StepResult, Target, TraceEvent, TraceState};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use serde_json::json;
use std::collections::HashMap;

fn target(fault: Option<&str>) -> Target {
    Target {
        primary: "lab-primary".into(),
        remote: "lab-remote".into(),
        istio_namespace: "istio-system".into(),
        mode: crate::model::Mode::Lab,
        fault: fault.map(Into::into),
    }
}

fn ev(pairs: serde_json::Value) -> Evidence {
    match pairs {
        serde_json::Value::Object(m) => m,
        _ => Evidence::new(),
    }
}

fn result(id: StepId, status: Status) -> StepResult {
    let i = id.index() as f64;
    StepResult {
        id,
        title: id.info().title.into(),
        status,
        duration_ms: if status == Status::Skipped {
            0.0
        } else {
            3.0 + i * 2.5
        },
        started_ms: i * 6.0,
        evidence: Evidence::new(),
        finding: None,
        diagnosis: None,
        hint: None,
        link: id.doc_link(),
        blocked_by: vec![],
    }
}

fn gateway_pod_evidence() -> Evidence {
    ev(json!({
        "pod": "istio-system/istio-eastwestgateway",
        "phase": "Running",
        "service_account": "istio-eastwestgateway-service-account",
        "ISTIO_META_CLUSTER_ID": "remote",
        "CA_ADDR": "istiod.istio-system.svc:15012",
        "istio_token_volume": { "audience": "istio-ca", "expirationSeconds": 43200 },
        "cluster_id": { "value": "remote", "source": "gateway env ISTIO_META_CLUSTER_ID" }
    }))
}

fn rbac_failure() -> StepResult {
    let mut r = result(StepId::RemoteRbac, Status::Fail);
    r.diagnosis = Some(
        "\"system:serviceaccount:istio-system:istio-reader-service-account\" may not create tokenreviews.authentication.k8s.io in the remote: istiod's TokenReview fails with `tokenreviews.authentication.k8s.io is forbidden`".into(),
    );
    let f = crate::findings::Finding {
        code: "remote-rbac/no-tokenreview-create".into(),
        summary: "istio-reader-service-account may not create tokenreviews in the remote".into(),
        commands: vec![r#"kubectl --context lab-remote patch clusterrole istio-reader-clusterrole-istio-system --type=json -p '[{"op":"add","path":"/rules/-","value":{"apiGroups":["authentication.k8s.io"],"resources":["tokenreviews"],"verbs":["create"]}}]'"#.into()],
        note: Some("the ClusterRole bound to the remote secret's identity gets the rule istiod needs".into()),
        doc: crate::findings::doc_url("remote-rbac/no-tokenreview-create"),
    };
    r.hint = f.legacy_hint();
    r.finding = Some(f);
    r.evidence = ev(json!({
        "identity": "system:serviceaccount:istio-system:istio-reader-service-account",
        "access": [
            { "check": "create tokenreviews.authentication.k8s.io", "allowed": false },
            { "check": "list pods", "allowed": true },
            { "check": "watch services", "allowed": true }
        ],
        "groups": ["system:serviceaccounts", "system:authenticated"],
        "reason": null
    }));
    r
}

/// Every step finished as given; the others pass.
fn finished(fault: Option<&str>, special: Vec<StepResult>) -> TraceState {
    let mut st = TraceState::default();
    st.apply(&TraceEvent::TraceStarted {
        target: target(fault),
        meshtrace_version: None,
        at: None,
    });
    for s in STEPS {
        st.apply(&TraceEvent::StepStarted {
            id: s.id,
            at_ms: s.id.index() as f64 * 6.0,
        });
        let r = special
            .iter()
            .find(|r| r.id == s.id)
            .cloned()
            .unwrap_or_else(|| {
                let mut r = result(s.id, Status::Pass);
                if s.id == StepId::GatewayPod {
                    r.evidence = gateway_pod_evidence();
                }
                r
            });
        st.apply(&TraceEvent::StepFinished { result: r });
    }
    st.apply(&TraceEvent::TraceFinished {
        total_ms: 128.4,
        at: None,
    });
    st
}

fn healthy() -> TraceState {
    finished(None, vec![])
}

fn failing() -> TraceState {
    let blocked = |id| {
        let mut r = result(id, Status::Skipped);
        r.blocked_by = vec![StepId::RemoteRbac];
        r
    };
    finished(
        Some("no-tokenreview-rbac"),
        vec![
            rbac_failure(),
            blocked(StepId::TokenReview),
            blocked(StepId::Csr),
            blocked(StepId::IssuedChain),
        ],
    )
}

fn in_progress() -> TraceState {
    let mut st = TraceState::default();
    st.apply(&TraceEvent::TraceStarted {
        target: target(None),
        meshtrace_version: None,
        at: None,
    });
    for id in [
        StepId::GatewayPod,
        StepId::RemoteSecret,
        StepId::RemoteIstiodEndpoint,
        StepId::RootOfTrust,
    ] {
        st.apply(&TraceEvent::StepStarted { id, at_ms: 0.5 });
    }
    for id in [StepId::GatewayPod, StepId::RemoteSecret] {
        st.apply(&TraceEvent::StepFinished {
            result: result(id, Status::Pass),
        });
    }
    for id in [
        StepId::RemoteKubeconfig,
        StepId::GatewayToken,
        StepId::NetworkLabels,
    ] {
        st.apply(&TraceEvent::StepStarted { id, at_ms: 30.0 });
    }
    st.apply(&TraceEvent::StepFinished {
        result: result(StepId::RemoteKubeconfig, Status::Pass),
    });
    st.apply(&TraceEvent::StepStarted {
        id: StepId::RemoteApiTls,
        at_ms: 33.0,
    });
    let mut warn = result(StepId::NetworkLabels, Status::Warn);
    warn.diagnosis = Some("the gateway Service has no topology.istio.io/network label".into());
    st.apply(&TraceEvent::StepFinished { result: warn });
    st
}

fn app(theme: &str, teaching: bool) -> App {
    App::new(theme::cycle(theme, false), teaching)
}

/// Draw one frame, feeding the scroll bounds back as the live loop does.
fn draw(st: &TraceState, app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    let mut info = view::ViewInfo::default();
    t.draw(|f| info = view::draw(f, st, app)).expect("draw");
    app.detail_max_scroll = info.detail_max_scroll;
    app.detail_page = info.detail_page;
    t
}

fn screen(t: &Terminal<TestBackend>) -> String {
    t.backend().to_string()
}

/// Where `needle` starts on screen (first match, top to bottom).
fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    let a = buf.area;
    for y in a.top()..a.bottom() {
        let mut row = String::new();
        let mut xs = vec![];
        for x in a.left()..a.right() {
            let s = buf[(x, y)].symbol();
            for _ in s.chars() {
                xs.push(x);
            }
            row.push_str(s);
        }
        if let Some(i) = row.find(needle) {
            let ci = row[..i].chars().count();
            return Some((xs[ci], y));
        }
    }
    None
}

#[test]
fn healthy_finished_100x30() {
    let st = healthy();
    let mut a = app("default", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 100, 30);
    insta::assert_snapshot!(screen(&t));
    let s = screen(&t);
    assert!(s.contains("PASS · 15 passed · 128 ms"), "{s}");
}

#[test]
fn failing_step_and_blocked_steps_100x30() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    assert_eq!(
        a.selected_id(),
        StepId::RemoteRbac,
        "the UI jumps to the failing step"
    );
    let t = draw(&st, &mut a, 100, 30);
    let s = screen(&t);
    assert!(
        s.contains("FAIL at remote-rbac · 11 passed 1 failed 3 skipped · 128 ms"),
        "{s}"
    );
    insta::assert_snapshot!(s);

    // Colour, which the snapshot cannot show: the failing arrow's head and the
    // failing label use the theme's fail colour; a blocked step is greyed.
    let th = Theme::builtin("default").unwrap();
    let buf = t.backend().buffer();
    let (lx, ly) = find(buf, "✘ remote-rbac").expect("failing label drawn");
    assert_eq!(buf[(lx, ly)].fg, th.fail.fg.unwrap());
    let head = (0..buf.area.width)
        .map(|x| &buf[(x, ly + 1)])
        .find(|c| c.symbol() == "✘")
        .expect("failing arrow head");
    assert_eq!(head.fg, th.fail.fg.unwrap());
    let (bx, by) = find(buf, "○ token-review").expect("blocked step drawn");
    assert_eq!(buf[(bx, by)].fg, th.skipped.fg.unwrap());
}

#[test]
fn failing_80x24_stacks_the_panes() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 80, 24);
    insta::assert_snapshot!(screen(&t));
}

#[test]
fn run_in_progress_100x30() {
    let st = in_progress();
    let mut a = app("default", false);
    a.tick = 3;
    a.now_ms = 41.0;
    a.follow(&st);
    let t = draw(&st, &mut a, 100, 30);
    let s = screen(&t);
    assert!(
        s.contains("tracing · 4/15 finished · 4 running · 41 ms"),
        "{s}"
    );
    insta::assert_snapshot!(s);
    let th = Theme::builtin("default").unwrap();
    let buf = t.backend().buffer();
    let (x, y) = find(buf, "remote-api-tls ·").expect("running step drawn");
    assert_eq!(buf[(x - 2, y)].symbol(), super::app::SPINNER[3]);
    assert_eq!(buf[(x, y)].fg, th.running.fg.unwrap());
}

#[test]
fn teaching_mode_at_step_3() {
    let st = failing();
    let mut a = app("default", true);
    let space = crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char(' '),
        crossterm::event::KeyModifiers::NONE,
    );
    a.on_key(space, &st);
    a.on_key(space, &st);
    assert_eq!(a.selected_id(), StepId::RemoteSecret);
    let t = draw(&st, &mut a, 100, 30);
    let s = screen(&t);
    assert!(s.contains("teaching · hop 3/15"), "{s}");
    assert!(s.contains("What happens at this hop"), "{s}");
    assert!(!s.contains("remote-api-tls"), "later hops stay hidden: {s}");
    assert!(
        !s.contains("FAIL at"),
        "the verdict waits for the last hop: {s}"
    );
    insta::assert_snapshot!(s);
}

#[test]
fn help_overlay_100x30() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    a.help = true;
    let t = draw(&st, &mut a, 100, 30);
    let s = screen(&t);
    assert!(s.contains("re-run the trace"), "{s}");
    insta::assert_snapshot!(s);
}

#[test]
fn mono_theme_has_no_colour_at_all() {
    let st = failing();
    let mut a = app("mono", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 100, 30);
    insta::assert_snapshot!(screen(&t));
    let buf = t.backend().buffer();
    for c in buf.content() {
        assert_eq!(c.fg, Color::Reset, "cell {:?} has a colour", c.symbol());
        assert_eq!(c.bg, Color::Reset, "cell {:?} has a background", c.symbol());
    }
    // Status is still there without colour: glyph plus reverse/bold on the failure.
    let (lx, ly) = find(buf, "✘ remote-rbac").expect("failing label");
    assert!(
        buf[(lx, ly)]
            .modifier
            .contains(ratatui::style::Modifier::REVERSED)
    );
}

#[test]
fn colorblind_theme_uses_its_palette() {
    let st = failing();
    let mut a = app("colorblind", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 100, 30);
    let buf = t.backend().buffer();
    let (lx, ly) = find(buf, "✘ remote-rbac").unwrap_or_else(|| panic!("{}", screen(&t)));
    assert_eq!(buf[(lx, ly)].fg, Color::Rgb(0xe6, 0x9f, 0x00));
    let (px, py) = find(buf, "✔ remote-identity").unwrap();
    assert_eq!(buf[(px, py)].fg, Color::Rgb(0x56, 0xb4, 0xe9));
}

#[test]
fn rerun_marks_what_changed() {
    let before = failing();
    let mut a = app("default", false);
    a.follow(&before);
    a.start_rerun(&before);
    let after = healthy();
    a.follow(&after);
    let t = draw(&after, &mut a, 100, 30);
    let s = screen(&t);
    assert!(s.contains("run 2 · Δ 4 changed since run 1"), "{s}");
    assert!(s.contains(" 7Δ"), "gutter marker on remote-rbac: {s}");
    insta::assert_snapshot!(s);
}

#[test]
fn detail_scrolls_with_page_keys_and_focus() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    draw(&st, &mut a, 80, 24);
    assert!(
        a.detail_max_scroll > 0,
        "the failing step's detail is longer than the pane"
    );
    let key = |c| crossterm::event::KeyEvent::new(c, crossterm::event::KeyModifiers::NONE);
    a.on_key(key(crossterm::event::KeyCode::PageDown), &st);
    assert!(a.detail_scroll > 0);
    a.on_key(key(crossterm::event::KeyCode::Tab), &st);
    assert_eq!(a.focus, Focus::Detail);
    let before = a.detail_scroll;
    a.on_key(key(crossterm::event::KeyCode::Up), &st);
    assert_eq!(a.detail_scroll, before - 1);
    assert_eq!(
        a.selected_id(),
        StepId::RemoteRbac,
        "arrows scroll, not select, in the detail"
    );
    for _ in 0..50 {
        a.on_key(key(crossterm::event::KeyCode::PageDown), &st);
    }
    assert_eq!(a.detail_scroll, a.detail_max_scroll);
    let t = draw(&st, &mut a, 80, 24);
    assert!(
        screen(&t).contains("Evidence") || screen(&t).contains("allowed"),
        "{}",
        screen(&t)
    );
}

#[test]
fn diagram_scrolls_to_keep_the_selection_visible() {
    let st = healthy();
    let mut a = app("default", false);
    let key = |c| crossterm::event::KeyEvent::new(c, crossterm::event::KeyModifiers::NONE);
    a.on_key(key(crossterm::event::KeyCode::End), &st);
    let t = draw(&st, &mut a, 80, 24);
    let s = screen(&t);
    assert!(s.contains("network-labels"), "{s}");
    assert!(!s.contains("gateway-pod ·"), "the top scrolled away: {s}");
}

#[test]
fn every_step_is_drawn_as_an_arrow_in_flow_order() {
    let st = healthy();
    let mut a = app("default", false);
    let t = draw(&st, &mut a, 160, 40);
    let buf = t.backend().buffer();
    let mut last_y = 0;
    let mut seen = HashMap::new();
    for s in STEPS {
        let (_, y) =
            find(buf, &format!("✔ {} ", s.id.as_str())).unwrap_or_else(|| panic!("{} drawn", s.id));
        assert!(y > last_y, "{} below the step before it", s.id);
        last_y = y;
        seen.insert(s.id, y);
    }
    // The loop of remote-kubeconfig (istiod to itself).
    let y = seen[&StepId::RemoteKubeconfig];
    let (lx, _) = find(buf, "✔ remote-kubeconfig").unwrap();
    let (ox, oy) = find(buf, "├──┐").expect("loop drawn");
    assert_eq!(oy, y);
    assert!(
        ox > lx,
        "the label sits left of the loop when the right has no room"
    );
    assert_eq!(find(buf, "│◀─┘"), Some((ox, y + 1)));
}

#[test]
fn too_small_terminal_says_so() {
    let st = healthy();
    let mut a = app("default", false);
    let t = draw(&st, &mut a, 50, 12);
    assert!(screen(&t).contains("terminal too small"));
}

#[test]
fn y_copies_the_commands_of_a_fix_not_its_prose() {
    let (clip, what) = crate::tui::fix_to_copy(
        "bind it to Istio's reader role: kubectl --context lab-remote create clusterrolebinding x --clusterrole=r --serviceaccount=istio-system:reader (the ClusterRole must allow create on tokenreviews)",
    );
    assert_eq!(
        clip,
        "kubectl --context lab-remote create clusterrolebinding x --clusterrole=r --serviceaccount=istio-system:reader"
    );
    assert_eq!(what, "the fix's command");
    let (clip, what) = crate::tui::fix_to_copy(
        "recreate it: istioctl create-remote-secret --context=r --name=remote | kubectl apply --context=p -f -; then kubectl --context p -n istio-system rollout restart deployment/istiod",
    );
    assert_eq!(
        clip,
        "istioctl create-remote-secret --context=r --name=remote | kubectl apply --context=p -f -\nkubectl --context p -n istio-system rollout restart deployment/istiod"
    );
    assert_eq!(what, "the fix's 2 commands");
    let (clip, what) = crate::tui::fix_to_copy("ask the cluster admin");
    assert_eq!(
        (clip.as_str(), what.as_str()),
        ("ask the cluster admin", "the fix")
    );
}

#[test]
fn the_detail_pane_wraps_a_text_once_until_something_changes() {
    let st = failing();
    let mut app = App::new(theme::cycle("default", false), false);
    app.selected = StepId::RemoteRbac.index();
    let first = super::detail::lines_cached(&st, &app, 60);
    let key = app.detail_cache.borrow().as_ref().map(|(k, _)| k.clone());
    assert!(key.is_some(), "the wrapped lines are kept");
    // A frame with nothing changed takes the kept lines (same key, same lines).
    assert_eq!(super::detail::lines_cached(&st, &app, 60), first);
    assert_eq!(
        app.detail_cache.borrow().as_ref().map(|(k, _)| k.clone()),
        key
    );
    // A new width, or a new event, wraps again.
    let narrow = super::detail::lines_cached(&st, &app, 30);
    assert!(narrow.len() > first.len());
    let mut st2 = st.clone();
    st2.apply(&TraceEvent::TraceFinished {
        total_ms: 1.0,
        at: None,
    });
    super::detail::lines_cached(&st2, &app, 30);
    assert_eq!(
        app.detail_cache
            .borrow()
            .as_ref()
            .map(|(k, _)| k.generation),
        Some(st2.generation)
    );
}
