//! Fixes proven: for every lab fault, `meshtrace lab serve --fault F`, a
//! trace with the binary (`-o json`), the commands that fix it run with
//! `sh -c` (the real kubectl from PATH; istioctl from $MESHTRACE_ISTIOCTL,
//! PATH or the test bed's build), and a second trace: the fault's code must
//! be gone and the verdict must be pass.
//!
//! Two sources of commands go through the same harness:
//! - meshtrace's own: the `commands` of the first step that neither passed
//!   nor was skipped (`meshtraces_own_commands_fix_every_fault`);
//! - [`EXPECTED`], the commands an operator would run, which prove that the
//!   lab accepts and models what such fixes send and touch
//!   (`expected_commands_fix_every_fault_on_the_lab`).
//!
//! [`EXCEPTIONS`] are the faults no cluster change fixes (docs/faults.md
//! lists the same). Without kubectl the tests print why and pass, unless
//! MESHTRACE_REQUIRE_KUBECTL=1 (CI), which also requires istioctl for the
//! faults whose fix uses it.

use meshtrace::lab::faults::{
    self, FaultId, FaultId::*, NO_COMMAND_FIX as EXCEPTIONS, NOT_PRINTED_IN_LAB,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `istioctl create-remote-secret` for the remote, applied to the primary:
/// the fix of every fault of the remote secret's kubeconfig and token.
const REMOTE_SECRET: &str = "istioctl create-remote-secret --context=lab-remote --name=remote | kubectl --context=lab-primary apply -f -";
const DELETE_SECRET: &str =
    "kubectl --context lab-primary -n istio-system delete secret istio-remote-secret-remote";
const ROOT_TO_REMOTE: &str = r"kubectl --context lab-primary -n istio-system get secret cacerts -o jsonpath='{.data.root-cert\.pem}' | base64 -d | kubectl --context lab-remote -n istio-system create configmap istio-ca-root-cert --from-file=root-cert.pem=/dev/stdin --dry-run=client -o yaml | kubectl --context lab-remote apply -f -";
const RESTART_ISTIOD: &str = "kubectl --context lab-primary -n istio-system rollout restart deployment/istiod && kubectl --context lab-primary -n istio-system rollout status deployment/istiod --timeout=60s";
/// The remote's istiod EndpointSlice, pointing at the primary's exposed
/// istiod: in the lab, the simulated istiod ($LAB_ISTIOD_PORT).
const ISTIOD_SLICE: &str = "kubectl --context lab-remote apply -f - <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: istiod-primary
  namespace: istio-system
  labels:
    kubernetes.io/service-name: istiod
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
ports:
- name: tcp-istiod
  port: $LAB_ISTIOD_PORT
  protocol: TCP
- name: tcp-webhook
  port: $LAB_WEBHOOK_PORT
  protocol: TCP
EOF";
const ISTIOD_SERVICE: &str = "kubectl --context lab-remote apply --server-side -f - <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: istiod
  namespace: istio-system
spec:
  ports:
  - name: tcp-istiod
    port: 15012
    protocol: TCP
  - name: tcp-webhook
    port: 443
    targetPort: 15017
    protocol: TCP
EOF";

/// The remote's mesh root, base64, for a webhook's caBundle.
macro_rules! mesh_root_b64 {
    () => {
        r"$(kubectl --context lab-remote -n istio-system get configmap istio-ca-root-cert -o jsonpath='{.data.root-cert\.pem}' | base64 | tr -d '\n')"
    };
}

/// The injector's webhook as Istio's chart makes it for the remote
/// profile, one webhook of the four (the one for istio.io/rev=default).
const INJECTOR_CONFIG: &str = concat!(
    "kubectl --context lab-remote apply -f - <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: istio-sidecar-injector
  labels:
    istio.io/rev: default
webhooks:
- name: rev.namespace.sidecar-injector.istio.io
  clientConfig:
    service: {name: istiod, namespace: istio-system, port: 443, path: /inject/cluster/remote/net/network2}
    caBundle: ",
    mesh_root_b64!(),
    "
  rules: [{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}]
  sideEffects: None
  failurePolicy: Fail
  admissionReviewVersions: [v1]
  namespaceSelector: {matchExpressions: [{key: istio.io/rev, operator: In, values: [default]}]}
EOF"
);

/// The commands an operator would run to fix each fault, against the lab.
pub const EXPECTED: &[(FaultId, &[&str])] = &[
    (NoRemoteSecret, &[REMOTE_SECRET]),
    (
        SecretUnlabelled,
        &[
            "kubectl --context lab-primary -n istio-system label secret istio-remote-secret-remote istio/multiCluster=true --overwrite",
        ],
    ),
    (
        SecretWrongNamespace,
        &[
            REMOTE_SECRET,
            "kubectl --context lab-primary -n default delete secret istio-remote-secret-remote",
        ],
    ),
    (ClusterIdMismatch, &[DELETE_SECRET, REMOTE_SECRET]),
    (
        ClusterIdIsPrimary,
        &[
            DELETE_SECRET,
            REMOTE_SECRET,
            "kubectl --context lab-remote -n istio-system set env deployment/istio-eastwestgateway ISTIO_META_CLUSTER_ID=remote",
        ],
    ),
    (KubeconfigEmpty, &[REMOTE_SECRET]),
    (KubeconfigNotYaml, &[REMOTE_SECRET]),
    (KubeconfigNoCurrentContext, &[REMOTE_SECRET]),
    (KubeconfigExec, &[REMOTE_SECRET]),
    (KubeconfigTokenFile, &[REMOTE_SECRET]),
    (SecretPointsAtPrimary, &[REMOTE_SECRET]),
    (ApiServerUnreachable, &[REMOTE_SECRET]),
    (WrongCaData, &[REMOTE_SECRET]),
    (ReaderTokenExpired, &[REMOTE_SECRET]),
    (ReaderSaDeleted, &[REMOTE_SECRET]),
    (ReaderTokenOtherCluster, &[REMOTE_SECRET]),
    (ReaderTokenExpiring, &[REMOTE_SECRET]),
    (
        NoTokenreviewRbac,
        &[
            r#"kubectl --context lab-remote patch clusterrole istio-reader-clusterrole-istio-system --type=json -p '[{"op":"add","path":"/rules/-","value":{"apiGroups":["authentication.k8s.io"],"resources":["tokenreviews"],"verbs":["create"]}}]'"#,
        ],
    ),
    (IstiodServiceMissing, &[ISTIOD_SERVICE, ISTIOD_SLICE]),
    (
        IstiodServiceSelector,
        &[
            r#"kubectl --context lab-remote -n istio-system patch service istiod --type=json -p '[{"op":"remove","path":"/spec/selector"}]'"#,
        ],
    ),
    (IstiodNoEndpoints, &[ISTIOD_SLICE]),
    (
        IstiodUnreachable,
        &[
            r#"kubectl --context lab-remote -n istio-system patch endpointslice istiod-lab --type=json -p "[{\"op\":\"replace\",\"path\":\"/ports/0/port\",\"value\":$LAB_ISTIOD_PORT}]""#,
        ],
    ),
    (
        ExposureNoWebhookPort,
        &[
            r#"kubectl --context lab-primary -n istio-system patch service istio-eastwestgateway --type=json -p "[{\"op\":\"add\",\"path\":\"/spec/ports/-\",\"value\":{\"name\":\"tls-webhook\",\"port\":$LAB_WEBHOOK_PORT,\"targetPort\":15017,\"protocol\":\"TCP\"}}]""#,
        ],
    ),
    (
        ExposureAddressMismatch,
        &[
            r#"kubectl --context lab-remote -n istio-system patch endpointslice istiod-lab --type=json -p "[{\"op\":\"replace\",\"path\":\"/ports/0/port\",\"value\":$LAB_ISTIOD_PORT}]""#,
        ],
    ),
    (
        ExposureGatewayMissing,
        &["kubectl --context lab-primary apply -f - <<'EOF'
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istiod-gateway
  namespace: istio-system
spec:
  selector:
    istio: eastwestgateway
  servers:
  - port: {name: tls-istiod, number: 15012, protocol: tls}
    tls: {mode: PASSTHROUGH}
    hosts: [\"*\"]
  - port: {name: tls-istiodwebhook, number: 15017, protocol: tls}
    tls: {mode: PASSTHROUGH}
    hosts: [\"*\"]
EOF"],
    ),
    (
        ExposureVirtualserviceMissing,
        &["kubectl --context lab-primary apply -f - <<'EOF'
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: istiod-vs
  namespace: istio-system
spec:
  hosts: [\"*\"]
  gateways: [istiod-gateway]
  tls:
  - match: [{port: 15012, sniHosts: [\"*\"]}]
    route: [{destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 15012}}}]
  - match: [{port: 15017, sniHosts: [\"*\"]}]
    route: [{destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 443}}}]
EOF"],
    ),
    (
        GatewayNoClusterId,
        &[
            "kubectl --context lab-remote -n istio-system set env deployment/istio-eastwestgateway ISTIO_META_CLUSTER_ID=remote",
        ],
    ),
    (
        GatewayAudience,
        &[
            r#"kubectl --context lab-remote -n istio-system patch deployment istio-eastwestgateway --type=json -p '[{"op":"replace","path":"/spec/template/spec/volumes/1/projected/sources/0/serviceAccountToken/audience","value":"istio-ca"}]'"#,
        ],
    ),
    (
        GatewayNoProjectedToken,
        &[
            r#"kubectl --context lab-remote -n istio-system patch deployment istio-eastwestgateway --type=json -p '[{"op":"add","path":"/spec/template/spec/volumes/-","value":{"name":"istio-token","projected":{"sources":[{"serviceAccountToken":{"audience":"istio-ca","expirationSeconds":43200,"path":"istio-token"}}]}}},{"op":"add","path":"/spec/template/spec/containers/0/volumeMounts/-","value":{"name":"istio-token","mountPath":"/var/run/secrets/tokens"}}]'"#,
        ],
    ),
    (
        GatewaySaDeleted,
        &[
            "kubectl --context lab-remote -n istio-system create serviceaccount istio-eastwestgateway-service-account",
            "kubectl --context lab-remote -n istio-system rollout restart deployment/istio-eastwestgateway",
        ],
    ),
    (RootConfigmapMissing, &[ROOT_TO_REMOTE]),
    (StaleRoot, &[ROOT_TO_REMOTE]),
    (
        PartialCacerts,
        &[
            r#"kubectl --context lab-primary -n istio-system patch secret cacerts --type=merge -p "{\"data\":{\"cert-chain.pem\":\"$( (kubectl --context lab-primary -n istio-system get secret cacerts -o jsonpath='{.data.ca-cert\.pem}' | base64 -d; kubectl --context lab-primary -n istio-system get secret cacerts -o jsonpath='{.data.root-cert\.pem}' | base64 -d) | base64 | tr -d '\n')\"}}""#,
            RESTART_ISTIOD,
        ],
    ),
    (
        IstiodCertWrongSan,
        &[
            "kubectl --context lab-primary -n istio-system set env deployment/istiod ISTIOD_CUSTOM_HOST=istiod.istio-system.svc",
        ],
    ),
    (
        IstiodTokenAudiences,
        &[
            "kubectl --context lab-primary -n istio-system set env deployment/istiod TOKEN_AUDIENCES=other-ca,istio-ca",
            "kubectl --context lab-primary -n istio-system rollout status deployment/istiod --timeout=60s",
        ],
    ),
    (IstiodStaleClusters, &[RESTART_ISTIOD]),
    (
        ChainWrongTrustDomain,
        &[
            r#"kubectl --context lab-primary -n istio-system patch configmap istio --type=merge -p '{"data":{"mesh":"trustDomain: cluster.local\n"}}'"#,
            RESTART_ISTIOD,
        ],
    ),
    (
        NetworkMismatch,
        &[
            "kubectl --context lab-remote -n istio-system label service istio-eastwestgateway topology.istio.io/network=network2 --overwrite",
        ],
    ),
    (
        XdsDiscoveryAddressMissing,
        &[
            r#"kubectl --context lab-remote -n istio-system set env deployment/istio-eastwestgateway PROXY_CONFIG='{"discoveryAddress":"istiod.istio-system.svc:15012"}'"#,
        ],
    ),
    (
        XdsNodeNamespace,
        &[
            "kubectl --context lab-remote -n istio-system set env deployment/istio-eastwestgateway POD_NAMESPACE=istio-system",
        ],
    ),
    (
        XdsRootCaMismatch,
        &[
            "kubectl --context lab-remote -n istio-system set env deployment/istio-eastwestgateway XDS_ROOT_CA-",
        ],
    ),
    (WebhookMissing, &[INJECTOR_CONFIG]),
    (
        WebhookCaBundleMismatch,
        &[concat!(
            "CA=",
            mesh_root_b64!(),
            r#"; for i in 0 1 2 3; do kubectl --context lab-remote patch mutatingwebhookconfiguration istio-sidecar-injector --type=json -p "[{\"op\":\"replace\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$CA\"}]" || exit 1; done"#
        )],
    ),
    (
        WebhookWrongService,
        &[
            r#"for i in 0 1 2 3; do kubectl --context lab-remote patch mutatingwebhookconfiguration istio-sidecar-injector --type=json -p "[{\"op\":\"replace\",\"path\":\"/webhooks/$i/clientConfig/service/name\",\"value\":\"istiod\"}]" || exit 1; done"#,
        ],
    ),
    (
        WebhookPortClosed,
        &[
            r#"kubectl --context lab-remote -n istio-system patch endpointslice istiod-lab --type=json -p "[{\"op\":\"replace\",\"path\":\"/ports/1/port\",\"value\":$LAB_WEBHOOK_PORT}]""#,
            // The lab's stand-in for the load balancer's 15017: the exposed port too.
            r#"kubectl --context lab-primary -n istio-system patch service istio-eastwestgateway --type=json -p "[{\"op\":\"replace\",\"path\":\"/spec/ports/3/port\",\"value\":$LAB_WEBHOOK_PORT}]""#,
        ],
    ),
];

/// How many faults are proven at once (each is a lab, two traces and kubectl).
const PARALLEL: usize = 4;
/// Per command, so a hanging command fails its fault instead of the suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

fn exception(id: FaultId) -> Option<&'static str> {
    EXCEPTIONS
        .iter()
        .find(|(f, _)| *f == id)
        .map(|(_, why)| *why)
}

fn required() -> bool {
    std::env::var("MESHTRACE_REQUIRE_KUBECTL").as_deref() == Ok("1")
}

fn runs(cmd: &Path) -> bool {
    Command::new(cmd)
        .arg("version")
        .args(["--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tools the commands may name: kubectl from PATH, and a directory
/// holding `istioctl` to put first on PATH, if one is found.
struct Tools {
    kubectl: bool,
    istioctl_dir: Option<PathBuf>,
}

fn find_istioctl() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MESHTRACE_ISTIOCTL") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("istioctl"))
            .find(|p| p.is_file())
    });
    // The test bed builds one (tests/testbed/lib.sh: $TB_CACHE/bin/istio-*/).
    on_path.or_else(|| {
        let cache = std::env::var_os("MESHTRACE_TESTBED_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(|c| PathBuf::from(c).join("meshtrace-testbed"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meshtrace-testbed"))
            })?;
        let mut found: Vec<PathBuf> = std::fs::read_dir(cache.join("bin"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("istioctl"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

impl Tools {
    fn find(scratch: &Path) -> Tools {
        let kubectl = runs(Path::new("kubectl"));
        let istioctl_dir = find_istioctl().and_then(|bin| {
            let dir = scratch.join("istioctl-bin");
            std::fs::create_dir_all(&dir).ok()?;
            let link = dir.join("istioctl");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&bin, &link).ok()?;
            Some(dir)
        });
        Tools {
            kubectl,
            istioctl_dir,
        }
    }

    fn path(&self) -> std::ffi::OsString {
        let mut dirs: Vec<PathBuf> = self.istioctl_dir.iter().cloned().collect();
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs).unwrap_or_default()
    }
}

/// A `meshtrace lab serve` child, stopped with SIGTERM when dropped.
struct Served {
    child: Child,
    kubeconfig: PathBuf,
    istiod_port: String,
    webhook_port: String,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(fault: FaultId) -> Result<Served, String> {
        Served::start_with(&["--fault", fault.name()])
    }

    /// `lab serve ARGS...`.
    fn start_with(args: &[&str]) -> Result<Served, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshtrace"))
            .args(["lab", "serve"])
            .args(args)
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start meshtrace lab serve: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Read its banner on a thread, so a lab that never prints cannot hang us.
        let (tx, rx) = std::sync::mpsc::channel();
        // It drains the pipe to the end: a closed pipe would kill the lab
        // at its next line (EPIPE), in the middle of a fix.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut served = Served {
            child,
            kubeconfig,
            istiod_port: String::new(),
            webhook_port: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen_kubeconfig = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).map_err(|_| {
                "lab serve printed no \"kubeconfig:\", \"istiod:\" and \"webhook:\" lines"
                    .to_string()
            })?;
            if line.starts_with("kubeconfig:") {
                seen_kubeconfig = true;
            }
            if let Some(addr) = line.strip_prefix("istiod:") {
                let addr = addr.split_whitespace().next().unwrap_or_default();
                served.istiod_port = addr.rsplit(':').next().unwrap_or_default().to_string();
            }
            if let Some(addr) = line.strip_prefix("webhook:") {
                let addr = addr.split_whitespace().next().unwrap_or_default();
                served.webhook_port = addr.rsplit(':').next().unwrap_or_default().to_string();
            }
            if seen_kubeconfig && !served.istiod_port.is_empty() && !served.webhook_port.is_empty()
            {
                return Ok(served);
            }
        }
    }

    /// The binary's trace of the served lab, as JSON.
    fn trace(&self) -> Result<Value, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_meshtrace"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "--primary",
                "lab-primary",
                "--remote",
                "lab-remote",
                "-o",
                "json",
            ])
            .env_remove("KUBECONFIG")
            .output()
            .map_err(|e| format!("cannot run meshtrace: {e}"))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "meshtrace -o json printed no report ({e}); exit {:?}; stderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `sh -c command`, with the lab's kubeconfig and istiod port in the
    /// environment; Err with its output when it fails or runs too long.
    fn run(&self, command: &str, tools: &Tools) -> Result<(), String> {
        self.run_with(command, tools, &[])
    }

    fn run_with(&self, command: &str, tools: &Tools, env: &[(&str, &str)]) -> Result<(), String> {
        let mut child = Command::new("sh")
            .args(["-c", command])
            .envs(env.iter().copied())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("LAB_ISTIOD_PORT", &self.istiod_port)
            .env("LAB_WEBHOOK_PORT", &self.webhook_port)
            .env("PATH", tools.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("`{command}` ran past {COMMAND_TIMEOUT:?}"));
                }
            }
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "`{command}` exited {:?}: {}{}",
            out.status.code(),
            crate::support::tail(&String::from_utf8_lossy(&out.stdout), 400),
            crate::support::tail(&String::from_utf8_lossy(&out.stderr), 800)
        ))
    }
}

