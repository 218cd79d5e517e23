//! Snapshot tests of whole screens at fixed sizes (ratatui's TestBackend,
//! insta), built from hand-made events folded into a TraceState exactly as
//! the live UI does. Snapshots drop colour, so a few cells are checked for
//! their style too.

use super::app::{App, Focus};
use super::theme::{self, Theme};
use super::view;
use crate::model::{Evidence, STEPS, Status, StepId, StepResult, Target, TraceEvent, TraceState};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use serde_json::json;

fn target(fault: Option<&str>) -> Target {
    Target {
        primary: "lab-primary".into(),
        remote: "lab-remote".into(),
        istio_namespace: "istio-system".into(),
        mode: crate::model::Mode::Lab,
        fault: fault.map(Into::into),
        cluster_id: None,
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
    info.apply(app);
    t
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn mouse(kind: MouseEventKind, column: u16, row: u16) -> MouseEvent {
    MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    }
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
    // Counted from STEPS, so that a new step changes only the snapshots.
    let n = crate::model::STEPS.len();
    assert!(s.contains(&format!("PASS · {n} passed · 128 ms")), "{s}");
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
        s.contains(&format!(
            "FAIL at remote-rbac · {} passed 1 failed 3 skipped · 128 ms",
            crate::model::STEPS.len() - 4
        )),
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
    // The blocked steps are further down the sequence: a taller screen.
    let t = draw(&st, &mut a, 100, 60);
    let buf = t.backend().buffer();
    let (bx, by) = find(buf, "○ token-review").expect("blocked step drawn");
    let skipped = |x, y| {
        let c: &ratatui::buffer::Cell = &buf[(x, y)];
        c.fg == th.skipped.fg.unwrap_or(Color::Reset)
            && c.modifier.contains(th.skipped.add_modifier)
    };
    assert!(skipped(bx, by));
    let (cx, cy) = find(buf, "○ csr · blocked by remote-rbac").expect("the CSR, blocked");
    assert!(skipped(cx, cy));
    assert!(
        (0..buf.area.width).any(|x| buf[(x, cy + 1)].symbol() == "┄"),
        "a blocked message's arrow is dotted"
    );
}

#[test]
fn failing_80x24_stacks_the_panes() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 80, 24);
    let s = screen(&t);
    insta::assert_snapshot!(s);
    let lines: Vec<&str> = s.lines().collect();
    // The issue: four steps and eight detail lines, no r, y or t in the footer.
    let footer = lines.last().unwrap();
    for k in [" r ", " y ", " t ", " ? ", " q "] {
        assert!(footer.contains(k), "footer has {k:?}: {footer}");
    }
    let numbered = lines
        .iter()
        .filter(|l| {
            // `"┃▶12`: the quote of the dump, the border, the marker, the number.
            let g: String = l.chars().skip(3).take(2).collect();
            g.trim().parse::<u32>().is_ok()
        })
        .count();
    assert!(numbered >= 6, "at least six messages in the diagram: {s}");
    let detail_top = lines.iter().position(|l| l.contains("Detail")).unwrap();
    let detail_rows = lines.len() - 2 - detail_top;
    assert!(detail_rows >= 9, "nine detail lines: {s}");
    // No bleed: a label's letters that fall on a lifeline (or on the
    // compact row's arrow) keep the label's style, not the lifeline's.
    let th = Theme::builtin("default").unwrap();
    let buf = t.backend().buffer();
    let lanes = super::diagram::lanes(a.diagram_area.width);
    for needle in [
        "✔ root-of-trust · write ConfigMap",
        "✔ remote-api-tls · serving certificate",
    ] {
        let (x0, y) = find(buf, needle).expect(needle);
        let n = needle.chars().count() as u16 + 12;
        let mut on_lane = 0;
        for x in x0..(x0 + n).min(a.diagram_area.right()) {
            if lanes.iter().any(|l| a.diagram_area.x + l == x) {
                on_lane += 1;
                let c = &buf[(x, y)];
                assert!(
                    !c.modifier.contains(ratatui::style::Modifier::DIM) && c.fg != Color::DarkGray,
                    "{needle}: {:?} at x {x} took the lifeline's style {:?}",
                    c.symbol(),
                    c
                );
                assert_ne!(c.style(), th.border, "{needle} at {x}");
            }
        }
        assert!(on_lane > 0, "{needle} crosses a lifeline");
    }
    // Compact rows keep the arrow's direction: a start mark beside the label.
    assert!(
        lines.iter().any(|l| l.contains("├─") || l.contains("├╌")),
        "{s}"
    );
}

