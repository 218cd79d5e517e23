//! docs/workshop.md's main loop, driven in a real terminal (tmux): start
//! `meshtrace lab --step`, reveal the hops up to istiod's TokenReview, `b`
//! to break that hop with no-tokenreview-rbac, see it fail, reveal the rest,
//! `f` to apply the fix meshtrace printed (a real kubectl against the lab),
//! see the diff and the re-run pass, and quit with exit code 0.
//!
//! Needs tmux and kubectl; without one it says why and passes, unless
//! MESHTRACE_REQUIRE_TMUX (or MESHTRACE_REQUIRE_KUBECTL) is set, as in CI.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool).arg(arg).output().is_ok()
}

/// A tmux server of its own, running `meshtrace ARGS` in a 200x50 pane;
/// the shell writes the exit code to a file once meshtrace quits.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn start(args: &str) -> Tmux {
        let t = Tmux {
            dir: tempfile::tempdir().unwrap(),
        };
        let bin = env!("CARGO_BIN_EXE_meshtrace");
        let shell = format!(
            "{bin} {args}; echo \"exit=$?\" > {d}; sleep 30",
            d = t.done().display()
        );
        let out = t.run(&["new-session", "-d", "-x", "200", "-y", "50", &shell]);
        assert!(out.status.success(), "{out:?}");
        t
    }
    fn done(&self) -> std::path::PathBuf {
        self.dir.path().join("done")
    }
    /// `q`, then meshtrace's exit line (`exit=N`).
    fn quit(&self) -> String {
        self.keys(&["q"]);
        let done = self.done();
        let start = Instant::now();
        while !done.exists() || std::fs::read_to_string(&done).unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(20), "q did not quit");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::read_to_string(&done).unwrap().trim().to_string()
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.dir.path().join("tmux.sock"))
            .args(args)
            .output()
            .unwrap()
    }
    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", k]);
            // One key at a time, as a person types: each is its own event.
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    /// The pane once it contains every one of `all`, or a failure showing it.
    fn wait_for(&self, all: &[&str], what: &str) -> String {
        let start = Instant::now();
        loop {
            let p = self.pane();
            if all.iter().all(|s| p.contains(s)) {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "{what}: the pane never showed {all:?}:\n{p}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// tmux drives the terminal and kubectl runs the printed fix: without one
/// the test says why and passes, unless CI requires it.
fn tools_or_skip(test: &str) -> bool {
    if !have("tmux", "-V") {
        assert!(
            std::env::var_os("MESHTRACE_REQUIRE_TMUX").is_none(),
            "tmux is needed for this test (apt-get install tmux)"
        );
        eprintln!("no tmux: skipping the {test} test");
        return false;
    }
    if !have("kubectl", "version") {
        assert!(
            std::env::var_os("MESHTRACE_REQUIRE_KUBECTL").is_none(),
            "kubectl is needed for this test: f runs the printed fix with it"
        );
        eprintln!("no kubectl: skipping the {test} test");
        return false;
    }
    true
}

#[test]
fn the_workshop_loop_breaks_a_hop_and_fixes_it_from_the_tui() {
    if !tools_or_skip("workshop") {
        return;
    }
    // The doc says what this test does: the hop, the fault, the keys.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/workshop.md"))
        .expect("docs/workshop.md");
    for needle in [
        "meshtrace lab --step",
        "hop 21",
        "no-tokenreview-rbac",
        "`b`",
        "`f`",
    ] {
        assert!(doc.contains(needle), "docs/workshop.md names {needle:?}");
    }
    let t = Tmux::start("lab --step");
    t.wait_for(
        &["teaching · hop 1/26", "the trace finished underneath"],
        "start",
    );

    // Reveal the hops up to istiod's TokenReview of the gateway's token.
    t.keys(&[" "; 20]);
    let p = t.wait_for(&["hop 21/26", "✔ remote-rbac"], "reveal");
    assert!(
        !p.contains("✔ PASS · "),
        "the verdict waits for the last hop:\n{p}"
    );

    // b: the picker of the faults that break this hop.
    t.keys(&["b"]);
    t.wait_for(
        &["Break hop 21", "no-tokenreview-rbac", "healthy"],
        "picker",
    );
    t.keys(&["Enter"]);
    let p = t.wait_for(
        &["fault no-tokenreview-rbac", "run 2", "✘ remote-rbac"],
        "break",
    );
    assert!(p.contains("hop 21/26"), "the room stays on the hop:\n{p}");

    // The rest of the flow: what the broken hop blocked.
    t.keys(&[" "; 5]);
    t.wait_for(&["hop 26/26", "FAIL at remote-rbac"], "fail");

    // f: the printed fix, applied with kubectl; the diff; the re-run.
    t.keys(&["f"]);
    let p = t.wait_for(
        &[
            "applied the fix of remote-rbac",
            "Fix applied (f): remote-rbac",
            "✔ PASS · ",
            "run 3",
        ],
        "fix",
    );
    assert!(
        p.contains("clusterrole istio-reader-clusterrole-istio-system changed"),
        "the changed object is named:\n{p}"
    );
    assert!(
        p.contains("+   - tokenreviews"),
        "the diff shows the rule:\n{p}"
    );
    assert!(!p.contains("FAIL at"), "{p}");

    assert_eq!(t.quit(), "exit=0", "the last run passed");
}

/// The same loop in a lab of several remotes (`meshtrace lab --remotes 3`):
/// Enter opens remote-2 from the fleet screen, `b` breaks it (the fault goes
/// on the open remote only), the fleet shows which remote broke, and `f`
/// applies meshtrace's printed fix there with kubectl; the re-run passes.
#[test]
fn in_a_fleet_lab_b_and_f_break_and_fix_the_open_remote() {
    if !tools_or_skip("fleet lab") {
        return;
    }
    let t = Tmux::start("lab --remotes 3");
    t.wait_for(&["3 remotes · 3 done, 0 failed", "run 1"], "start");

    // Open remote-2, go to its last step (network-labels), break that hop.
    t.keys(&["j", "Enter"]);
    t.wait_for(&["remote lab-remote-2", "✔ PASS · 18 passed"], "open");
    t.keys(&["G"]);
    t.keys(&["j"; 18]);
    t.keys(&["b"]);
    t.wait_for(&["Break hop", "network-mismatch", "healthy"], "picker");
    t.keys(&["Enter"]);
    t.wait_for(
        &[
            "lab fault network-mismatch@2",
            "WARN at network-labels",
            "run 2",
        ],
        "break",
    );

    // Back on the fleet: only remote-2 is broken.
    t.keys(&["Escape"]);
    let p = t.wait_for(&["3 done, 0 failed", "run 2"], "fleet after break");
    let row = |id: &str| p.lines().find(|l| l.contains(id)).unwrap_or("").to_string();
    assert!(row("remote-1").contains("every step passed"), "{p}");
    assert!(row("remote-3").contains("every step passed"), "{p}");
    assert!(row("remote-2").contains("network-labels"), "{p}");

    // f in remote-2: the printed fix, applied with kubectl; the re-run passes.
    t.keys(&["Enter"]);
    t.wait_for(&["remote lab-remote-2", "WARN at network-labels"], "reopen");
    t.keys(&["f"]);
    let p = t.wait_for(
        &[
            "applied the fix of network-labels",
            "Fix applied (f): network-labels",
            "✔ PASS · 18 passed",
            "run 3",
        ],
        "fix",
    );
    assert!(
        p.contains("lab-remote-2: service istio-system/istio-eastwestgateway changed"),
        "the changed object is named, in its cluster:\n{p}"
    );
    t.keys(&["Escape"]);
    let p = t.wait_for(&["3 done, 0 failed", "run 3"], "fleet after fix");
    assert!(
        p.lines()
            .filter(|l| l.contains("every step passed"))
            .count()
            == 3,
        "{p}"
    );

    assert_eq!(t.quit(), "exit=0", "the last run passed");
}
