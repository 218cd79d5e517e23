# Shared by build, up, down, csrcheck-run. Source it; it defines paths only.
TESTBED_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$TESTBED_DIR/versions.env"
TB_CACHE="${MESHTRACE_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshtrace-testbed}"
TB_STATE="${MESHTRACE_TESTBED_STATE:-/tmp/meshtrace-testbed}"
ETCD_BIN_DIR="$TB_CACHE/bin/etcd-$ETCD_VERSION"
K8S_BIN_DIR="$TB_CACHE/bin/kubernetes-$K8S_VERSION"
ISTIO_BIN_DIR="$TB_CACHE/bin/istio-$ISTIO_VERSION"
# csrcheck is keyed by its own source and the istio version
tb_csrcheck_key() {
  { cat "$TESTBED_DIR"/csrcheck/go.mod "$TESTBED_DIR"/csrcheck/go.sum "$TESTBED_DIR"/csrcheck/*.go 2>/dev/null || true; } |
    sha256sum | cut -c1-12
}
CSRCHECK_BIN_DIR="$TB_CACHE/bin/csrcheck-$(tb_csrcheck_key)"
ETCD="$ETCD_BIN_DIR/etcd"
KUBE_APISERVER="$K8S_BIN_DIR/kube-apiserver"
KUBE_CONTROLLER_MANAGER="$K8S_BIN_DIR/kube-controller-manager"
KUBECTL="$K8S_BIN_DIR/kubectl"
PILOT_DISCOVERY="$ISTIO_BIN_DIR/pilot-discovery"
ISTIOCTL="$ISTIO_BIN_DIR/istioctl"
PILOT_AGENT="$ISTIO_BIN_DIR/pilot-agent"
CSRCHECK="$CSRCHECK_BIN_DIR/csrcheck"
tb_log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ profiles (docs/profiles.md)
# One shape of a healthy primary-remote mesh each. tb_profile NAME sets the TBP_* variables that
# up, restart-istiod and the istiod spec below read; everything not set keeps the default's names.
TB_PROFILES=(default revision no-ca-addr cert-manager-ca audiences trust-domain external-istiod)
tb_profile_summary() {
  case $1 in
    default) echo "istiod revision default, CA_ADDR=istiod.istio-system.svc:15012, plug-in CA in the *.pem form" ;;
    revision) echo "istiod revision canary (Deployment istiod-canary, ConfigMap istio-canary, REVISION=canary); remote Service istiod-canary; gateway istio.io/rev=canary, CA_ADDR=istiod-canary.istio-system.svc:15012" ;;
    no-ca-addr) echo "gateway without CA_ADDR, PROXY_CONFIG discoveryAddress istiod-remote.istio-system.svc:15012; remote Service istiod-remote" ;;
    cert-manager-ca) echo "cacerts in cert-manager's kubernetes.io/tls form (tls.crt, tls.key, ca.crt), the same files in ROOT_CA_DIR" ;;
    audiences) echo "istiod TOKEN_AUDIENCES=istio-ca,mesh.example; the gateway's istio-token has audience mesh.example" ;;
    trust-domain) echo "mesh config trustDomain mesh.example (aliases: cluster.local); gateway TRUST_DOMAIN=mesh.example" ;;
    external-istiod) echo "gateway CA_ADDR=istiod.mesh-external.test:15012, CA_ROOT_CA=SYSTEM, XDS_ROOT_CA=SYSTEM; the load balancer terminates a public CA's certificate for that name in front of istiod (network hosts only); no istiod Service in the remote" ;;
    *) return 1 ;;
  esac
}
tb_profile() {
  tb_profile_summary "$1" >/dev/null || { tb_log "unknown profile \"$1\" (known: ${TB_PROFILES[*]})"; return 1; }
  TBP_NAME=$1
  TBP_REVISION=default           # istiod's REVISION, its Deployment's istio.io/rev
  TBP_ISTIOD=istiod              # the primary's istiod Deployment
  TBP_MESH_CM=istio              # the primary's mesh config ConfigMap
  TBP_TRUST_DOMAIN=cluster.local
  TBP_TD_ALIASES=""              # space-separated trustDomainAliases
  TBP_DISCOVERY=istiod.istio-system.svc:15012 # mesh config defaultConfig.discoveryAddress
  TBP_REMOTE_SVC=istiod          # the remote's selector-less istiod Service ("" = none)
  TBP_GW_CA_ADDR=istiod.istio-system.svc:15012 # "" = no CA_ADDR
  TBP_GW_PROXY_CONFIG=""         # the gateway's PROXY_CONFIG env ("" = the mesh config's, as the injector writes it)
  TBP_GW_REV=""                  # the gateway pod's istio.io/rev label ("" = none)
  TBP_GW_ROOT_SYSTEM=0           # 1: CA_ROOT_CA=SYSTEM, XDS_ROOT_CA=SYSTEM
  TBP_GW_AUDIENCE=istio-ca       # the gateway's projected istio-token audience
  TBP_SERVER_NAME=istiod.istio-system.svc # what the gateway verifies istiod's certificate for
  TBP_TOKEN_AUDIENCES=""         # istiod's TOKEN_AUDIENCES ("" = unset: istio-ca)
  TBP_CACERTS=pem                # pem: ca-cert.pem ca-key.pem root-cert.pem cert-chain.pem; tls: tls.crt tls.key ca.crt
  TBP_PUBLIC_TLS=0               # 1: the load balancer serves 15012/15017 with a public CA's certificate (TLS terminated in front of istiod)
  case $1 in
    revision)
      TBP_REVISION=canary TBP_ISTIOD=istiod-canary TBP_MESH_CM=istio-canary
      TBP_DISCOVERY=istiod-canary.istio-system.svc:15012 TBP_REMOTE_SVC=istiod-canary
      TBP_GW_CA_ADDR=istiod-canary.istio-system.svc:15012 TBP_GW_REV=canary
      TBP_SERVER_NAME=istiod-canary.istio-system.svc ;;
    no-ca-addr)
      TBP_REMOTE_SVC=istiod-remote TBP_GW_CA_ADDR=""
      TBP_GW_PROXY_CONFIG='{"discoveryAddress":"istiod-remote.istio-system.svc:15012"}'
      TBP_SERVER_NAME=istiod-remote.istio-system.svc ;;
    cert-manager-ca) TBP_CACERTS=tls ;;
    audiences) TBP_TOKEN_AUDIENCES=istio-ca,mesh.example TBP_GW_AUDIENCE=mesh.example ;;
    trust-domain) TBP_TRUST_DOMAIN=mesh.example TBP_TD_ALIASES=cluster.local ;;
    external-istiod)
      TBP_DISCOVERY=istiod.mesh-external.test:15012 TBP_REMOTE_SVC=""
      TBP_GW_CA_ADDR=istiod.mesh-external.test:15012 TBP_GW_ROOT_SYSTEM=1
      TBP_SERVER_NAME=istiod.mesh-external.test TBP_PUBLIC_TLS=1 ;;
  esac
  # An external istiod's public TLS is terminated at the load balancer: network hosts only.
  TBP_NEEDS_NETNS=$TBP_PUBLIC_TLS
}
# The profile a test bed was started with (STATE/profile; default when absent).
tb_state_profile() { local p=default; [[ -f $1/profile ]] && p=$(<"$1/profile"); echo "${p:-default}"; }

# tb_mesh_config: the profile's mesh config YAML (istiod's --meshConfig file = ConfigMap key mesh).
tb_mesh_config() {
  printf 'trustDomain: %s\n' "$TBP_TRUST_DOMAIN"
  if [[ -n $TBP_TD_ALIASES ]]; then
    echo "trustDomainAliases:"
    local a; for a in $TBP_TD_ALIASES; do printf -- '- %s\n' "$a"; done
  fi
  printf 'defaultConfig:\n  discoveryAddress: %s\n' "$TBP_DISCOVERY"
}

# tb_threads_alive PID: some thread of PID is still running (not a zombie). A Go process exits
# thread by thread: its leader can be a zombie, with no exe link, while other threads still hold
# its listening sockets (CI saw a restarted istiod fail to bind), so the leader alone says nothing.
# Only for a pid we started and know is ours (a zombie's pid is not reused until it is reaped).
tb_threads_alive() {
  local st
  for st in /proc/"$1"/task/*/stat; do
    [[ -r $st ]] && [[ $(awk '{print $3}' "$st" 2>/dev/null) != [ZX] ]] && return 0
  done
  return 1
}

# tb_istiod_spec STATE: THE list of istiod's environment (ISTIOD_ENV, NAME=VALUE, one per name,
# later entries win) and command line (ISTIOD_ARGS, after the binary) for STATE's profile, the
# ports in STATE/istiod/ports.env, and the extras restart-istiod records (STATE/istiod/extra.env,
# extra.args). Both the process (tb_istiod_launch) and the primary's istiod Deployment
# (tb_istiod_deployment) are made from it, so they cannot diverge.
tb_istiod_spec() {
  local state=$1 kv extra=()
  tb_profile "$(tb_state_profile "$state")" || return 1
  # P_BIND: the address istiod listens on (0.0.0.0 on the primary's host in netns mode);
  # P_HOST: where it is reached; P_NETNS: the primary host's namespace ("" = loopback bed).
  P_BIND=127.0.0.1 P_HOST=127.0.0.1 P_NETNS=""
  # shellcheck disable=SC1091
  . "$state/istiod/ports.env"
  local env=(POD_NAMESPACE=istio-system "POD_NAME=$TBP_ISTIOD-testbed" "REVISION=$TBP_REVISION" CLUSTER_ID=primary
    EXTERNAL_ISTIOD=true PILOT_ENABLE_GATEWAY_API=false "ROOT_CA_DIR=$state/istiod/etc/cacerts"
    PILOT_CERT_PROVIDER=istiod JWT_POLICY=third-party-jwt)
  [[ -n $TBP_TOKEN_AUDIENCES ]] && env+=("TOKEN_AUDIENCES=$TBP_TOKEN_AUDIENCES")
  # Istio's external-control-plane guide: istiod does not manage the remote's webhooks, whose
  # caBundle is the public CA the load balancer's certificate chains to (istiod would patch in its
  # own root, which the load balancer does not serve).
  ((TBP_PUBLIC_TLS)) && env+=(INJECTION_WEBHOOK_CONFIG_NAME= VALIDATION_WEBHOOK_CONFIG_NAME=)
  # Extra environment (NAME=VALUE lines), written by restart-istiod NAME=VALUE...
  if [[ -f $state/istiod/extra.env ]]; then
    while IFS= read -r kv; do [[ -n $kv ]] && env+=("$kv"); done <"$state/istiod/extra.env"
  fi
  ISTIOD_ENV=()
  local i j name dup
  for ((i = 0; i < ${#env[@]}; i++)); do
    name=${env[i]%%=*} dup=0
    for ((j = i + 1; j < ${#env[@]}; j++)); do [[ ${env[j]%%=*} == "$name" ]] && dup=1; done
    ((dup)) || ISTIOD_ENV+=("${env[i]}")
  done
  ISTIOD_ARGS=(discovery
    --kubeconfig "$state/istiod/primary.kubeconfig" --clusterID primary
    --meshConfig "$state/istiod/etc/istio/config/mesh"
    --httpAddr "$P_BIND:$P_HTTP" --grpcAddr "$P_BIND:$P_GRPC" --secureGRPCAddr "$P_BIND:$P_SGRPC"
    --httpsAddr "$P_BIND:$P_HTTPS" --monitoringAddr "$P_BIND:$P_MON"
    --ctrlz_address "$P_BIND" --ctrlz_port "$P_CTRLZ" --domain cluster.local --shutdownDuration 1s)
  # (An external istiod keeps its own mesh-issued serving certificate: the public one is the load
  # balancer's, tb_lb_config. Given to istiod with --tlsCertFile/--caCertFile it would also write
  # that public CA into every istio-ca-root-cert, a mesh whose workloads could not verify each other.)
  # Extra flags (one per line), written by restart-istiod --flag=value...
  if [[ -f $state/istiod/extra.args ]]; then mapfile -t extra <"$state/istiod/extra.args"; fi
  ISTIOD_ARGS+=(${extra[@]+"${extra[@]}"})
}

# tb_istiod_launch STATE: start istiod (pilot-discovery) detached, out of cluster, from its own
# working dir, with tb_istiod_spec's environment and flags; append to STATE/logs/istiod.log (the
# e2e tests read it by offset); print its pid. Used by up and restart-istiod.
tb_istiod_launch() {
  local state=$1
  tb_istiod_spec "$state" || return 1
  (
    cd "$state/istiod"
    unset KUBECONFIG
    local kv
    for kv in "${ISTIOD_ENV[@]}"; do export "${kv?}"; done
    # `ip netns exec` execs in place: the pid is istiod's, /proc/PID/exe is pilot-discovery
    setsid ${P_NETNS:+ip netns exec "$P_NETNS"} "$PILOT_DISCOVERY" "${ISTIOD_ARGS[@]}" >>"$state/logs/istiod.log" 2>&1 </dev/null &
    echo $!
  )
}

# tb_json STRING: STRING as a JSON string.
tb_json() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}
# tb_json_list ITEMS...: a JSON list of strings.
tb_json_list() {
  local out="" x
  for x in "$@"; do out+="${out:+,}$(tb_json "$x")"; done
  printf '[%s]' "$out"
}

# tb_istiod_deployment STATE: the primary's istiod Deployment as JSON, from tb_istiod_spec: its
# container runs exactly the process's command line with exactly its environment, and mounts
# what the process reads (the cacerts Secret at ROOT_CA_DIR, the mesh config ConfigMap where
# --meshConfig points), on the host's network as the process is (it binds 127.0.0.1 and reaches
# both API servers at 127.0.0.1). No node runs it: the controller-manager makes a ReplicaSet and
# a Pending pod.
tb_istiod_deployment() {
  local state=$1 version=$2 kv env="" ports
  tb_istiod_spec "$state" || return 1
  for kv in "${ISTIOD_ENV[@]}"; do
    env+="${env:+,}{\"name\":$(tb_json "${kv%%=*}"),\"value\":$(tb_json "${kv#*=}")}"
  done
  ports="{\"name\":\"http-debug\",\"containerPort\":$P_HTTP,\"protocol\":\"TCP\"},"
  ports+="{\"name\":\"grpc-xds\",\"containerPort\":$P_GRPC,\"protocol\":\"TCP\"},"
  ports+="{\"name\":\"tls-xds\",\"containerPort\":$P_SGRPC,\"protocol\":\"TCP\"},"
  ports+="{\"name\":\"https-webhooks\",\"containerPort\":$P_HTTPS,\"protocol\":\"TCP\"},"
  ports+="{\"name\":\"http-monitoring\",\"containerPort\":$P_MON,\"protocol\":\"TCP\"}"
  local labels="{\"app\":\"istiod\",\"istio\":\"pilot\",\"istio.io/rev\":$(tb_json "$TBP_REVISION")}"
  cat <<JSON
{"apiVersion":"apps/v1","kind":"Deployment",
 "metadata":{"name":$(tb_json "$TBP_ISTIOD"),"namespace":"istio-system","labels":$labels},
 "spec":{"replicas":1,
  "selector":{"matchLabels":{"app":"istiod","istio.io/rev":$(tb_json "$TBP_REVISION")}},
  "template":{"metadata":{"labels":$labels},
   "spec":{"serviceAccountName":$(tb_json "$TBP_ISTIOD"),"hostNetwork":true,"dnsPolicy":"ClusterFirstWithHostNet",
    "containers":[{"name":"discovery","image":$(tb_json "docker.io/istio/pilot:$version"),
     "command":["pilot-discovery"],"args":$(tb_json_list "${ISTIOD_ARGS[@]}"),
     "env":[$env],"ports":[$ports],
     "volumeMounts":[{"name":"cacerts","mountPath":$(tb_json "$state/istiod/etc/cacerts"),"readOnly":true},
      {"name":"config-volume","mountPath":$(tb_json "$state/istiod/etc/istio/config")}]}],
    "volumes":[{"name":"cacerts","secret":{"secretName":"cacerts","optional":true}},
     {"name":"config-volume","configMap":{"name":$(tb_json "$TBP_MESH_CM")}}]}}}}
JSON
}

# tb_mesh_sync STATE: what a kubelet does for istiod's mesh config volume: watch the primary's
# mesh config ConfigMap and write its key `mesh` into the file istiod reads (--meshConfig) when
# it changes (a deleted ConfigMap leaves the file as it was). Runs until TERM.
tb_mesh_sync() {
  local state=$1
  tb_profile "$(tb_state_profile "$state")" || return 1
  local dir=$state/istiod/etc/istio/config
  local kc=("$KUBECTL" --kubeconfig "$state/kubeconfig" --context tb-primary -n istio-system)
  trap 'trap - TERM INT; kill 0 2>/dev/null; exit 0' TERM INT
  local rv
  while true; do
    while read -r rv; do
      [[ -n $rv ]] || continue
      if "${kc[@]}" get configmap "$TBP_MESH_CM" -o go-template='{{index .data "mesh"}}' >"$dir/.mesh.tmp" 2>/dev/null &&
        ! cmp -s "$dir/.mesh.tmp" "$dir/mesh"; then
        mv -f "$dir/.mesh.tmp" "$dir/mesh"
        tb_log "mesh-config-sync: ConfigMap $TBP_MESH_CM resourceVersion $rv written to $dir/mesh"
      fi
    done < <("${kc[@]}" get configmap "$TBP_MESH_CM" --watch -o 'jsonpath={.metadata.resourceVersion}{"\n"}')
    sleep 1
  done
}

# tb_istiod_remote_synced HTTP_PORT [NETNS]: istiod's /debug/clusterz says cluster "remote" is synced.
# Asked on 127.0.0.1 of istiod's host (in its namespace on the network hosts): istiod serves its
# debug endpoints on the HTTP port without authentication only to localhost (measured: from the
# operator host it logs "Failed to authenticate /debug/clusterz ... no client certificate").
tb_istiod_remote_synced() {
  # JSON [{"id":..,"secretName":..,"syncStatus":..}], maybe pretty-printed: flatten first
  ${2:+ip netns exec "$2"} curl -fsS "http://127.0.0.1:$1/debug/clusterz" | tr -d ' \n\t' |
    grep -Eq "\"id\":\"${3:-remote}\"[^}]*\"syncStatus\":\"synced\"|\"syncStatus\":\"synced\"[^}]*\"id\":\"${3:-remote}\""
}

# ------------------------------------------------------------------ network hosts (netns mode)
# As root, up puts the primary, the remote and a load balancer on hosts of their own: network
# namespaces on a bridge in the root namespace (the operator host), addresses 198.18.N.0/24
# (RFC 2544 benchmarking space: the test bed's own, routed nowhere). N and the names come from
# the state dir, so two test beds coexist. STATE/net.env records what up made; down removes
# exactly that (and, when net.env is gone, whatever carries STATE's names).

# tb_net_names STATE: TBN_* names of STATE's hosts (no addresses: those are in net.env).
tb_net_names() {
  local h; h=$(printf %s "$1" | sha256sum | cut -c1-6)
  TBN_HASH=$h
  TBN_PRIMARY_NS=mt$h-primary TBN_REMOTE_NS=mt$h-remote TBN_LB_NS=mt$h-lb
  TBN_BRIDGE=mt$h-br             # interface names: at most 15 characters
  TBN_VETHS=("mt$h-p" "mt$h-r" "mt$h-l")
}

# tb_net_env STATE: loads STATE/net.env (TB_NETNS=0 when there is none: the loopback bed).
tb_net_env() {
  TB_NETNS=0
  # shellcheck disable=SC1091
  [[ -f $1/net.env ]] && . "$1/net.env"
  return 0
}

# tb_netns_usable: root, iproute2, and the kernel lets us make a namespace (not in every container).
tb_netns_usable() {
  [[ $EUID == 0 ]] || { echo "not root"; return 1; }
  command -v ip >/dev/null || { echo "no ip (iproute2)"; return 1; }
  local probe="mtprobe$$" err
  if ! err=$(ip netns add "$probe" 2>&1); then echo "ip netns add failed: ${err//$'\n'/ }"; return 1; fi
  if ! err=$(ip netns exec "$probe" true 2>&1); then
    ip netns del "$probe" 2>/dev/null; echo "ip netns exec failed: ${err//$'\n'/ }"; return 1
  fi
  ip netns del "$probe"
}

# tb_net_up STATE: the bridge (the operator's .1), and one namespace per host with a veth on it:
# primary .2, remote .3, load balancer .4. Writes STATE/net.env.
tb_net_up() {
  local state=$1 n n0 tries=0
  tb_net_names "$state"
  n0=$((16#${TBN_HASH:0:2}))
  n=$n0
  # another bed (or anything) already on 198.18.N: take the next N
  while ip -4 -o addr show | grep -q " 198\.18\.$n\."; do
    n=$(((n + 1) % 256)); tries=$((tries + 1))
    ((tries < 256)) || { tb_log "no free 198.18.N.0/24"; return 1; }
  done
  local pfx=198.18.$n
  {
    echo "TB_NETNS=1"
    echo "TBN_SUBNET=$pfx.0/24"
    echo "TBN_OPERATOR=$pfx.1"
    echo "TBN_PRIMARY=$pfx.2"
    echo "TBN_REMOTE=$pfx.3"
    echo "TBN_LB=$pfx.4"
    echo "TBN_UNUSED=$pfx.250"   # nothing is given this address
    echo "TBN_PRIMARY_NS=$TBN_PRIMARY_NS"
    echo "TBN_REMOTE_NS=$TBN_REMOTE_NS"
    echo "TBN_LB_NS=$TBN_LB_NS"
    echo "TBN_BRIDGE=$TBN_BRIDGE"
  } >"$state/net.env"
  ip link add "$TBN_BRIDGE" type bridge
  ip addr add "$pfx.1/24" dev "$TBN_BRIDGE"
  ip link set "$TBN_BRIDGE" up
  local i ns veth host
  local nss=("$TBN_PRIMARY_NS" "$TBN_REMOTE_NS" "$TBN_LB_NS")
  for i in 0 1 2; do
    ns=${nss[i]} veth=${TBN_VETHS[i]} host=$pfx.$((i + 2))
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$TBN_BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$host/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}

# tb_net_down STATE: removes the namespaces (their veths and nftables tables go with them), the
# veths' root ends if any are left, and the bridge. Safe when nothing exists.
tb_net_down() {
  local state=$1 ns l
  tb_net_names "$state"
  command -v ip >/dev/null || return 0
  for ns in "$TBN_PRIMARY_NS" "$TBN_REMOTE_NS" "$TBN_LB_NS"; do
    if ip netns list 2>/dev/null | grep -qw "^$ns"; then
      # a process still in it (it should not be: down stopped them) keeps it alive: say so
      local left; left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
      [[ -z $left ]] || tb_log "namespace $ns still has processes: $left(killing them)"
      for l in $left; do kill -KILL "$l" 2>/dev/null || true; done
      ip netns del "$ns" && tb_log "removed network namespace $ns"
    fi
  done
  # the remote host's hosts file (up, external-istiod)
  for ns in "$TBN_PRIMARY_NS" "$TBN_REMOTE_NS" "$TBN_LB_NS"; do
    if [[ -d /etc/netns/$ns ]]; then rm -rf "/etc/netns/$ns" && tb_log "removed /etc/netns/$ns"; fi
  done
  for l in "${TBN_VETHS[@]}" "$TBN_BRIDGE"; do
    if ip link show "$l" >/dev/null 2>&1; then ip link del "$l" && tb_log "removed link $l"; fi
  done
}

# The load balancer: HAProxy in TCP mode (no TLS termination: istiod's TLS passes through, as an
# east-west gateway's PASSTHROUGH or a cloud TCP load balancer does), one frontend per port.
TB_LB_PORTS=(15012 15017)
# tb_lb_config STATE [PORT...]: HAProxy's config forwarding LB:PORT to the primary's istiod:PORT
# (default: TB_LB_PORTS) to stdout.
tb_lb_config() {
  local state=$1; shift
  tb_net_env "$state"
  local ports=("$@") p
  ((${#ports[@]})) || ports=("${TB_LB_PORTS[@]}")
  cat <<CFG
# written by tests/testbed (lb-reload rewrites it); HAProxy in TCP mode: passthrough, or TLS terminated for an external istiod
global
  maxconn 4096
  # a reload's old worker closes what it still carries after 1 s (else it serves old connections,
  # and a port taken out of the config keeps answering on them)
  hard-stop-after 1s
defaults
  mode tcp
  timeout connect 3s
CFG
  # An external control plane (Istio's external-istiod guide: the ingress gateway's Gateway with
  # tls SIMPLE and a public credentialName, a DestinationRule with tls SIMPLE to istiod) terminates
  # the public TLS here and opens TLS again to istiod, verified with the mesh root for istiod's
  # Service name. ALPN per port as the callers speak: gRPC is h2, the webhook client HTTP/1.1.
  local front=$state/pki/public/front.pem mesh_root=$state/pki/istio/root-cert.pem bind_tls server_tls
  for p in "${ports[@]}"; do
    # 15012: xDS and CA streams are long-lived. 15017: the API server's webhook client keeps an
    # idle keep-alive connection and dials the Service's address again only once it is closed
    # (measured: after the slice changed it kept calling the old address); idle 5 s, as a cloud
    # load balancer's idle timeout closes it (theirs: minutes).
    local idle=1h alpn=h2
    [[ $p == 15017 ]] && idle=5s alpn=http/1.1
    bind_tls="" server_tls=""
    if [[ -f $front ]]; then
      bind_tls=" ssl crt $front alpn $alpn"
      server_tls=" ssl verify required ca-file $mesh_root sni str(istiod.istio-system.svc) verifyhost istiod.istio-system.svc alpn $alpn"
    fi
    printf 'frontend istiod-%s\n  bind %s:%s%s\n  timeout client %s\n  default_backend istiod-%s\nbackend istiod-%s\n  timeout server %s\n  server istiod %s:%s%s\n' \
      "$p" "$TBN_LB" "$p" "$bind_tls" "$idle" "$p" "$p" "$idle" "$TBN_PRIMARY" "$p" "$server_tls"
  done
}

# ------------------------------------------------------------------ the sidecar injector
# Rendered with the bed's istioctl from Istio's own charts (embedded in it), as `istioctl install`
# would apply them: the primary's injector ConfigMap (istiod reads it at start,
# pilot/pkg/bootstrap/sidecarinjector.go) and the remote profile's MutatingWebhookConfiguration.

# tb_manifest_doc KIND NAME: the document of KIND whose metadata.name is NAME, from the
# multi-document YAML on stdin (istioctl manifest generate). Fails when there is none.
tb_manifest_doc() {
  awk -v kind="$1" -v name="$2" '
    function flush() { if (doc != "" && k && n && !done) { printf "%s", doc; done = 1 } doc = ""; k = 0; n = 0 }
    /^---/ { flush(); next }
    { doc = doc $0 "\n" }
    $0 == "kind: " kind { k = 1 }
    $0 == "  name: " name || $0 == "  name: \"" name "\"" { n = 1 }
    END { flush(); exit done ? 0 : 1 }'
}

# tb_injector_name: the chart's name for the revision's injector ConfigMap and webhook
# configuration (istio-sidecar-injector[-<rev>]; getInjectorConfigMapName in istiod).
tb_injector_name() {
  if [[ $TBP_REVISION == default ]]; then echo istio-sidecar-injector; else echo "istio-sidecar-injector-$TBP_REVISION"; fi
}

# tb_injector_configmap: the primary's ConfigMap istio-sidecar-injector[-<rev>] (keys config and
# values) as `istioctl install` (default profile, the profile's revision; the primary of a
# multi-network primary-remote mesh) makes it, to stdout. Without it istiod logs "Skipping
# sidecar injector, template not found" and answers 404 on /inject.
tb_injector_configmap() {
  local args=(--set values.global.istioNamespace=istio-system --set values.global.meshID=mesh1
    --set values.global.multiCluster.clusterName=primary --set values.global.network=network1)
  [[ $TBP_REVISION != default ]] && args+=(--set "revision=$TBP_REVISION")
  KUBECONFIG=/dev/null "$ISTIOCTL" manifest generate "${args[@]}" 2>/dev/null | tb_manifest_doc ConfigMap "$(tb_injector_name)"
}

# tb_injector_webhook CA_PEM: the remote's MutatingWebhookConfiguration as the remote profile
# makes it (istioctl manifest generate --set profile=remote; mutatingwebhook.yaml): for the
# profile's revision, a reference to the remote's istiod Service port 443 with
# istiodRemote.injectionPath /inject/cluster/remote/net/network2 (Istio's primary-remote
# multi-network install), or, with no istiod Service in the remote (external-istiod), the
# istiodRemote.injectionURL of the public name on 15017; caBundle = CA_PEM (base64).
tb_injector_webhook() {
  local ca cluster=${2:-remote}; ca=$(base64 -w0 <"$1")
  local args=(--set profile=remote --set values.global.istioNamespace=istio-system
    --set "values.istiodRemote.injectionCABundle=$ca")
  [[ $TBP_REVISION != default ]] && args+=(--set "revision=$TBP_REVISION")
  if [[ -n $TBP_REMOTE_SVC ]]; then
    args+=(--set "values.istiodRemote.injectionPath=/inject/cluster/$cluster/net/network2")
  else
    args+=(--set "values.istiodRemote.injectionURL=https://${TBP_DISCOVERY%:*}:15017/inject/cluster/$cluster/net/network2")
  fi
  local chart_svc=istiod
  [[ $TBP_REVISION != default ]] && chart_svc=istiod-$TBP_REVISION
  # The chart names the Service istiod[-<rev>]; the no-ca-addr profile's remote has the older
  # remote installs' istiod-remote instead (as the lab's): the service reference names it.
  KUBECONFIG=/dev/null "$ISTIOCTL" manifest generate "${args[@]}" 2>/dev/null |
    tb_manifest_doc MutatingWebhookConfiguration "$(tb_injector_name)" |
    sed "s/^\(      name: \)$chart_svc\$/\1${TBP_REMOTE_SVC:-$chart_svc}/"
}