#[test]
fn footer_keeps_every_key_that_matters_at_80_columns() {
    for teaching in [false, true] {
        let st = failing();
        let mut a = app("default", teaching);
        a.follow(&st);
        let t = draw(&st, &mut a, 80, 24);
        let s = screen(&t);
        let footer = s.lines().last().unwrap().to_string();
        let must: &[&str] = if teaching {
            &["Space/→", " r ", " t ", " ? ", " q "]
        } else {
            &[" r ", " y ", " t ", " ? ", " q ", "/", "Esc"]
        };
        for k in must {
            assert!(footer.contains(k), "{k:?} in {footer}");
        }
    }
    // A long note takes the footer's two rows alone, whole, not cut.
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    a.note = Some(super::clipboard_note(
        "the fix's command",
        StepId::RemoteRbac,
        Some(Ok("external".into())),
    ));
    let t = draw(&st, &mut a, 80, 24);
    let s = screen(&t);
    let tail: String = s.lines().rev().take(3).collect::<Vec<_>>().join(" ");
    assert!(tail.contains("tmux set -g set-clipboard on"), "{s}");
    // ... above the keys, which stay.
    let last = s.lines().last().unwrap();
    assert!(
        last.contains(" r ") && last.contains(" q ") && !last.contains("tmux"),
        "{s}"
    );
    // A note of middling length never overwrites a key either.
    a.note = Some("csr was blocked by remote-rbac, hidden here".into());
    let s = screen(&draw(&st, &mut a, 80, 24));
    let rows: Vec<&str> = s.lines().rev().take(2).collect();
    assert!(rows[0].contains("q quit"), "{s}");
    assert!(
        rows[1].contains("csr was blocked by remote-rbac, hidden here"),
        "{s}"
    );
}

#[test]
fn enter_opens_the_detail_or_jumps_to_the_blocking_step() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    a.selected = StepId::Csr.index();
    a.on_key(key(KeyCode::Enter), &st);
    assert_eq!(a.selected_id(), StepId::RemoteRbac, "jumped to the blocker");
    assert_eq!(a.focus, Focus::Diagram);
    assert!(
        a.note
            .as_deref()
            .unwrap()
            .contains("remote-rbac blocked csr")
    );
    a.on_key(key(KeyCode::Enter), &st);
    assert_eq!(a.focus, Focus::Detail, "a step that ran: its detail");
    assert_eq!(a.on_key(key(KeyCode::Esc), &st), None);
    assert_eq!(a.focus, Focus::Diagram);
}

#[test]
fn filter_hides_the_other_messages_80x24_and_200x60() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    a.on_key(key(KeyCode::Char('/')), &st);
    for c in "token".chars() {
        a.on_key(key(KeyCode::Char(c)), &st);
    }
    let s = screen(&draw(&st, &mut a, 80, 24));
    assert!(s.contains("/token"), "{s}");
    assert!(s.contains("token-review"), "{s}");
    a.on_key(key(KeyCode::Enter), &st);
    let s = screen(&draw(&st, &mut a, 200, 60));
    // gateway-pod's messages are gone; the hits' phases stay.
    assert!(!s.contains("✔ gateway-pod"), "{s}");
    assert!(s.contains("/token"), "{s}");
    insta::assert_snapshot!(s);
    // Arrows stay in the matches.
    a.on_key(key(KeyCode::End), &st);
    let hits = a.filter_hits.clone().unwrap();
    assert!(hits.contains(&a.selected_id()));
}

