//! The TUI's keys driven as a user would, in tmux at 80x24, through an
//! interactive shell (Ctrl-Z needs job control): Esc never quits, Ctrl-Z
//! stops the process and gives the terminal back (no alternate screen, no
//! mouse reports), `fg` takes it again, q quits and restores it. tmux's own
//! pane flags say what mode the program left the terminal in.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn tmux(socket: &Path, args: &[&str]) -> Output {
    Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// Polls until `f` holds, or fails saying `what`.
fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn esc_stays_ctrl_z_suspends_and_fg_resumes_in_tmux() {
    let have = |c: &str| Command::new(c).arg("--version").output().is_ok();
    if !have("tmux") || !have("bash") {
        assert!(
            std::env::var_os("MESHTRACE_REQUIRE_TMUX").is_none(),
            "tmux and bash are needed for this test"
        );
        eprintln!("no tmux or bash: skipped");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_meshtrace");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("keys.sock");
    let pidfile = dir.path().join("pid");
    let out = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "bash --norc --noprofile -i",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let pane =
        || String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p"]).stdout).into_owned();
    let flags = || {
        let o = tmux(
            &socket,
            &["display", "-p", "#{alternate_on} #{mouse_any_flag}"],
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let keys = |k: &[&str]| {
        let mut a = vec!["send-keys"];
        a.extend_from_slice(k);
        assert!(tmux(&socket, &a).status.success());
    };
    let cmd = format!(
        "sh -c 'echo $$ > {}; exec {bin} lab --fault no-tokenreview-rbac'",
        pidfile.display()
    );
    keys(&[&cmd, "Enter"]);
    wait("the TUI draws its verdict", || {
        pane().contains("FAIL at remote-rbac")
    });
    assert_eq!(flags(), "1 1", "alternate screen and mouse reports on");
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let state = || {
        let o = Command::new("ps")
            .args(["-o", "stat=", "-p", &pid])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    // Esc with nothing open: still there, saying how to quit.
    keys(&["Escape"]);
    wait("Esc says q quits", || pane().contains("q quits"));
    assert_eq!(flags(), "1 1");

    // Ctrl-Z: stopped, the terminal handed back as it was.
    keys(&["C-z"]);
    wait("stopped", || state().starts_with('T'));
    wait("the shell has the terminal", || flags() == "0 0");
    wait("the shell says it stopped", || pane().contains("Stopped"));

    // fg: the UI takes the terminal again and redraws it whole.
    keys(&["fg", "Enter"]);
    wait("redrawn", || {
        flags() == "1 1" && pane().contains("FAIL at remote-rbac")
    });
    keys(&["j"]);
    wait("keys work again", || pane().contains("Detail"));

    // q quits; the text report lands in the scrollback, the modes are off.
    keys(&["q"]);
    wait("quit", || state().is_empty());
    wait("modes restored", || flags() == "0 0");
    keys(&[
        "stty -a | grep -o -- ' -icanon\\| icanon' | head -1 > ",
        &dir.path().join("stty").display().to_string(),
        "Enter",
    ]);
    wait("stty ran", || {
        dir.path().join("stty").exists()
            && !std::fs::read_to_string(dir.path().join("stty"))
                .unwrap()
                .is_empty()
    });
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stty"))
            .unwrap()
            .trim(),
        "icanon",
        "cooked again"
    );
    tmux(&socket, &["kill-server"]);
}
