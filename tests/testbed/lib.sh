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
KUBECTL="$K8S_BIN_DIR/kubectl"
PILOT_DISCOVERY="$ISTIO_BIN_DIR/pilot-discovery"
ISTIOCTL="$ISTIO_BIN_DIR/istioctl"
CSRCHECK="$CSRCHECK_BIN_DIR/csrcheck"
tb_log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