#[test]
fn mouse_click_selects_and_wheel_scrolls_the_pane_under_it() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 100, 30);
    let buf = t.backend().buffer().clone();
    // Click the label of token-review (drawn: the diagram scrolls to the failure).
    let (x, y) = find(&buf, "token-review")
        .or_else(|| find(&buf, "remote-identity"))
        .unwrap();
    let want = if find(&buf, "token-review").is_some() {
        StepId::TokenReview
    } else {
        StepId::RemoteIdentity
    };
    a.on_mouse(mouse(MouseEventKind::Down(MouseButton::Left), x, y), &st);
    assert_eq!(a.selected_id(), want, "{}", screen(&t));
    assert!(a.pinned);
    // A click on a phase heading or the actors selects nothing new.
    let before = a.selected;
    a.on_mouse(
        mouse(MouseEventKind::Down(MouseButton::Left), x, a.diagram_area.y),
        &st,
    );
    assert_eq!(a.selected, before);
    // The wheel over the detail scrolls it; over the diagram it moves the selection.
    let d = a.detail_area;
    a.on_mouse(mouse(MouseEventKind::ScrollDown, d.x + 3, d.y + 3), &st);
    assert_eq!(a.detail_scroll, 3);
    a.on_mouse(mouse(MouseEventKind::ScrollUp, d.x + 3, d.y + 3), &st);
    assert_eq!(a.detail_scroll, 0);
    let order = crate::sequence::step_order();
    let pos = order.iter().position(|id| *id == a.selected_id()).unwrap();
    a.on_mouse(
        mouse(
            MouseEventKind::ScrollDown,
            a.diagram_area.x + 3,
            a.diagram_area.y + 5,
        ),
        &st,
    );
    assert_eq!(a.selected_id(), order[pos + 1]);
    // A click in the detail focuses it.
    a.on_mouse(
        mouse(MouseEventKind::Down(MouseButton::Left), d.x + 3, d.y + 3),
        &st,
    );
    assert_eq!(a.focus, Focus::Detail);
    // Over the help, a click only closes it; the wheel does nothing.
    a.help = true;
    let sel = a.selected;
    let over = (a.diagram_area.x + 3, a.diagram_area.y + 5);
    a.on_mouse(mouse(MouseEventKind::ScrollDown, over.0, over.1), &st);
    assert!(a.help && a.selected == sel);
    a.on_mouse(mouse(MouseEventKind::Down(MouseButton::Left), x, y), &st);
    assert!(!a.help);
    assert_eq!(
        a.selected, sel,
        "the click went to the help, not the step under it"
    );
}

#[test]
fn mouse_click_in_the_compact_80x24_diagram() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 80, 24);
    let buf = t.backend().buffer().clone();
    let (x, y) = find(&buf, "root-of-trust").expect("drawn at 80x24");
    a.on_mouse(mouse(MouseEventKind::Down(MouseButton::Left), x, y), &st);
    assert_eq!(a.selected_id(), StepId::RootOfTrust, "{}", screen(&t));
}

