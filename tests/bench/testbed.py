#!/usr/bin/env python3
"""meshtrace on the real test bed, side by side with the manual runbook, and
its critical path against the round-trip floor (issue 10's targets: at least
40x faster than the runbook; critical path within 1.2x of its floor).

Each round runs, interleaved: the binary's trace (`meshtrace --kubeconfig
... --primary ... --remote ... -o json`, istiod found from the remote's
EndpointSlice, no --istiod-addr), tests/bench/runbook.sh, and the floor's
requests. Every trace and runbook must exit 0 (the bed is healthy).

    cargo build --release
    MESHTRACE_TESTBED_STATE=/tmp/tb tests/testbed/up
    MESHTRACE_TESTBED_STATE=/tmp/tb tests/bench/testbed.py [BINARY]

ROUNDS (default 10) from the environment; the bed from
$MESHTRACE_TESTBED_STATE/env (default /tmp/meshtrace-testbed/env); kubectl
is the bed's ($TB_KUBECTL).

The critical path is read from the trace's own step timings: from the step
that ends last, back through the step it waited for (`waits_for` in
src/model.rs) that ended last. The floor is the longest chain of requests
that each need the previous one's answer, every request timed by this
script on an already open connection (median of 5 per round), the TLS
handshakes timed as TCP connect + handshake:

  gateway side: GET the gateway pod (remote) -> max(TokenRequest,
    GET EndpointSlice -> TLS handshake with istiod through the LB)
    -> max(CreateCertificate, xDS)
  istiod side:  LIST the remote secrets (primary) -> TLS handshake with the
    remote API server -> SelfSubjectReview -> SelfSubjectAccessReview
    -> TokenReview (which also needs the gateway side's TokenRequest)

CreateCertificate and xDS are gRPC calls this script cannot make without a
gRPC library; their times are the ones meshtrace records for the call alone
on its open channel (`rpc_ms` in the csr and xds evidence): istiod's own
work (its TokenReview to the remote, signing, the push) dominates them.
"""
import base64, http.client, json, os, re, resource, socket, ssl, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/meshtrace"
ROUNDS = int(os.environ.get("ROUNDS", "10"))
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STATE = os.environ.get("MESHTRACE_TESTBED_STATE", "/tmp/meshtrace-testbed")


def load_env():
    path = os.path.join(STATE, "env")
    try:
        text = open(path).read()
    except OSError as e:
        sys.exit(f"no test bed: cannot read {path!r} ({e.strerror}); run tests/testbed/up")
    env = dict(l.split("=", 1) for l in text.splitlines() if "=" in l and not l.startswith("#"))
    os.environ.update(env)
    os.environ["PATH"] = os.path.dirname(env["TB_KUBECTL"]) + ":" + os.environ["PATH"]
    return env


def waits_for():
    """The schedule from src/model.rs's STEPS table: step id -> the ids it waits for."""
    src = open(os.path.join(ROOT, "src", "model.rs")).read()
    names = dict(re.findall(r"\n\s*(\w+) => \"([a-z-]+)\",", src))
    table = {}
    table_src = src[src.index("pub const STEPS"):]
    for m in re.finditer(r"\bid: (\w+),.*?waits_for: &\[(.*?)\]", table_src, re.S):
        table[names[m.group(1)]] = [names[w] for w in re.findall(r"\w+", m.group(2))]
    if len(table) < 10:
        sys.exit("could not read the STEPS table from src/model.rs")
    return table


def critical_path(report, deps):
    steps = {s["id"]: s for s in report["steps"]}
    end = lambda i: steps[i]["started_ms"] + steps[i]["duration_ms"]
    cur = max(steps, key=end)
    path = [cur]
    while True:
        before = [d for d in deps.get(cur, []) if d in steps]
        if not before:
            break
        cur = max(before, key=end)
        path.append(cur)
    return list(reversed(path)), end(path[0])


