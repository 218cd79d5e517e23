#!/usr/bin/env python3
"""Fleet mode against one lab: one fleet run over N remotes, side by side
with N separate single-remote runs (one at a time), against the same
`meshtrace lab serve --remotes N`.

Each round runs both, interleaved (fleet, then the N singles), ROUNDS times
(default 5); it prints the median wall time of each, their ratio, the
median of one single run, and the peak RSS of the fleet run. Every run must
exit 0 (the lab is healthy): a run that does not stops the benchmark.
N may be a comma-separated list (one lab per N, one table row per N).

    cargo build --release && tests/bench/fleet.py [BINARY] [N[,N...]]

Targets (issue 10): 50 remotes in under 2 s wall, under 60 MB peak RSS.
BINARY defaults to target/release/meshtrace, N to 1,10,50. ROUNDS, PARALLEL
(the fleet's --parallel, default meshtrace's own) and TIMEOUT (--timeout,
default 20s: a loaded machine measures time, not timeouts) come from the
environment.
"""
import os, re, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/meshtrace"
NS = [int(n) for n in (sys.argv[2] if len(sys.argv) > 2 else "1,10,50").split(",")]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
PARALLEL = os.environ.get("PARALLEL")
# Per step; generous, so that a loaded machine measures time, not timeouts.
TIMEOUT = os.environ.get("TIMEOUT", "20s")


def timed(args):
    """Wall seconds and stdout of one run; stops the benchmark on a non-zero exit."""
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        fails = sorted(set(re.findall(rb'"code": "([a-z-]+/[a-z0-9-]+)"', out)))
        sys.exit(f"{' '.join(args)}: exit {p.returncode}; codes {fails}\n{err.decode()[-2000:]}")
    return wall, out


def peak_rss_mib(args):
    """Peak RSS of one run, from the kernel's accounting of the child."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execv(args[0], args)
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_maxrss / 1024.0


def bench(n):
    """(fleet median s, separate median s, single median s, fleet peak RSS MiB) for one lab of n remotes."""
    tmp = tempfile.mkdtemp(prefix="meshtrace-fleet-bench-")
    kc = os.path.join(tmp, "kubeconfig")
    lab = subprocess.Popen([BIN, "lab", "serve", "--remotes", str(n), "--kubeconfig-out", kc],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The banner ends with the Ctrl-C line once every server listens.
        for line in lab.stdout:
            if line.startswith("Ctrl-C"):
                break
        else:
            sys.exit("lab serve ended early: " + lab.stderr.read())
        base = [BIN, "--kubeconfig", kc, "--primary", "lab-primary", "-o", "json",
                "--timeout", TIMEOUT]
        fleet = base + (["--parallel", PARALLEL] if PARALLEL else [])
        names = ["lab-remote"] if n == 1 else [f"lab-remote-{i}" for i in range(1, n + 1)]
        singles = [base + ["--remote", r] for r in names]
        timed(fleet)  # warm-up: page cache, the lab's first TLS handshakes
        fleet_walls, separate_walls, single_walls = [], [], []
        for r in range(ROUNDS):
            w, out = timed(fleet)
            reports = len(re.findall(rb'"schema": "meshtrace.v1"', out))
            if reports != n:
                sys.exit(f"the fleet run gave {reports} reports, not {n}")
            fleet_walls.append(w)
            total = 0.0
            for s in singles:
                w1, _ = timed(s)
                single_walls.append(w1)
                total += w1
            separate_walls.append(total)
            print(f"{n} remotes, round {r + 1}: fleet {fleet_walls[-1] * 1000:.0f} ms, "
                  f"{n} separate runs {total * 1000:.0f} ms", file=sys.stderr)
        rss = statistics.median(peak_rss_mib(fleet) for _ in range(3))
        med = statistics.median
        return med(fleet_walls), med(separate_walls), med(single_walls), rss
    finally:
        lab.terminate()
        lab.wait(timeout=10)


def main():
    rows = [(n, *bench(n)) for n in NS]
    print(f"binary: {BIN}; {ROUNDS} rounds; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| remotes | one fleet run (start to exit) | separate runs, one at a time | "
          "fleet / separate | one single run | peak RSS of the fleet run |")
    print("|---|---|---|---|---|---|")
    for n, f, s, one, rss in rows:
        print(f"| {n} | {f * 1000:.0f} ms | {s * 1000:.0f} ms | {f / s:.2f} ({s / f:.1f}x faster) | "
              f"{one * 1000:.0f} ms | {rss:.1f} MiB |")


if __name__ == "__main__":
    main()
