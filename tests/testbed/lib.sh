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
    external-istiod) echo "gateway CA_ADDR=istiod.mesh-external.test:15012, CA_ROOT_CA=SYSTEM, XDS_ROOT_CA=SYSTEM; istiod serves a public CA's certificate (--tlsCertFile/--tlsKeyFile/--caCertFile); no istiod Service in the remote" ;;
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
  TBP_GW_PROXY_CONFIG=""         # the gateway's PROXY_CONFIG env ("" = none)
  TBP_GW_REV=""                  # the gateway pod's istio.io/rev label ("" = none)
  TBP_GW_ROOT_SYSTEM=0           # 1: CA_ROOT_CA=SYSTEM, XDS_ROOT_CA=SYSTEM
  TBP_GW_AUDIENCE=istio-ca       # the gateway's projected istio-token audience
  TBP_SERVER_NAME=istiod.istio-system.svc # what the gateway verifies istiod's certificate for
  TBP_TOKEN_AUDIENCES=""         # istiod's TOKEN_AUDIENCES ("" = unset: istio-ca)
  TBP_CACERTS=pem                # pem: ca-cert.pem ca-key.pem root-cert.pem cert-chain.pem; tls: tls.crt tls.key ca.crt
  TBP_PUBLIC_TLS=0               # 1: istiod serves 15012 with a public CA's certificate
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

# tb_istiod_spec STATE: THE list of istiod's environment (ISTIOD_ENV, NAME=VALUE, one per name,
# later entries win) and command line (ISTIOD_ARGS, after the binary) for STATE's profile, the
# ports in STATE/istiod/ports.env, and the extras restart-istiod records (STATE/istiod/extra.env,
# extra.args). Both the process (tb_istiod_launch) and the primary's istiod Deployment
# (tb_istiod_deployment) are made from it, so they cannot diverge.
tb_istiod_spec() {
  local state=$1 kv extra=()
  tb_profile "$(tb_state_profile "$state")" || return 1
  # shellcheck disable=SC1091
  . "$state/istiod/ports.env"
  local env=(POD_NAMESPACE=istio-system "POD_NAME=$TBP_ISTIOD-testbed" "REVISION=$TBP_REVISION" CLUSTER_ID=primary
    EXTERNAL_ISTIOD=true PILOT_ENABLE_GATEWAY_API=false "ROOT_CA_DIR=$state/istiod/etc/cacerts"
    PILOT_CERT_PROVIDER=istiod JWT_POLICY=third-party-jwt)
  [[ -n $TBP_TOKEN_AUDIENCES ]] && env+=("TOKEN_AUDIENCES=$TBP_TOKEN_AUDIENCES")
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
    --httpAddr "127.0.0.1:$P_HTTP" --grpcAddr "127.0.0.1:$P_GRPC" --secureGRPCAddr "127.0.0.1:$P_SGRPC"
    --httpsAddr "127.0.0.1:$P_HTTPS" --monitoringAddr "127.0.0.1:$P_MON"
    --ctrlz_address 127.0.0.1 --ctrlz_port "$P_CTRLZ" --domain cluster.local --shutdownDuration 1s)
  if ((TBP_PUBLIC_TLS)); then
    ISTIOD_ARGS+=(--tlsCertFile "$state/pki/public/istiod.crt" --tlsKeyFile "$state/pki/public/istiod.key"
      --caCertFile "$state/pki/public/ca.crt")
  fi
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
    setsid "$PILOT_DISCOVERY" "${ISTIOD_ARGS[@]}" >>"$state/logs/istiod.log" 2>&1 </dev/null &
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

# tb_istiod_remote_synced HTTP_PORT: istiod's /debug/clusterz says cluster "remote" is synced.
tb_istiod_remote_synced() {
  # JSON [{"id":..,"secretName":..,"syncStatus":..}], maybe pretty-printed: flatten first
  curl -fsS "http://127.0.0.1:$1/debug/clusterz" | tr -d ' \n\t' |
    grep -Eq '"id":"remote"[^}]*"syncStatus":"synced"|"syncStatus":"synced"[^}]*"id":"remote"'
}