def server_pids():
    """The bed's server processes (API servers, etcd, istiod, the load
    balancer's proxy): their CPU time is what one trace costs the servers."""
    out = subprocess.run(["pgrep", "-f", "kube-apiserver|etcd|pilot-discovery|haproxy"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_ms(pids):
    """User + system CPU of `pids`, in ms (utime and stime of /proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total * 1000 / tick


def child_cpu_ms():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1000


def timed(args, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, **kw)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)}: exit {p.returncode}\n{p.stdout[-1500:]!r}\n{p.stderr[-1500:]!r}")
    return wall, p.stdout


class Api:
    """One kept-alive HTTPS connection to an API server, as the kubeconfig's admin."""

    def __init__(self, cluster, user):
        url = cluster["server"]
        self.host, _, port = url.removeprefix("https://").partition(":")
        self.port = int(port or 443)
        self.ctx = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self.token = user["token"]
        self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx)

    def call(self, method, path, body=None):
        """Milliseconds for one request on the open connection, and the parsed answer."""
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data:
            hdrs["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        self.conn.request(method, path, body=data, headers=hdrs)
        r = self.conn.getresponse()
        out = r.read()
        ms = (time.perf_counter() - t0) * 1000
        if r.status >= 300:
            sys.exit(f"{method} {path}: HTTP {r.status}")
        return ms, json.loads(out)

    def handshake_ms(self):
        return tls_handshake_ms(self.host, self.port, self.ctx, self.host)


def tls_handshake_ms(host, port, ctx, server_name, alpn=None):
    if alpn:
        ctx.set_alpn_protocols(alpn)
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(s, server_hostname=server_name):
            pass
    return (time.perf_counter() - t0) * 1000


def med_of(f, n=5):
    return statistics.median(f() for _ in range(n))


def floor_round(env, primary, remote, rpc):
    """One measurement of the floor's requests (each the median of 5); rpc = meshtrace's rpc_ms."""
    ns = "istio-system"
    pod = med_of(lambda: remote.call("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=istio%3Deastwestgateway")[0])
    tr = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
          "spec": {"audiences": ["istio-ca"], "expirationSeconds": 600}}
    token_ms, ans = remote.call("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/istio-eastwestgateway-service-account/token", tr)
    token_ms = min(token_ms, med_of(lambda: remote.call("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/istio-eastwestgateway-service-account/token", tr)[0]))
    gw_token = ans["status"]["token"]  # kept in memory only, never printed
    slice_ms = med_of(lambda: remote.call("GET", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Distiod")[0])
    root = open(env["TB_MESH_ROOT_CERT"]).read()
    lb = env.get("TB_SLICE_ADDR") or env["ISTIOD_ADDR"].rsplit(":", 1)[0]
    istiod_hs = med_of(lambda: tls_handshake_ms(lb, 15012, ssl.create_default_context(cadata=root),
                                                env["ISTIOD_SERVER_NAME"], ["h2"]))
    secrets = med_of(lambda: primary.call("GET", f"/api/v1/namespaces/{ns}/secrets?labelSelector=istio%2FmultiCluster%3Dtrue")[0])
    remote_hs = med_of(remote.handshake_ms)
    ssr = med_of(lambda: remote.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                     {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})[0])
    ssar = med_of(lambda: remote.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                      {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                       "spec": {"resourceAttributes": {"group": "authentication.k8s.io", "resource": "tokenreviews", "verb": "create"}}})[0])
    review = med_of(lambda: remote.call("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                         "spec": {"token": gw_token, "audiences": ["istio-ca"]}})[0])
    gateway = pod + max(token_ms, slice_ms + istiod_hs) + max(rpc["csr"], rpc["xds"])
    istiod = max(secrets + remote_hs + ssr + ssar, pod + token_ms) + review
    parts = {"GET pod": pod, "TokenRequest": token_ms, "GET EndpointSlice": slice_ms,
             "TLS istiod (LB)": istiod_hs, "CreateCertificate (rpc_ms)": rpc["csr"], "xDS (rpc_ms)": rpc["xds"],
             "LIST remote secrets": secrets, "TLS remote API": remote_hs, "SelfSubjectReview": ssr,
             "SelfSubjectAccessReview": ssar, "TokenReview": review}
    return max(gateway, istiod), parts


def main():
    env = load_env()
    deps = waits_for()
    kc = env["MESHTRACE_TESTBED_KUBECONFIG"]
    raw = json.loads(subprocess.run(["kubectl", "--kubeconfig", kc, "config", "view", "--raw", "-o", "json"],
                                    capture_output=True, check=True, text=True).stdout)
    by = lambda kind, name: next(x[kind[:-1]] for x in raw[kind] if x["name"] == name)
    ctxs = {c["name"]: c["context"] for c in raw["contexts"]}
    api = lambda c: Api(by("clusters", ctxs[c]["cluster"]), by("users", ctxs[c]["user"]))
    primary, remote = api(env["TB_PRIMARY_CONTEXT"]), api(env["TB_REMOTE_CONTEXT"])
    trace = [BIN, "--kubeconfig", kc, "--primary", env["TB_PRIMARY_CONTEXT"],
             "--remote", env["TB_REMOTE_CONTEXT"], "-o", "json"]
    runbook = [os.path.join(HERE, "runbook.sh"), "-q"]
    # Warm up: page cache, the API servers' and istiod's first-request costs.
    timed(trace)
    timed(runbook)
    walls, books, crit, floors, paths, parts_all = [], [], [], [], [], []
    servers, own = [], []
    pids = server_pids()
    for r in range(ROUNDS):
        s0, c0 = cpu_ms(pids), child_cpu_ms()
        w, out = timed(trace)
        servers.append(cpu_ms(pids) - s0)
        own.append(child_cpu_ms() - c0)
        report = json.loads(out)
        if report.get("first_failure"):
            sys.exit(f"the trace failed at {report['first_failure']}")
        b, _ = timed(runbook)
        path, length = critical_path(report, deps)
        ev = {s["id"]: s["evidence"] for s in report["steps"]}
        rpc = {k: float(ev[k]["rpc_ms"]) for k in ("csr", "xds")}
        fl, parts = floor_round(env, primary, remote, rpc)
        walls.append(w * 1000)
        books.append(b * 1000)
        crit.append(length)
        floors.append(fl)
        paths.append(" -> ".join(path))
        parts_all.append(parts)
        print(f"round {r + 1}: meshtrace {w * 1000:.0f} ms, runbook {b * 1000:.0f} ms, "
              f"critical path {length:.1f} ms, floor {fl:.1f} ms", file=sys.stderr)
    m, rb, c, f = (statistics.median(x) for x in (walls, books, crit, floors))
    common = max(set(paths), key=paths.count)
    print(f"binary: {BIN}; test bed {STATE} (network hosts: {env.get('TB_NETNS', '0') == '1'}); "
          f"{ROUNDS} rounds; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    print("| measure | median |")
    print("|---|---|")
    print(f"| meshtrace, process start to exit | {m:.1f} ms |")
    print(f"| manual runbook (tests/bench/runbook.sh) | {rb:.0f} ms |")
    print(f"| runbook / meshtrace (target >= 40) | {rb / m:.1f}x |")
    print(f"| critical path (the last step's end) | {c:.1f} ms |")
    print(f"| round-trip floor | {f:.1f} ms |")
    print(f"| critical path / floor (target <= 1.2) | {c / f:.2f} |")
    print(f"| process time outside the trace | {m - c:.1f} ms |")
    sv, ow = statistics.mean(servers), statistics.mean(own)
    cores = os.cpu_count() or 1
    print(f"| CPU of the bed's servers per trace (mean; clock ticks of {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms) | {sv:.1f} ms |")
    print(f"| CPU of meshtrace per trace (mean) | {ow:.1f} ms |")
    print(f"| CPU bound: (servers + meshtrace) / {cores} cores | {(sv + ow) / cores:.1f} ms |")
    print(f"critical path ({paths.count(common)} of {ROUNDS} rounds): {common}")
    print("floor requests (median ms): " + ", ".join(
        f"{k} {statistics.median(p[k] for p in parts_all):.1f}" for k in parts_all[0]))


if __name__ == "__main__":
    main()
