#!/usr/bin/env python3
"""Wall time and peak RSS of the meshtrace binary against hostile API servers.

Serves, on 127.0.0.1 over TLS, an "API server" per case (huge body, endless
body, trickle, 20 MB error, echo of the Authorization header, login page,
429), points a kubeconfig's remote context at it (primary: a `meshtrace lab
serve`), runs `meshtrace ... -o json --timeout 3s` under /usr/bin/time
(RUNS times, default 3: the median wall time, the largest peak RSS), and
prints a Markdown table: wall time against the timeout, peak RSS, the
report's size, and whether the planted token appears in stdout or stderr.
Given a second binary (an earlier build), both run side by side, case by
case. Needs python3, openssl and built binaries:

    cargo build --release && tests/bench/hostile-peers.py target/release/meshtrace [OLD_BINARY]
"""
import base64, json, os, re, socket, ssl, statistics, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BINS = sys.argv[1:] or ["target/release/meshtrace"]
RUNS = int(os.environ.get("RUNS", "3"))
TOKEN = ("eyJhbGciOiJSUzI1NiIsImtpZCI6InBsYW50ZWQifQ.eyJzdWIiOiJwbGFudGVkIn0."
         "UExBTlRFRC1TSUdOQVRVUkUtbXVzdC1uZXZlci1sZWFr")
TIMEOUT = 3.0


def case_huge(h):  # 2 GiB announced and sent as fast as the client reads
    h.send_response(200); h.send_header("content-type", "application/json")
    h.send_header("content-length", str(2 << 30)); h.end_headers()
    chunk = b"a" * (1 << 20)
    for _ in range(2048):
        h.wfile.write(chunk)


def case_endless(h):
    h.send_response(200); h.send_header("content-type", "application/json")
    h.send_header("transfer-encoding", "chunked"); h.end_headers()
    chunk = b"a" * (64 << 10)
    while True:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def case_trickle(h):
    h.send_response(200); h.send_header("content-type", "application/json")
    h.send_header("transfer-encoding", "chunked"); h.end_headers()
    while True:
        h.wfile.write(b"1\r\na\r\n"); h.wfile.flush(); time.sleep(0.2)


def case_error20(h):
    body = b"x" * (20 << 20)
    h.send_response(500); h.send_header("content-type", "text/plain")
    h.send_header("content-length", str(len(body))); h.end_headers(); h.wfile.write(body)


def case_echo(h):
    msg = "echo: Authorization: %s \x1b]0;pwned\x07\x1b[2J" % h.headers.get("authorization", "")
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": msg, "code": 500}).encode()
    h.send_response(500); h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(body))); h.end_headers(); h.wfile.write(body)


def case_login(h):
    body = b"<!DOCTYPE html><html><head><title>Sign in</title></head></html>"
    h.send_response(200); h.send_header("content-type", "text/html")
    h.send_header("content-length", str(len(body))); h.end_headers(); h.wfile.write(body)


def case_busy(h):
    body = json.dumps({"kind": "Status", "message": "slow down", "code": 429}).encode()
    h.send_response(429); h.send_header("retry-after", "5"); h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(body))); h.end_headers(); h.wfile.write(body)


CASES = [("2 GiB body", case_huge), ("endless chunked body", case_endless),
         ("trickle, 1 byte / 200 ms", case_trickle), ("20 MB error body", case_error20),
         ("echoes Authorization + escapes", case_echo), ("HTML login page", case_login),
         ("429 Retry-After", case_busy)]


def serve(handler_fn, certfile, keyfile):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def handle_one(self):
            try:
                handler_fn(self)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                pass
        do_GET = do_POST = handle_one
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(certfile, keyfile)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    tmp = tempfile.mkdtemp()
    cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    cacert, cakey = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "ca.key")
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", cakey, "-out", cacert, "-days", "1", "-subj", "/CN=hostile CA")
    csr = os.path.join(tmp, "c.csr")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=hostile")
    ext = os.path.join(tmp, "ext")
    open(ext, "w").write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", cacert, "-CAkey", cakey, "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", ext)
    lab_kc = os.path.join(tmp, "lab.yaml")
    lab = subprocess.Popen([BINS[0], "lab", "serve", "--kubeconfig-out", lab_kc],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    while not os.path.exists(lab_kc) or "lab-remote" not in open(lab_kc).read():
        time.sleep(0.05)
    ca = base64.b64encode(open(cacert, "rb").read()).decode()
    names = ["this build"] + (["earlier build"] if len(BINS) > 1 else [])
    print("| hostile remote API server | " + " | ".join(
        f"{n}: wall (--timeout 3s) | {n}: peak RSS | {n}: report bytes | {n}: token shown" for n in names) + " |")
    print("|---|" + "---|---|---|---|" * len(BINS))
    try:
        for name, fn in CASES:
            srv = serve(fn, cert, key)
            url = "https://127.0.0.1:%d" % srv.server_address[1]
            kc = os.path.join(tmp, "kc.yaml")
            with open(kc, "w") as f:
                f.write(f"""apiVersion: v1
kind: Config
clusters:
- name: hostile
  cluster: {{server: "{url}", certificate-authority-data: {ca}}}
contexts:
- name: hostile
  context: {{cluster: hostile, user: hostile}}
users:
- name: hostile
  user: {{token: {TOKEN}}}
""")
            cells = []
            for binary in BINS:
                walls, rsss, size, leaked = [], [], 0, False
                for _ in range(RUNS):
                    t0 = time.monotonic()
                    p = subprocess.run(["/usr/bin/time", "-f", "RSS=%M", binary, "--kubeconfig", lab_kc,
                                        "--kubeconfig", kc, "--primary", "lab-primary", "--remote", "hostile",
                                        "-o", "json", "--timeout", "%ds" % TIMEOUT],
                                       capture_output=True, text=True, timeout=300)
                    walls.append(time.monotonic() - t0)
                    rsss.append(int(re.search(r"RSS=(\d+)", p.stderr).group(1)) / 1024)
                    size = len(p.stdout)
                    leaked |= TOKEN in p.stdout + p.stderr or TOKEN.rsplit(".", 1)[1] in p.stdout + p.stderr
                    if os.environ.get("DEBUG"):
                        print(json.loads(p.stdout)["steps"][0].get("diagnosis", "")[:300], file=sys.stderr)
                cells.append(f"{statistics.median(walls):.2f} s | {max(rsss):.1f} MB | {size} | {'YES' if leaked else 'no'}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
            srv.shutdown()
    finally:
        lab.terminate(); lab.wait()


if __name__ == "__main__":
    main()