impl Drop for Served {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first step that neither passed nor was skipped, in flow order.
fn first_failure(report: &Value) -> Option<&Value> {
    report["steps"]
        .as_array()?
        .iter()
        .find(|s| !matches!(s["status"].as_str(), Some("pass" | "skipped")))
}

fn summary(report: &Value) -> String {
    let bad: Vec<String> = report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| !matches!(s["status"].as_str(), Some("pass" | "skipped")))
        .map(|s| {
            format!(
                "{} {} {} ({})",
                s["id"].as_str().unwrap_or("?"),
                s["status"].as_str().unwrap_or("?"),
                s["code"].as_str().unwrap_or("no code"),
                crate::support::tail(s["diagnosis"].as_str().unwrap_or_default(), 300)
            )
        })
        .collect();
    format!(
        "verdict {}; {}",
        report["verdict"].as_str().unwrap_or("?"),
        if bad.is_empty() {
            "every step passed".to_string()
        } else {
            bad.join("; ")
        }
    )
}

#[derive(Debug, Clone, Copy)]
enum Source {
    /// The `commands` meshtrace prints for the first failing step.
    Meshtrace,
    /// [`EXPECTED`].
    Expected,
}

enum Proof {
    Proven(Vec<String>),
    Skipped(String),
    Failed(String),
}

