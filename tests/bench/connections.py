#!/usr/bin/env python3
"""TCP connections one trace opens, per endpoint (issue 10: at most one per
endpoint, plus a probe's handshake where the handshake is the check).

Starts `meshtrace lab serve`, runs one trace of the healthy lab under
`strace -f -e trace=connect` (installed with apt-get when missing), and
counts the connect() calls to each of the lab's endpoints: the primary's
and the remote's API servers and istiod's 15012. Given a second binary (an
earlier build), both run side by side. RUNS (default 3) traces each; the
table shows the median count.

    cargo build --release && tests/bench/connections.py target/release/meshtrace [OLD_BINARY]
"""
import os, re, shutil, statistics, subprocess, sys, tempfile, time

BINS = sys.argv[1:] or ["target/release/meshtrace"]
RUNS = int(os.environ.get("RUNS", "3"))

if not shutil.which("strace"):
    subprocess.run("apt-get update -qq && apt-get install -y -qq strace", shell=True, check=True,
                   stdout=subprocess.DEVNULL)

lab = subprocess.Popen([BINS[0], "lab", "serve"], stdout=subprocess.PIPE, text=True)
try:
    seen = ""
    deadline = time.time() + 30
    while "Ctrl-C" not in seen and time.time() < deadline:
        seen += lab.stdout.readline()
    kubeconfig = re.search(r"kubeconfig: (\S+)", seen).group(1)
    primary = re.search(r"lab-primary \(https://127\.0\.0\.1:(\d+)\)", seen).group(1)
    remote = re.search(r"lab-remote \(https://127\.0\.0\.1:(\d+)\)", seen).group(1)
    istiod = re.search(r"istiod: +127\.0\.0\.1:(\d+)", seen).group(1)
    ports = {"primary API server": primary, "remote API server": remote, "istiod 15012": istiod}
    counts = {b: {k: [] for k in ports} for b in BINS}
    for _ in range(RUNS):
        for b in BINS:
            with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
                out = subprocess.run(["strace", "-f", "-e", "trace=connect", "-o", log.name, b,
                                      "--kubeconfig", kubeconfig, "--primary", "lab-primary",
                                      "--remote", "lab-remote", "-o", "json"],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{b} failed ({out.returncode}): {out.stderr[-500:]}")
                text = log.read()
            for name, port in ports.items():
                counts[b][name].append(len(re.findall(rf"sin_port=htons\({port}\)", text)))
    print("| endpoint | " + " | ".join(BINS) + " |")
    print("|---|" + "---|" * len(BINS))
    for name in ports:
        print(f"| {name} | " + " | ".join(f"{statistics.median(counts[b][name]):g}" for b in BINS) + " |")
    print("| all | " + " | ".join(
        f"{statistics.median([sum(x) for x in zip(*counts[b].values())]):g}" for b in BINS) + " |")
finally:
    lab.terminate()
    lab.wait(timeout=10)
