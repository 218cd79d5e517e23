#!/usr/bin/env bash
# Regenerate screenshots/*.png: run meshtrace's terminal UI in tmux at 120x36
# against the built-in lab, press keys as a user would, capture the pane with
# its colours and render it with ansi2png.py.
#
#   cargo build && tests/screenshots/capture.sh            # all of them
#   tests/screenshots/capture.sh failure teaching          # some
#
# Needs tmux, python3 with Pillow, the DejaVu fonts; kubectl for "watch".
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${MESHTRACE:-$PWD/target/debug/meshtrace}
OUT=${OUT:-$PWD/screenshots}
COLS=120 ROWS=36
SESSION=meshtrace-shots-$$
mkdir -p "$OUT"
TMP=$(mktemp -d)
LAB_PID=
cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    [ -n "$LAB_PID" ] && kill "$LAB_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

start() { # command...
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    tmux new-session -d -s "$SESSION" -x $COLS -y $ROWS "$* ; sleep 600"
}
keys() { for k in "$@"; do tmux send-keys -t "$SESSION" "$k"; sleep 0.15; done; }
shot() { # name
    sleep 0.4
    tmux capture-pane -e -p -t "$SESSION" > "$TMP/$1.ans"
    python3 tests/screenshots/ansi2png.py "$TMP/$1.ans" "$OUT/$1.png" --cols $COLS --rows $ROWS
    echo "screenshots/$1.png"
}
wait_for() { # text in the pane
    for _ in $(seq 1 100); do
        tmux capture-pane -p -t "$SESSION" | grep -q -- "$1" && return 0
        sleep 0.1
    done
    echo "timed out waiting for: $1" >&2
    tmux capture-pane -p -t "$SESSION" >&2
    return 1
}

healthy() { start "$BIN" lab; wait_for "PASS ·"; shot healthy; }
failure() { start "$BIN" lab --fault no-tokenreview-rbac; wait_for "FAIL at"; shot failure; }
teaching() {
    start "$BIN" lab --step --fault no-tokenreview-rbac
    wait_for "finished underneath"
    # To hop 20: the gateway's CSR, before istiod reviews its token.
    for _ in $(seq 1 19); do keys Space; done
    wait_for "hop 20/"
    shot teaching
}
teaching_object() {
    # Hop 23: the chain istiod returns, as a tree, the detail scrolled to it.
    start "$BIN" lab --step
    wait_for "finished underneath"
    for _ in $(seq 1 22); do keys Space; done
    wait_for "hop 23/"
    keys Tab
    for _ in $(seq 1 40); do
        tmux capture-pane -p -t "$SESSION" | grep -q "The object, as the trace" && break
        keys Down
    done
    # The heading showed at the bottom: bring it to the top, the tree under it.
    for _ in $(seq 1 27); do keys Down; done
    shot teaching-object
}
fault_picker() {
    # Hop 15, the gateway's token: b opens the faults that break it.
    start "$BIN" lab --step
    wait_for "finished underneath"
    for _ in $(seq 1 14); do keys Space; done
    wait_for "hop 15/"
    keys b
    wait_for "Break hop 15"
    shot fault-picker
}
colorblind() { start "$BIN" lab --theme colorblind --fault no-tokenreview-rbac; wait_for "FAIL at"; shot colorblind; }
mono() { start "$BIN" lab --theme mono --fault secret-unlabelled; wait_for "FAIL at"; shot mono; }
light() { start "$BIN" lab --theme light --fault stale-root; wait_for "FAIL at"; shot light; }
help() { start "$BIN" lab --fault no-tokenreview-rbac; wait_for "FAIL at"; keys '?'; shot help; }
high-contrast() { start "$BIN" lab --theme high-contrast --fault no-tokenreview-rbac; wait_for "FAIL at"; shot high-contrast; }
# The smallest common terminal: the compact diagram and the footer's short forms.
80x24() {
    local COLS=80 ROWS=24
    start "$BIN" lab --fault no-tokenreview-rbac
    wait_for "FAIL at"
    shot 80x24
}
watch() {
    # Watch mode: a lab that stays up, the TUI against it, the fault fixed with kubectl, then `r`.
    "$BIN" lab serve --fault secret-unlabelled --kubeconfig-out "$TMP/kubeconfig" > "$TMP/serve.log" 2>&1 &
    LAB_PID=$!
    for _ in $(seq 1 100); do grep -q "istiod:" "$TMP/serve.log" && break; sleep 0.1; done
    start "$BIN" --kubeconfig "$TMP/kubeconfig" --primary lab-primary --remote lab-remote
    wait_for "FAIL at"
    kubectl --kubeconfig "$TMP/kubeconfig" --context lab-primary -n istio-system \
        label secret istio-remote-secret-remote istio/multiCluster=true > /dev/null
    keys r
    wait_for "since run 1"
    shot watch
    kill "$LAB_PID"; LAB_PID=
}

replay() {
    # A recorded run played back at 1/50 of its speed: caught half drawn.
    "$BIN" lab --fault gateway-audience -o events > "$TMP/run.jsonl" || true
    start "cd $TMP && $BIN" replay run.jsonl --speed 0.02
    wait_for "tracing"
    sleep 3
    shot replay
}

all=(healthy failure teaching teaching_object fault_picker colorblind mono light help high-contrast 80x24 watch replay)
for s in "${@:-${all[@]}}"; do "$s"; done