/// Serve `fault`, trace, fix with `source`'s commands, trace again.
fn prove(fault: FaultId, source: Source, tools: &Tools) -> Proof {
    let f = faults::get(fault);
    let expected: Vec<String> = EXPECTED
        .iter()
        .find(|(id, _)| *id == fault)
        .map(|(_, c)| c.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    if matches!(source, Source::Expected) && expected.is_empty() {
        return Proof::Skipped("no expected commands".into());
    }
    let served = match Served::start(fault) {
        Ok(s) => s,
        Err(e) => return Proof::Failed(e),
    };
    let before = match served.trace() {
        Ok(r) => r,
        Err(e) => return Proof::Failed(e),
    };
    let Some(step) = first_failure(&before) else {
        return Proof::Failed("the lab with this fault traced clean before any fix".into());
    };
    let code_before = step["code"].as_str().unwrap_or_default().to_string();
    let commands: Vec<String> = match source {
        Source::Expected => expected,
        Source::Meshtrace => step["commands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
    };
    if commands.is_empty() {
        return Proof::Failed(format!(
            "{} ({code_before}) prints no commands",
            step["id"].as_str().unwrap_or("?")
        ));
    }
    if commands.iter().any(|c| c.contains("istioctl")) && tools.istioctl_dir.is_none() {
        let why = "the fix runs istioctl, and none was found (MESHTRACE_ISTIOCTL, PATH, or the test bed's build)";
        return if required() {
            Proof::Failed(why.into())
        } else {
            Proof::Skipped(why.into())
        };
    }
    for c in &commands {
        if let Err(e) = served.run(c, tools) {
            return Proof::Failed(e);
        }
    }
    let after = match served.trace() {
        Ok(r) => r,
        Err(e) => return Proof::Failed(e),
    };
    let codes: Vec<&str> = after["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["code"].as_str())
        .collect();
    for gone in [f.code, code_before.as_str()] {
        if !gone.is_empty() && codes.contains(&gone) {
            return Proof::Failed(format!("{gone} is still reported: {}", summary(&after)));
        }
    }
    if after["verdict"] != "pass" {
        return Proof::Failed(format!("not healthy after the fix: {}", summary(&after)));
    }
    Proof::Proven(commands)
}

/// Prove the faults `source` has commands for, PARALLEL at a time.
fn prove_all(source: Source) {
    let scratch = tempfile::tempdir().unwrap();
    let tools = Tools::find(scratch.path());
    if !tools.kubectl {
        assert!(
            !required(),
            "kubectl is not on PATH and MESHTRACE_REQUIRE_KUBECTL=1"
        );
        eprintln!("note: kubectl is not on PATH; skipping the fix proofs");
        return;
    }
    // meshtrace's commands for every fault but the exceptions; EXPECTED's
    // for every fault it has commands for (an exception's lab-side fix too).
    let todo: Vec<FaultId> = FaultId::ALL
        .iter()
        .copied()
        .filter(|id| match source {
            Source::Meshtrace => {
                exception(*id).is_none() && !NOT_PRINTED_IN_LAB.iter().any(|(f, _)| f == id)
            }
            Source::Expected => EXPECTED.iter().any(|(e, _)| e == id),
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(id) = todo.get(i).copied() else {
                        break;
                    };
                    let t = Instant::now();
                    let proof = prove(id, source, &tools);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push((
                        id,
                        proof,
                        t.elapsed(),
                    ));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(id, _, _)| *id);
    let mut failed = Vec::new();
    for (id, proof, took) in &results {
        let name = id.name();
        match proof {
            Proof::Proven(cmds) => eprintln!("proven   {name:<30} {took:>6.1?}  {}", cmds.len()),
            Proof::Skipped(why) => eprintln!("skipped  {name:<30} {why}"),
            Proof::Failed(why) => {
                eprintln!("FAILED   {name:<30} {why}");
                failed.push(format!("fault {name}: {why}"));
            }
        }
    }
    for (id, why) in EXCEPTIONS {
        eprintln!("exception {:<29} {why}", id.name());
    }
    eprintln!(
        "{source:?}: {} faults in {:.1?}",
        results.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{} of {} faults are not fixed by {source:?} commands:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}

/// The fixes meshtrace prints, pasted as they are.
#[test]
fn meshtraces_own_commands_fix_every_fault() {
    prove_all(Source::Meshtrace);
}

/// A fleet remote no kubeconfig context reaches is traced with its remote
/// secret's credentials; its fix names the context by a variable and its
/// first line stops the paste while that is unset. Once the operator adds a
/// context and names it, the same commands fix the remote.
#[test]
fn a_fix_for_a_remote_without_a_context_runs_once_its_context_is_named() {
    let scratch = tempfile::tempdir().unwrap();
    let tools = Tools::find(scratch.path());
    if !tools.kubectl {
        assert!(
            !required(),
            "kubectl is not on PATH and MESHTRACE_REQUIRE_KUBECTL=1"
        );
        eprintln!("note: kubectl is not on PATH; skipping");
        return;
    }
    let served =
        Served::start_with(&["--remotes", "3", "--fault", "no-tokenreview-rbac@3"]).unwrap();
    let full = std::fs::read_to_string(&served.kubeconfig).unwrap();
    let mut kc = kube::config::Kubeconfig::from_yaml(&full).unwrap();
    kc.contexts.retain(|c| c.name != "lab-remote-3");
    let partial = scratch.path().join("partial");
    std::fs::write(&partial, serde_json::to_string(&kc).unwrap()).unwrap();
    let fleet = || -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_meshtrace"))
            .arg("--kubeconfig")
            .arg(&partial)
            .args(["--primary", "lab-primary", "-o", "json"])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let before = fleet();
    let r3 = &before["reports"][2];
    assert_eq!(r3["target"]["remote"], "", "{}", r3["target"]);
    let step = first_failure(r3).expect("remote-3 fails");
    assert_eq!(step["id"], "remote-rbac", "{step}");
    let commands: Vec<String> = step["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let guard = commands
        .iter()
        .position(|c| c.starts_with(": \"${CONTEXT_REMOTE_3:?"))
        .unwrap_or_else(|| panic!("no line that asks for the context: {commands:?}"));
    assert!(
        commands[guard..]
            .iter()
            .skip(1)
            .any(|c| c.contains("--context \"$CONTEXT_REMOTE_3\"")),
        "{commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c.contains('<')),
        "a placeholder: {commands:?}"
    );
    let script = commands.join("\n");
    // Unset: the paste stops at its first line, saying what to set; nothing changed.
    let err = served.run(&script, &tools).unwrap_err();
    assert!(
        err.contains("set it to the kubeconfig context of remote-3"),
        "{err}"
    );
    assert_eq!(
        first_failure(&fleet()["reports"][2]).map(|s| s["id"].clone()),
        Some("remote-rbac".into())
    );
    // The operator adds a context for remote-3 to the kubeconfig and names it.
    std::fs::write(&partial, &full).unwrap();
    served
        .run_with(&script, &tools, &[("CONTEXT_REMOTE_3", "lab-remote-3")])
        .unwrap();
    let after = fleet();
    assert_eq!(
        after["verdict"],
        "pass",
        "{}",
        summary(&after["reports"][2])
    );
}

/// The lab accepts and models what an operator's fixes send and touch.
#[test]
fn expected_commands_fix_every_fault_on_the_lab() {
    prove_all(Source::Expected);
}

/// Every fault is proven by EXPECTED or excepted with a reason, and
/// docs/faults.md lists the same exceptions.
#[test]
fn every_fault_has_a_fix_or_a_reason() {
    for f in faults::FAULTS {
        let expected = EXPECTED.iter().any(|(id, _)| *id == f.id);
        assert!(
            expected || exception(f.id).is_some(),
            "fault {}: no expected fix and no exception",
            f.name
        );
    }
    let mut ids: Vec<FaultId> = EXPECTED.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EXPECTED.len(), "a fault twice in EXPECTED");
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/faults.md"))
        .expect("docs/faults.md");
    let section = docs
        .split("\n### Exceptions")
        .nth(1)
        .expect("docs/faults.md has a \"### Exceptions\" section");
    let section = section.split("\n#").next().unwrap_or_default();
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let mut want: Vec<&str> = EXCEPTIONS.iter().map(|(id, _)| id.name()).collect();
    want.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(
        got, want,
        "docs/faults.md's exceptions differ from EXCEPTIONS"
    );
}