#[test]
fn y_never_says_copied() {
    let id = StepId::RemoteRbac;
    let plain = super::clipboard_note("the fix", id, None);
    let on = super::clipboard_note("the fix", id, Some(Ok("on".into())));
    let ext = super::clipboard_note("the fix", id, Some(Ok("external".into())));
    let err = super::clipboard_note("the fix", id, Some(Err("no server".into())));
    for n in [&plain, &on, &ext, &err] {
        assert!(!n.contains("copied"), "{n}");
        assert!(n.contains("sent the fix for remote-rbac by OSC 52"), "{n}");
    }
    assert!(plain.contains("ignores it"), "{plain}");
    assert!(
        on.contains("set-clipboard on") && on.contains("may still ignore"),
        "{on}"
    );
    assert!(
        ext.contains("tmux ignores it")
            && ext.contains("\"external\"")
            && ext.contains("tmux set -g set-clipboard on"),
        "{ext}"
    );
    assert!(err.contains("no server"), "{err}");
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
        s.contains(&format!(
            "tracing · 4/{} finished · 4 running · 41 ms",
            crate::model::STEPS.len()
        )),
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
    assert!(
        s.contains(&format!("teaching · hop 3/{}", super::app::hops())),
        "{s}"
    );
    assert!(s.contains("Why it matters"), "{s}");
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
    // The gutter marks the messages whose steps changed, by their number.
    let n = crate::sequence::items()
        .into_iter()
        .find_map(|i| match i {
            crate::sequence::Item::Message { n, msg } if msg.verifies(StepId::RemoteRbac) => {
                Some(n)
            }
            _ => None,
        })
        .unwrap();
    assert!(
        s.contains(&format!("{n:>2}Δ")),
        "gutter marker on remote-rbac: {s}"
    );
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
fn the_diagram_draws_the_sequence_in_its_real_order() {
    let st = healthy();
    let mut a = app("default", false);
    let t = draw(&st, &mut a, 160, 60);
    let buf = t.backend().buffer();
    let s = screen(&t);
    // Every step is drawn, on the message(s) it verifies.
    let row_of = |needle: &str| {
        find(buf, needle)
            .unwrap_or_else(|| panic!("{needle:?} drawn:\n{s}"))
            .1
    };
    for id in crate::sequence::step_order() {
        row_of(&format!("✔ {}", id.as_str()));
    }
    // The gateway sends its CSR, then istiod reviews the token, then the
    // remote API server answers, then istiod returns the chain.
    let csr = row_of("✔ csr · CreateCertificate");
    let review = row_of("✔ token-review ✔ remote-rbac · TokenReview");
    let answer = row_of("✔ token-review · authenticated");
    let chain = row_of("✔ csr ✔ issued-chain · cert_chain");
    assert!(csr < review && review < answer && answer < chain, "{s}");
    // Phases head their messages.
    let phase_c = row_of("C. the CSR");
    assert!(row_of("B. the gateway starting") < phase_c && phase_c < csr);
    // The lifelines' x, from the gateway's TokenRequest (gateway → remote
    // API server) and the TokenReview (istiod → remote API server).
    let row = |y: u16| -> Vec<&str> { (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect() };
    let at = |y: u16, sym: &str| row(y).iter().position(|c| *c == sym).unwrap() as u16;
    let token = row_of("✔ gateway-token · TokenRequest") + 1;
    let (gateway, remote) = (at(token, "├"), at(token, "▶") + 1);
    let istiod = at(review + 1, "┤");
    // A reply is drawn back, dashed: the answer runs from the remote API
    // server's lifeline to istiod's, its head at istiod.
    let y = answer + 1;
    assert_eq!(at(y, "├"), remote, "{s}");
    assert_eq!(row(y)[remote as usize + 1], "╌", "{s}");
    assert_eq!(at(y, "▶"), istiod - 1, "{s}");
    assert_eq!(
        at(chain + 1, "◀"),
        gateway + 1,
        "the chain goes back to the gateway"
    );
    // meshtrace's own reads are observations: a ◇, no arrow under them.
    let (px, py) = find(buf, "◇ ✔ gateway-pod").expect("the pod read drawn");
    assert_eq!(px, remote, "on the remote API server's lifeline");
    let next = row(py + 1).concat();
    assert!(!next.contains('▶') && !next.contains('◀'), "{next}");
    // The loop of remote-kubeconfig (istiod to itself).
    let y = row_of("✔ remote-kubeconfig");
    let (ox, oy) = find(buf, "├──┐").expect("loop drawn");
    assert_eq!((ox, oy), (istiod, y));
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

#[test]
fn the_whole_sequence_at_200x60() {
    // Wide and tall enough for every phase and message at once.
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 200, 60);
    let s = screen(&t);
    for p in crate::sequence::SEQUENCE {
        assert!(s.contains(p.title), "{} drawn: {s}", p.title);
    }
    assert!(
        !s.contains('▼') && !s.contains('▲'),
        "nothing scrolled away: {s}"
    );
    insta::assert_snapshot!(s);
}

/// Blocked steps stay readable in every built-in theme: never drawn in
/// ANSI colour 8 (Solarized Dark's background) and never in the colour of
/// the cell's own background.
#[test]
fn blocked_steps_are_readable_in_every_theme() {
    let st = failing();
    for name in theme::names() {
        let mut a = app(name, false);
        a.follow(&st);
        let t = draw(&st, &mut a, 100, 60);
        let buf = t.backend().buffer();
        let (x, y) = find(buf, "○ csr · blocked by remote-rbac")
            .unwrap_or_else(|| panic!("{name}: {}", screen(&t)));
        for dx in 0..30 {
            let c = &buf[(x + dx, y)];
            assert!(
                !matches!(c.fg, Color::DarkGray | Color::Indexed(8)),
                "{name}: {:?} in {:?}",
                c.symbol(),
                c.fg
            );
            assert!(c.fg == Color::Reset || c.fg != c.bg, "{name}: fg is the bg");
        }
    }
}

#[test]
fn high_contrast_80x24() {
    let st = failing();
    let mut a = app("high-contrast", false);
    a.follow(&st);
    let t = draw(&st, &mut a, 80, 24);
    let buf = t.backend().buffer();
    // Its own black background everywhere, so white text is white on black.
    assert!(buf.content().iter().all(|c| c.bg != Color::Reset));
    let (x, y) = find(buf, "✘ remote-rbac").unwrap();
    assert_eq!(buf[(x, y)].bg, Color::Rgb(0xd7, 0, 0));
}

#[test]
fn help_overlay_80x24_lists_every_key_whole() {
    let st = failing();
    let mut a = app("default", false);
    a.follow(&st);
    a.help = true;
    let t = draw(&st, &mut a, 80, 24);
    let s = screen(&t);
    // Every row of the help is shown, none cut at the popup's edge.
    for (k, what) in view::HELP {
        assert!(s.contains(what), "{k}: {what:?} whole at 80 columns: {s}");
    }
    insta::assert_snapshot!(s);
}
