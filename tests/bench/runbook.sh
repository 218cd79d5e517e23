#!/usr/bin/env bash
# The manual runbook: what an on-call engineer runs, by hand, to check what meshtrace checks for one
# remote's gateway authenticating to the primary istiod. It is the baseline tests/bench/testbed.py
# times meshtrace against, so it runs the same checks with kubectl, openssl and (when built, see
# tests/bench/build-grpcurl) grpcurl, one after another as a person would paste them.
#
#   tests/bench/runbook.sh [--kubeconfig PATH] [--primary CTX] [--remote CTX] [-q]
#
# Defaults come from the test bed's env file ($MESHTRACE_TESTBED_STATE/env, else
# /tmp/meshtrace-testbed/env) when it exists. Uses `kubectl` from PATH (the bed's: PATH=$(dirname
# $TB_KUBECTL):$PATH) and `grpcurl` from PATH or $GRPCURL. Exits 0 when every check passes, 1 on the
# first that fails (naming it), 2 on bad arguments. Never prints a token or a private key: both live
# in a private temp dir removed on exit.
#
# Not covered, and why: istiod's own view of its clusters (`istioctl remote-clusters` finds no istiod
# outside a cluster; /debug/clusterz answers only on istiod's loopback) and the xDS stream (grpcurl
# would need Envoy's .proto files, which no Go module in the cache ships).
set -euo pipefail

STATE=${MESHTRACE_TESTBED_STATE:-/tmp/meshtrace-testbed}
if [[ -f $STATE/env ]]; then
  set -a; . "$STATE/env"; set +a
fi
KC=${MESHTRACE_TESTBED_KUBECONFIG:-${KUBECONFIG:-$HOME/.kube/config}}
P=${TB_PRIMARY_CONTEXT:-}
R=${TB_REMOTE_CONTEXT:-}
NS=istio-system
QUIET=0
while (($#)); do
  case $1 in
    --kubeconfig) KC=${2:?--kubeconfig needs a path}; shift 2 ;;
    --primary) P=${2:?--primary needs a context}; shift 2 ;;
    --remote) R=${2:?--remote needs a context}; shift 2 ;;
    -q) QUIET=1; shift ;;
    *) echo "runbook.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -n $P && -n $R ]] || { echo "runbook.sh: give --primary CTX and --remote CTX (no test bed env found)" >&2; exit 2; }
[[ -r $KC ]] || { echo "runbook.sh: kubeconfig '$KC' is not readable" >&2; exit 2; }
CACHE=${MESHTRACE_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshtrace-testbed}
GRPCURL=${GRPCURL:-$(command -v grpcurl || ls "$CACHE"/bin/grpcurl-*/grpcurl 2>/dev/null | tail -1 || true)}

T=$(mktemp -d "${TMPDIR:-/tmp}/meshtrace-runbook.XXXXXX")
chmod 700 "$T"
trap 'rm -rf "$T"' EXIT
umask 077

