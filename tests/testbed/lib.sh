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
CSRCHECK="$CSRCHECK_BIN_DIR/csrcheck"
tb_log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# tb_istiod_launch STATE: start istiod (pilot-discovery) detached, out of cluster, from its own
# working dir (relative defaults: ./etc/cacerts, ./var/run/secrets/...), on the ports recorded in
# STATE/istiod/ports.env, with the extra environment in STATE/istiod/extra.env and the extra flags
# in STATE/istiod/extra.args if any; append to STATE/logs/istiod.log (the e2e tests read it by offset);
# print its pid. Used by up and restart-istiod.
tb_istiod_launch() {
  local state=$1
  (
    # shellcheck disable=SC1091
    . "$state/istiod/ports.env"
    cd "$state/istiod"
    export POD_NAMESPACE=istio-system POD_NAME=istiod-testbed REVISION=default CLUSTER_ID=primary \
      EXTERNAL_ISTIOD=true PILOT_ENABLE_GATEWAY_API=false ROOT_CA_DIR="$state/istiod/etc/cacerts" \
      PILOT_CERT_PROVIDER=istiod JWT_POLICY=third-party-jwt
    unset KUBECONFIG
    # Extra environment for istiod (NAME=VALUE lines), written by restart-istiod NAME=VALUE...
    if [[ -f $state/istiod/extra.env ]]; then
      while IFS= read -r kv; do [[ -n $kv ]] && export "${kv?}"; done <"$state/istiod/extra.env"
    fi
    # Extra flags (one per line), written by restart-istiod --flag=value...
    local extra_args=()
    if [[ -f $state/istiod/extra.args ]]; then mapfile -t extra_args <"$state/istiod/extra.args"; fi
    setsid "$PILOT_DISCOVERY" discovery \
      --kubeconfig "$state/istiod/primary.kubeconfig" --clusterID primary \
      --httpAddr "127.0.0.1:$P_HTTP" --grpcAddr "127.0.0.1:$P_GRPC" --secureGRPCAddr "127.0.0.1:$P_SGRPC" \
      --httpsAddr "127.0.0.1:$P_HTTPS" --monitoringAddr "127.0.0.1:$P_MON" \
      --ctrlz_address 127.0.0.1 --ctrlz_port "$P_CTRLZ" --domain cluster.local --shutdownDuration 1s \
      ${extra_args[@]+"${extra_args[@]}"} >>"$state/logs/istiod.log" 2>&1 </dev/null &
    echo $!
  )
}

# tb_istiod_remote_synced HTTP_PORT: istiod's /debug/clusterz says cluster "remote" is synced.
tb_istiod_remote_synced() {
  # JSON [{"id":..,"secretName":..,"syncStatus":..}], maybe pretty-printed: flatten first
  curl -fsS "http://127.0.0.1:$1/debug/clusterz" | tr -d ' \n\t' |
    grep -Eq '"id":"remote"[^}]*"syncStatus":"synced"|"syncStatus":"synced"[^}]*"id":"remote"'
}