# A command that fails names the check it was part of (the number of the comment above it).
check=start
trap 'printf "FAIL  %s: a command failed (its error is above)\n" "$check" >&2' ERR
ok() { ((QUIET)) || printf 'ok    %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }
k() { local ctx=$1; shift; kubectl --kubeconfig "$KC" --context "$ctx" -n "$NS" "$@"; }
# The remote secret's kubeconfig, as istiod uses it.
ks() { kubectl --kubeconfig "$T/secret.kubeconfig" "$@"; }
# host:port of an https:// URL.
hostport() { local u=${1#https://}; u=${u%%/*}; [[ $u == *:* ]] || u=$u:443; echo "$u"; }
# openssl s_client's verdict: "Verify return code: 0 (ok)" or the reason.
tls_check() { # tls_check HOST:PORT CAFILE NAME [extra s_client args]
  local addr=$1 ca=$2 name=$3; shift 3
  local vflag=(-verify_hostname "$name")
  [[ $name =~ ^[0-9.]+$ ]] && vflag=(-verify_ip "$name")
  openssl s_client -connect "$addr" -CAfile "$ca" -verify_return_error "${vflag[@]}" "$@" \
    </dev/null 2>&1 | grep -a -m1 'Verify return code' || true
}

check=step-1
# 1. The gateway pod and the identity settings its agent reads.
pod=$(k "$R" get pods -l istio=eastwestgateway -o jsonpath='{.items[*].metadata.name}')
pod=${pod%% *}
[[ -n $pod ]] || fail "gateway-pod: no pod labelled istio=eastwestgateway in $R/$NS"
k "$R" get pod "$pod" -o json >"$T/pod.json"
envv() { jq -r --arg n "$1" '[.spec.containers[].env[]? | select(.name==$n) | .value][0] // empty' "$T/pod.json"; }
cid=$(envv ISTIO_META_CLUSTER_ID)
ca_addr=$(envv CA_ADDR)
net=$(envv ISTIO_META_NETWORK)
sa=$(jq -r '.spec.serviceAccountName' "$T/pod.json")
aud=$(jq -r '[.spec.volumes[]?.projected.sources[]?.serviceAccountToken.audience // empty][0] // "istio-ca"' "$T/pod.json")
[[ -n $cid && -n $ca_addr ]] || fail "gateway-pod: $pod has no ISTIO_META_CLUSTER_ID or CA_ADDR"
ok "gateway-pod: $pod, cluster ID $cid, CA_ADDR $ca_addr, SA $sa, token audience $aud"

check=step-2
# 2. istiod's Deployment and mesh config in the primary.
k "$P" get deploy -l app=istiod -o json >"$T/istiod.json"
rev=$(jq -r '.items[0].metadata.labels["istio.io/rev"] // "default"' "$T/istiod.json")
[[ $(jq '.items | length' "$T/istiod.json") -ge 1 ]] || fail "control-plane: no istiod Deployment in $P/$NS"
td=$(k "$P" get configmap istio -o jsonpath='{.data.mesh}' | sed -n 's/^ *trustDomain: *//p')
td=${td:-cluster.local}
ok "control-plane: istiod revision $rev, trust domain $td"

check=step-3
# 3. The remote secret whose data key is the cluster ID.
k "$P" get secrets -l istio/multiCluster=true -o json >"$T/secrets.json"
secret=$(jq -r --arg c "$cid" '[.items[] | select(.data[$c] != null) | .metadata.name][0] // empty' "$T/secrets.json")
[[ -n $secret ]] || fail "remote-secret: no Secret labelled istio/multiCluster=true in $P/$NS has key '$cid'"
jq -r --arg s "$secret" --arg c "$cid" '.items[] | select(.metadata.name==$s) | .data[$c]' "$T/secrets.json" |
  base64 -d >"$T/secret.kubeconfig"
ok "remote-secret: $secret, key $cid"

check=step-4
# 4. Its kubeconfig is one istiod loads: inline data, no exec, no file paths.
ks config view --raw -o json >"$T/secret.json"
bad=$(jq -r '[.users[].user | (.exec, .["auth-provider"], .tokenFile, .["client-certificate"], .["client-key"]) | select(. != null)] | length' "$T/secret.json")
[[ $bad == 0 ]] || fail "remote-kubeconfig: the secret's kubeconfig uses exec, an auth provider or file paths"
server=$(ks config view --minify -o jsonpath='{.clusters[0].cluster.server}')
want=$(kubectl --kubeconfig "$KC" config view --minify --context "$R" -o jsonpath='{.clusters[0].cluster.server}')
[[ $server == "$want" ]] || fail "remote-kubeconfig: secret's server $server is not $R's $want"
ok "remote-kubeconfig: server $server matches context $R"

check=step-5
# 5. The remote API server, verified with the secret's own CA data.
ks config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$T/secret-ca.pem"
addr=$(hostport "$server")
v=$(tls_check "$addr" "$T/secret-ca.pem" "${addr%:*}")
[[ $v == *"0 (ok)"* ]] || fail "remote-api-tls: $addr with the secret's CA: ${v:-no handshake}"
ok "remote-api-tls: $addr verified with the secret's CA data"

check=step-6
# 6. The secret's credential authenticates, 7. and may create TokenReviews.
who=$(ks auth whoami -o jsonpath='{.status.userInfo.username}') || fail "remote-identity: the secret's credential is refused"
ok "remote-identity: $who"
[[ $(ks auth can-i create tokenreviews.authentication.k8s.io 2>/dev/null || true) == yes ]] ||
  fail "remote-rbac: $who may not create tokenreviews"
ok "remote-rbac: $who may create tokenreviews"

check=step-8
# 8. CA_ADDR resolves to the remote's selector-less istiod Service and its EndpointSlice.
svc=${ca_addr%%.*}
k "$R" get service "$svc" -o json >"$T/svc.json" || fail "remote-istiod-endpoint: no Service $svc in $R/$NS"
[[ $(jq -r '.spec.selector // {} | length' "$T/svc.json") == 0 ]] || fail "remote-istiod-endpoint: Service $svc has a selector"
ep=$(k "$R" get endpointslices -l "kubernetes.io/service-name=$svc" \
  -o jsonpath='{.items[0].endpoints[0].addresses[0]}')
[[ -n $ep ]] || fail "remote-istiod-endpoint: no EndpointSlice address for $svc"
ok "remote-istiod-endpoint: $svc -> $ep"

check=step-9
# 9. The primary exposes istiod there (east-west gateway or LoadBalancer Service, 15012).
lb=$(k "$P" get services -o json | jq -r --arg ep "$ep" \
  '[.items[] | select(.status.loadBalancer.ingress[]?.ip == $ep) | select(any(.spec.ports[]; .port == 15012)) | .metadata.name][0] // empty')
[[ -n $lb ]] || fail "istiod-exposure: no LoadBalancer Service in $P/$NS holds $ep with port 15012"
ok "istiod-exposure: Service $lb at $ep:15012"

check=step-10
# 10. A token for the gateway's ServiceAccount, as the kubelet projects it.
k "$R" create token "$sa" --audience "$aud" --bound-object-kind Pod --bound-object-name "$pod" \
  --duration 10m >"$T/token" || fail "gateway-token: TokenRequest for $sa refused"
ok "gateway-token: TokenRequest for $sa (audience $aud; not printed)"

check=step-11
# 11. TokenReview as istiod runs it: with the remote secret's credentials.
jq -n --rawfile t "$T/token" --arg a "$aud" \
  '{apiVersion:"authentication.k8s.io/v1",kind:"TokenReview",spec:{token:($t|rtrimstr("\n")),audiences:[$a]}}' >"$T/tr.json"
res=$(ks create -f "$T/tr.json" -o jsonpath='{.status.authenticated} {.status.user.username} {.status.error}')
[[ $res == "true system:serviceaccount:$NS:$sa"* ]] || fail "token-review: $res"
ok "token-review: authenticated as ${res#true }"

check=step-12
# 12. One root of trust: the remote's istio-ca-root-cert is the primary CA's root.
k "$R" get configmap istio-ca-root-cert -o jsonpath='{.data.root-cert\.pem}' >"$T/remote-root.pem"
k "$P" get secret cacerts -o jsonpath='{.data.root-cert\.pem}' | base64 -d >"$T/primary-root.pem"
a=$(openssl x509 -in "$T/remote-root.pem" -noout -fingerprint -sha256)
b=$(openssl x509 -in "$T/primary-root.pem" -noout -fingerprint -sha256)
[[ $a == "$b" ]] || fail "root-of-trust: remote's istio-ca-root-cert ($a) is not cacerts' root ($b)"
ok "root-of-trust: ${a#*=}"

check=step-13
# 13. istiod on 15012, verified with the remote's root for CA_ADDR's host.
host=${ca_addr%:*}
port=${ca_addr##*:}
[[ $port == "$ca_addr" ]] && port=15012
v=$(tls_check "$ep:$port" "$T/remote-root.pem" "$host" -servername "$host" -alpn h2)
[[ $v == *"0 (ok)"* ]] || fail "istiod-tls: $ep:$port as $host: ${v:-no handshake}"
ok "istiod-tls: $ep:$port verified as $host"

check=step-14
# 14. The remote's injection webhook: the API server calls istiod on 15017 and gets a patch.
wh=$(kubectl --kubeconfig "$KC" --context "$R" get mutatingwebhookconfigurations -o json |
  jq -r '[.items[] | select(any(.webhooks[]; .name | test("sidecar-injector"))) | .metadata.name][0] // empty')
[[ -n $wh ]] || fail "injection-webhook: no sidecar injector MutatingWebhookConfiguration in $R"
cat >"$T/probe-pod.json" <<EOF
{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"meshtrace-runbook-","namespace":"$NS",
 "labels":{"istio.io/rev":"$rev","sidecar.istio.io/inject":"true"}},
 "spec":{"serviceAccountName":"default","containers":[{"name":"app","image":"busybox"}]}}
EOF
names=$(kubectl --kubeconfig "$KC" --context "$R" create --dry-run=server -f "$T/probe-pod.json" \
  -o jsonpath='{.spec.containers[*].name} {.spec.initContainers[*].name}') ||
  fail "injection-webhook: the dry-run pod was refused"
[[ " $names " == *" istio-proxy "* ]] || fail "injection-webhook: $wh did not inject istio-proxy (containers: $names)"
ok "injection-webhook: $wh injects istio-proxy"

check=step-15
# 15. CreateCertificate as the gateway, through CA_ADDR's endpoint (grpcurl).
if [[ -n $GRPCURL ]]; then
  protos=${ISTIO_API_PROTOS:-$(ls -d "$(go env GOMODCACHE 2>/dev/null)"/istio.io/api@*/ 2>/dev/null | tail -1)}
  [[ -f $protos/security/v1alpha1/ca.proto ]] || fail "csr: no istio.io/api protos (set ISTIO_API_PROTOS)"
  spiffe="spiffe://$td/ns/$NS/sa/$sa"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/key.pem" \
    -subj "/O=meshtrace-runbook" -addext "subjectAltName=URI:$spiffe" -out "$T/csr.pem" 2>/dev/null
  jq -n --rawfile c "$T/csr.pem" '{csr:$c, validity_duration:3600}' >"$T/csr.json"
  # The token reaches grpcurl through its environment (-expand-headers), never its command line.
  MT_TOKEN=$(<"$T/token") "$GRPCURL" -import-path "$protos" -proto security/v1alpha1/ca.proto \
    -cacert "$T/remote-root.pem" -servername "$host" -authority "$host" \
    -expand-headers -H 'authorization: Bearer ${MT_TOKEN}' \
    -H "clusterid: $cid" -d @ "$ep:$port" istio.v1.auth.IstioCertificateService/CreateCertificate \
    <"$T/csr.json" >"$T/resp.json" 2>"$T/grpc.err" ||
    fail "csr: $(sed 's/Bearer [^ ]*/Bearer <token>/' "$T/grpc.err" | head -3)"
  jq -r '.certChain[]' "$T/resp.json" >"$T/chain.pem"
  ok "csr: istiod signed ($(jq '.certChain | length' "$T/resp.json") certificates)"
  # 16. The issued chain verifies to the remote's root, with the right SPIFFE ID.
  jq -r '.certChain[0]' "$T/resp.json" >"$T/leaf.pem"
  jq -r '.certChain[1:-1][]' "$T/resp.json" >"$T/inter.pem"
  openssl verify -CAfile "$T/remote-root.pem" -untrusted "$T/inter.pem" "$T/leaf.pem" >/dev/null ||
    fail "issued-chain: the leaf does not verify to the remote's root"
  san=$(openssl x509 -in "$T/leaf.pem" -noout -ext subjectAltName | tail -1 | sed 's/^ *URI://')
  [[ $san == "$spiffe" ]] || fail "issued-chain: leaf SAN $san, want $spiffe"
  ok "issued-chain: verifies to the root, $san"
else
  ok "csr: skipped (no grpcurl; tests/bench/build-grpcurl builds one)"
fi

check=step-17
# 17. Network labels agree: namespace, gateway Service, ISTIO_META_NETWORK.
nsnet=$(kubectl --kubeconfig "$KC" --context "$R" get namespace "$NS" -o jsonpath='{.metadata.labels.topology\.istio\.io/network}')
gwnet=$(k "$R" get services -l istio=eastwestgateway -o jsonpath='{.items[0].metadata.labels.topology\.istio\.io/network}')
[[ $nsnet == "$net" && $gwnet == "$net" ]] ||
  fail "network-labels: namespace '$nsnet', gateway Service '$gwnet', ISTIO_META_NETWORK '$net'"
ok "network-labels: $net"
