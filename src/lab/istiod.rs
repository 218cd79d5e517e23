//! A simulated istiod CA: gRPC over TLS (`istio.v1.auth.IstioCertificateService`)
//! that authenticates callers the way istiod's KubeJWTAuthenticator does,
//! including picking the cluster by the `clusterid` header, reading remote
//! secrets from the primary, sending a real TokenReview to the chosen API
//! server over HTTPS, and reporting failures with istiod's own strings.

use crate::lab::apiserver::SharedCluster;
use crate::lab::pki::{Ca, ServerCert};
use crate::proto::ads::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use crate::proto::ads::{DiscoveryRequest, DiscoveryResponse};
use crate::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::proto::{IstioCertificateRequest, IstioCertificateResponse};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// istiod's defaults: DEFAULT_WORKLOAD_CERT_TTL and MAX_WORKLOAD_CERT_TTL.
const DEFAULT_TTL_SECS: i64 = 24 * 3600;
const MAX_TTL_SECS: i64 = 90 * 24 * 3600;
/// istiod back-dates leaves so a slightly slow client clock still accepts them.
const BACKDATE_SECS: i64 = 120;
const MULTICLUSTER_LABEL: &str = "istio/multiCluster";
/// Per-request budget for a TokenReview, so a dead API server cannot hang a CSR.
const KUBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct IstiodConfig {
    pub local_cluster_id: String,
    pub namespace: String,
    pub trust_domain: String,
    /// TOKEN_AUDIENCES.
    pub token_audiences: Vec<String>,
    /// The intermediate that signs workloads; its chain_pem ends at the root.
    pub signer: Arc<Ca>,
    /// istiod's serving certificate (istiod.istio-system.svc, ...).
    pub serving: ServerCert,
    /// The config cluster: remote secrets live here; local TokenReviews go here.
    pub primary: SharedCluster,
    pub primary_url: String,
    pub primary_ca_pem: String,
    pub quirks: IstiodQuirks,
}

/// Deliberate misbehaviour, for lab faults.
#[derive(Debug, Default, Clone)]
pub struct IstiodQuirks {
    /// Return only the leaf (the agent rejects it: `invalid empty CertChain`).
    pub single_element_chain: bool,
    /// Sign for this trust domain instead of the configured one.
    pub leaf_trust_domain: Option<String>,
    /// istiod's clock offset: +3600 = an hour ahead, so the leaf is not yet valid.
    pub leaf_not_before_offset_secs: i64,
    /// Leave the root off the end of the chain.
    pub omit_root: bool,
    /// The remote-secret controller is stuck, as the real istiod's is after
    /// it deletes a remote cluster that never synced (it hangs shutting the
    /// cluster's informers down): it has dropped that cluster and processes
    /// no remote-secret event since, so it knows no remote cluster however
    /// valid the secrets are, until it restarts.
    pub secret_controller_stuck: bool,
    /// A misbehaving peer in istiod's place (a proxy, a debug build) that
    /// echoes the request's metadata, `authorization` included, in its
    /// error: for the hostile-peer tests, never a fault of the lab's.
    pub echo_metadata: bool,
    /// Repeat the intermediate this many more times in the chain (a hostile
    /// peer's 6,500-certificate answer).
    pub pad_chain: usize,
    /// istiod refuses every xDS stream as not ready (its caches not synced).
    pub xds_not_ready: bool,
}

/// One cluster as istiod's `/debug/clusterz` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterzEntry {
    pub id: String,
    /// namespace/name of the remote secret; empty for the config cluster.
    pub secret_name: String,
    /// "synced" or "timeout" (the lab decides at once instead of waiting 30s).
    pub sync_status: String,
    /// Why it did not sync, in the words of the failed API call (not served).
    pub detail: Option<String>,
}

pub struct IstiodSim {
    /// The secure gRPC port (the 15012 role).
    pub addr: SocketAddr,
    /// The plain-HTTP monitoring port (the 15014 role): `/debug/clusterz`.
    pub monitoring_addr: SocketAddr,
    /// The webhook port (the 15017 role): HTTPS, the sidecar injector.
    pub webhook_addr: SocketAddr,
    inner: Arc<Inner>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for IstiodSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstiodSim")
            .field("addr", &self.addr)
            .field("monitoring_addr", &self.monitoring_addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: IstiodConfig,
    /// What a restart changes: the settings istiod reads when it starts.
    run: Mutex<RunState>,
    /// The secure gRPC listener, kept so a restart serves the same port.
    listener: std::net::TcpListener,
    /// Stops the gRPC server of the current run (a restart starts another).
    run_stop: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    /// Stops everything (IstiodSim::shutdown).
    stop: tokio::sync::watch::Receiver<bool>,
    logs: Mutex<Vec<String>>,
    /// The webhook port, serving the same certificate as the gRPC port.
    webhook: Mutex<Option<Arc<crate::lab::webhook::WebhookServer>>>,
    /// Registration messages already logged, so a bad remote secret is
    /// reported once per content, as istiod reports it once per secret event.
    logged_once: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone)]
struct RunState {
    token_audiences: Vec<String>,
    trust_domain: String,
    secret_controller_stuck: bool,
    restarts: u32,
}

/// What istiod reads when it (re)starts: its pod's environment and the
/// mesh config. The lab's istiod Deployment rolling out restarts it with
/// these (see [`IstiodHandle::restart`]).
#[derive(Clone)]
pub struct Restart {
    /// TOKEN_AUDIENCES.
    pub token_audiences: Vec<String>,
    /// meshConfig.trustDomain.
    pub trust_domain: String,
    /// A new serving certificate (its DNS names follow POD_NAMESPACE and
    /// ISTIOD_CUSTOM_HOST), or None to keep the current one.
    pub serving: Option<ServerCert>,
}

impl std::fmt::Debug for Restart {
    // By hand: the serving certificate's key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restart")
            .field("token_audiences", &self.token_audiences)
            .field("trust_domain", &self.trust_domain)
            .field("new_serving_cert", &self.serving.is_some())
            .finish()
    }
}

/// A handle that can restart the simulated istiod from another task (the
/// primary API server's rollout hook).
#[derive(Clone)]
pub struct IstiodHandle(Arc<Inner>);

impl IstiodHandle {
    /// Restart istiod: it reloads every remote secret (a stuck remote-secret
    /// controller is stuck no more), takes the new settings, and serves a new
    /// certificate if given, on the same port. Needs a tokio runtime.
    pub fn restart(&self, r: Restart) {
        let inner = &self.0;
        let n = {
            let mut run = inner.run.lock().unwrap_or_else(|e| e.into_inner());
            run.token_audiences = r.token_audiences.clone();
            run.trust_domain = r.trust_domain.clone();
            run.secret_controller_stuck = false;
            run.restarts += 1;
            run.restarts
        };
        if let Ok(mut g) = inner.logged_once.lock() {
            g.clear();
        }
        if let Some(serving) = &r.serving {
            if let Err(e) = serve_grpc(inner, serving) {
                inner.log(format!("restart: cannot serve: {e}"));
            }
            if let Some(w) = inner
                .webhook
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                w.reload(serving);
            }
        }
        inner.log(format!(
            "istiod restarted (#{n}): TOKEN_AUDIENCES={}, trust domain {}",
            r.token_audiences.join(","),
            r.trust_domain
        ));
    }
}

/// The signer's chain without its root: what istiod serves after its leaf.
fn intermediates_pem(signer: &Ca) -> String {
    signer
        .chain_pem
        .iter()
        .take(signer.chain_pem.len().saturating_sub(1))
        .cloned()
        .collect()
}

/// Serve the gRPC CA on the kept listener with `serving`, stopping the
/// server of the previous run (its open calls finish).
fn serve_grpc(inner: &Arc<Inner>, serving: &ServerCert) -> std::io::Result<()> {
    let io_err = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    // Serve leaf + intermediates (not the root), as istiod does, so a
    // client holding only the root can build the path.
    let mut chain = serving.cert_pem.clone();
    for c in inner
        .cfg
        .signer
        .chain_pem
        .iter()
        .take(inner.cfg.signer.chain_pem.len().saturating_sub(1))
    {
        chain.push_str(c);
    }
    let identity = Identity::from_pem(chain, serving.key_pem.clone());
    // istiod verifies a client certificate when one is given
    // (VerifyClientCertIfGiven, with the mesh's roots), never requires one.
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(root) = inner.cfg.signer.chain_pem.last() {
        tls = tls
            .client_ca_root(tonic::transport::Certificate::from_pem(root))
            .client_auth_optional(true);
    }
    let server = Server::builder().tls_config(tls).map_err(|e| io_err(&e))?;
    let listener = tokio::net::TcpListener::from_std(inner.listener.try_clone()?)?;
    // Small gRPC frames: TCP_NODELAY so they do not wait for delayed ACKs.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let svc = IstioCertificateServiceServer::new(CaService {
        inner: inner.clone(),
    });
    let ads = AggregatedDiscoveryServiceServer::new(AdsService {
        inner: inner.clone(),
    });
    let (run_stop, mut run_rx) = tokio::sync::watch::channel(false);
    if let Some(prev) = inner
        .run_stop
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(run_stop)
    {
        prev.send_replace(true);
    }
    let mut stop_rx = inner.stop.clone();
    let log_inner = inner.clone();
    tokio::spawn(async move {
        let signal = async move {
            tokio::select! {
                _ = stop_rx.wait_for(|v| *v) => {},
                _ = run_rx.wait_for(|v| *v) => {},
            }
        };
        let mut router = server;
        if let Err(e) = router
            .add_service(svc)
            .add_service(ads)
            .serve_with_incoming_shutdown(incoming, signal)
            .await
        {
            log_inner.log(format!("gRPC server stopped: {e}"));
        }
    });
    Ok(())
}

/// A remote cluster registered from a remote secret.
struct Registered {
    secret_key: String,
    kubeconfig: Kubeconfig,
}

impl IstiodSim {
    pub async fn start(cfg: IstiodConfig) -> std::io::Result<IstiodSim> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let run = RunState {
            token_audiences: cfg.token_audiences.clone(),
            trust_domain: cfg.trust_domain.clone(),
            secret_controller_stuck: cfg.quirks.secret_controller_stuck,
            restarts: 0,
        };
        let serving = cfg.serving.clone();
        let inner = Arc::new(Inner {
            cfg,
            run: Mutex::new(run),
            listener,
            run_stop: Mutex::new(None),
            stop: stop_rx.clone(),
            logs: Mutex::new(Vec::new()),
            webhook: Mutex::new(None),
            logged_once: Mutex::new(HashSet::new()),
        });
        serve_grpc(&inner, &serving)?;
        let monitoring_addr = serve_monitoring(inner.clone(), stop_rx.clone()).await?;
        let webhook = Arc::new(
            crate::lab::webhook::WebhookServer::start(
                &serving,
                intermediates_pem(&inner.cfg.signer),
            )
            .await?,
        );
        let webhook_addr = webhook.addr;
        {
            let w = webhook.clone();
            let mut stop = stop_rx;
            tokio::spawn(async move {
                let _ = stop.wait_for(|v| *v).await;
                w.shutdown();
            });
        }
        *inner.webhook.lock().unwrap_or_else(|e| e.into_inner()) = Some(webhook);
        Ok(IstiodSim {
            addr,
            monitoring_addr,
            webhook_addr,
            inner,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to restart this istiod with.
    pub fn handle(&self) -> IstiodHandle {
        IstiodHandle(self.inner.clone())
    }

    /// How many times it restarted.
    pub fn restarts(&self) -> u32 {
        self.inner.run().restarts
    }

    /// Stop serving; returns at once.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// istiod's log lines so far (security and multicluster scopes).
    pub fn logs(&self) -> Vec<String> {
        self.inner
            .logs
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// What istiod's `/debug/clusterz` says: the config cluster, then every
    /// remote cluster registered from a remote secret (the same registration
    /// that decides CSR authentication), and whether its API server can be
    /// listed with the secret's credentials.
    pub async fn clusterz(&self) -> Vec<ClusterzEntry> {
        self.inner.clusterz().await
    }
}

/// The monitoring listener (plain HTTP on 127.0.0.1): `/debug/clusterz` as
/// istiod serves it, Go's `404 page not found` for anything else.
async fn serve_monitoring(
    inner: Arc<Inner>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let clusterz = move || {
        let inner = inner.clone();
        async move {
            let list: Vec<serde_json::Value> = inner
                .clusterz()
                .await
                .into_iter()
                .map(|e| {
                    serde_json::json!({"id": e.id, "secretName": e.secret_name, "syncStatus": e.sync_status})
                })
                .collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::Value::Array(list).to_string(),
            )
                .into_response()
        }
    };
    let app = axum::Router::new()
        .route("/debug/clusterz", axum::routing::get(clusterz))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "404 page not found\n",
            )
        });
    tokio::spawn(async move {
        let signal = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::warn!(error = %e, "lab istiod monitoring listener stopped");
        }
    });
    Ok(addr)
}

/// The first lists an informer makes; a failure here keeps istiod "syncing"
/// until PILOT_REMOTE_CLUSTER_TIMEOUT.
async fn sync_check(client: &kube::Client) -> Result<(), String> {
    use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
    use kube::api::{Api, ListParams};
    let lp = ListParams::default().limit(1);
    let calls = async {
        Api::<Namespace>::all(client.clone())
            .list(&lp)
            .await
            .map(|_| ())?;
        Api::<Service>::all(client.clone())
            .list(&lp)
            .await
            .map(|_| ())?;
        Api::<Pod>::all(client.clone()).list(&lp).await.map(|_| ())
    };
    match tokio::time::timeout(KUBE_TIMEOUT * 2, calls).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(kube_error_words(&e, "")),
        Err(_) => Err("no answer from the API server".into()),
    }
}

impl Inner {
    fn run(&self) -> RunState {
        self.run.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn log(&self, line: String) {
        if let Ok(mut g) = self.logs.lock() {
            g.push(line);
        }
    }

    fn log_once(&self, line: String) {
        let first = self
            .logged_once
            .lock()
            .map(|mut g| g.insert(line.clone()))
            .unwrap_or(true);
        if first {
            self.log(line);
        }
    }

    /// `/debug/clusterz`: the config cluster, then each remote cluster
    /// istiod holds a client for (a cluster whose client cannot be built was
    /// never registered, as in [`Inner::authenticate`]).
    async fn clusterz(&self) -> Vec<ClusterzEntry> {
        let mut out = vec![ClusterzEntry {
            id: self.cfg.local_cluster_id.clone(),
            secret_name: String::new(),
            sync_status: "synced".into(),
            detail: None,
        }];
        for (id, reg) in self.registry() {
            let Some((client, _)) = self.registered_client(&id, &reg).await else {
                continue;
            };
            let (status, detail) = match sync_check(&client).await {
                Ok(()) => ("synced", None),
                Err(e) => ("timeout", Some(e)),
            };
            if status == "timeout" {
                self.log_once(format!("remote cluster {id} failed to sync after 30s"));
            }
            out.push(ClusterzEntry {
                id,
                secret_name: reg.secret_key,
                sync_status: status.into(),
                detail,
            });
        }
        out
    }

    /// The client istiod built for a registered cluster; None (logged once)
    /// when it could not build one, so the cluster was never added.
    async fn registered_client(
        &self,
        id: &str,
        reg: &Registered,
    ) -> Option<(kube::Client, String)> {
        match self.client_for(&reg.kubeconfig).await {
            Ok(c) => Some(c),
            Err(e) => {
                self.log_once(format!(
                    "Add cluster: create remote cluster failed: {e}\tcluster={id} secret={}",
                    reg.secret_key
                ));
                None
            }
        }
    }

    /// Remote clusters from the primary's remote secrets, read now. Secrets
    /// are visited in name order; the first to register an ID wins.
    fn registry(&self) -> BTreeMap<String, Registered> {
        if self.run().secret_controller_stuck {
            // The controller processes no secret event: whatever the
            // secrets say now, it holds no remote cluster.
            return BTreeMap::new();
        }
        let ns = &self.cfg.namespace;
        // Clone the secrets out and drop the guard before doing anything else.
        let secrets: Vec<Secret> = {
            let guard = self.cfg.primary.read().unwrap_or_else(|e| e.into_inner());
            guard.store.list::<Secret>()
        };
        let mut out = BTreeMap::new();
        for s in secrets {
            if s.metadata.namespace.as_deref() != Some(ns.as_str()) {
                continue;
            }
            let labelled = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MULTICLUSTER_LABEL))
                .is_some_and(|v| v == "true");
            if !labelled {
                continue;
            }
            let secret_key = format!("{ns}/{}", s.metadata.name.clone().unwrap_or_default());
            // The API server folds stringData into data on write; accept either
            // in case the lab stored it raw.
            let mut data: BTreeMap<String, Vec<u8>> = s
                .string_data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in s.data.clone().unwrap_or_default() {
                data.insert(k, v.0);
            }
            for (id, bytes) in data {
                let fields = format!("\tcluster={id} secret={secret_key}");
                if id == self.cfg.local_cluster_id {
                    self.log_once(format!(
                        "ignoring cluster as it would overwrite the config cluster{fields}"
                    ));
                    continue;
                }
                if out.contains_key(&id) {
                    self.log_once(format!("cluster has already been registered{fields}"));
                    continue;
                }
                match load_kubeconfig(&bytes) {
                    Ok(kubeconfig) => {
                        out.insert(
                            id,
                            Registered {
                                secret_key: secret_key.clone(),
                                kubeconfig,
                            },
                        );
                    }
                    Err(e) => self.log_once(format!(
                        "Add cluster: create remote cluster failed: {e}{fields}"
                    )),
                }
            }
        }
        out
    }

    /// A kube client from an accepted kubeconfig, with short timeouts.
    async fn client_for(&self, kc: &Kubeconfig) -> Result<(kube::Client, String), String> {
        let mut config =
            kube::Config::from_custom_kubeconfig(kc.clone(), &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("failed to create kube clients: {e}"))?;
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        config.connect_timeout = Some(KUBE_TIMEOUT);
        config.read_timeout = Some(KUBE_TIMEOUT);
        config.write_timeout = Some(KUBE_TIMEOUT);
        // istiod's client-go does not retry a TokenReview either.
        config.default_retry = false;
        let client = crate::probe::kube_stack::build_unguarded(config)
            .map_err(|e| format!("failed to create kube clients: {e}"))?;
        Ok((client, url))
    }

    /// istiod's local client: the primary's API server with its admin token
    /// (istiod's own service account in a real cluster).
    async fn local_client(&self) -> Result<(kube::Client, String), String> {
        let token = {
            let guard = self.cfg.primary.read().unwrap_or_else(|e| e.into_inner());
            guard.admin_token.clone()
        };
        let yaml = kubeconfig_yaml(&self.cfg.primary_url, &self.cfg.primary_ca_pem, &token);
        let kc = Kubeconfig::from_yaml(&yaml).map_err(|e| format!("local kubeconfig: {e}"))?;
        self.client_for(&kc).await
    }

    /// KubeJWTAuthenticator.Authenticate: Ok((namespace, service account)).
    async fn authenticate(&self, md: &MetadataMap) -> Result<(String, String), String> {
        let token = extract_bearer(md).map_err(|e| format!("target JWT extraction error: {e}"))?;
        let cluster_id = extract_cluster_id(md);
        let local = &self.cfg.local_cluster_id;
        let (client, url) = if cluster_id.is_empty() || cluster_id == *local {
            self.local_client().await.map_err(|e| {
                format!("failed to validate the JWT from cluster {cluster_id:?}: {e}")
            })?
        } else {
            let mut registry = self.registry();
            let known: Vec<String> = registry.keys().cloned().collect();
            let unknown = || {
                format!(
                    "client claims to be in cluster {cluster_id:?}, but we only know about local cluster {local:?} and remote clusters [{}]",
                    known.join(" ")
                )
            };
            let Some(reg) = registry.remove(&cluster_id) else {
                return Err(unknown());
            };
            match self.registered_client(&cluster_id, &reg).await {
                Some(c) => c,
                None => {
                    // istiod would never have registered this cluster.
                    let known: Vec<String> =
                        known.into_iter().filter(|k| *k != cluster_id).collect();
                    return Err(format!(
                        "client claims to be in cluster {cluster_id:?}, but we only know about local cluster {local:?} and remote clusters [{}]",
                        known.join(" ")
                    ));
                }
            }
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token,
                audiences: Some(self.run().token_audiences),
            },
            ..Default::default()
        };
        let api = kube::Api::<TokenReview>::all(client);
        let pp = kube::api::PostParams::default();
        let call = api.create(&pp, &review);
        let result = match tokio::time::timeout(KUBE_TIMEOUT * 2, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(format!(
                    "failed to validate the JWT from cluster {cluster_id:?}: {}",
                    kube_error_words(&e, &url)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "failed to validate the JWT from cluster {cluster_id:?}: Post \"{url}/apis/authentication.k8s.io/v1/tokenreviews\": context deadline exceeded"
                ));
            }
        };
        token_review_result(&result)
            .map_err(|e| format!("failed to validate the JWT from cluster {cluster_id:?}: {e}"))
    }

    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        if self.cfg.quirks.echo_metadata {
            return Err(Status::unauthenticated(format!(
                "request authenticate failure; request metadata: {:?}",
                request.metadata()
            )));
        }
        let (ns, sa) = match self.authenticate(request.metadata()).await {
            Ok(id) => id,
            Err(reason) => {
                self.log(format!("Failed to authenticate client from {peer}: Authenticator KubeJWTAuthenticator: {reason}"));
                return Err(Status::unauthenticated("request authenticate failure"));
            }
        };
        let req = request.into_inner();
        let q = &self.cfg.quirks;
        let configured = self.run().trust_domain;
        let trust_domain = q.leaf_trust_domain.as_deref().unwrap_or(&configured);
        let identity = format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}");

        let ttl = if req.validity_duration <= 0 {
            DEFAULT_TTL_SECS
        } else {
            req.validity_duration
        };
        if ttl > MAX_TTL_SECS {
            let msg = format!(
                "requested TTL {} is greater than the max allowed TTL {}",
                go_duration(ttl),
                go_duration(MAX_TTL_SECS)
            );
            self.log(format!("CSR signing error: {msg}"));
            return Err(Status::invalid_argument(format!(
                "CSR signing error ({msg})"
            )));
        }
        // istiod's clock, possibly skewed by the quirk.
        let now = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(q.leaf_not_before_offset_secs);
        let not_before = now - time::Duration::seconds(BACKDATE_SECS);
        let not_after = now + time::Duration::seconds(ttl);
        let leaf = match self
            .cfg
            .signer
            .sign_workload_csr(&req.csr, &identity, not_before, not_after)
        {
            Ok(l) => l,
            Err(e) => {
                self.log(format!("CSR signing error: {e}"));
                return Err(Status::invalid_argument(format!("CSR signing error ({e})")));
            }
        };
        let mut chain = vec![leaf];
        chain.extend(self.cfg.signer.chain_pem.iter().cloned());
        if q.omit_root && chain.len() > 1 {
            chain.pop();
        }
        if q.single_element_chain {
            chain.truncate(1);
        }
        if let Some(inter) = chain.get(1).cloned() {
            for _ in 0..q.pad_chain {
                chain.insert(1, inter.clone());
            }
        }
        self.log(format!(
            "signed certificate for {identity} (requested from {peer}, {} element chain)",
            chain.len()
        ));
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

struct CaService {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.inner.create_certificate(request).await
    }
}

/// istiod's ADS on the secure port (pilot/pkg/xds/ads.go, auth.go): it
/// refuses every stream while not ready (`server is not ready to serve
/// discovery information`, Unavailable); authenticates the stream as
/// istiod's authenticators do, the client certificate first, then the token
/// reviewed in the cluster `clusterid` names (`authentication failure`,
/// Unauthenticated, the reasons in its log); authorizes the first request's
/// node: the identity's namespace must be the node's NAMESPACE (else its
/// ID's domain) and its service account SERVICE_ACCOUNT (PermissionDenied).
/// It answers CDS with a few clusters, other Envoy types with none, and its
/// debug types (`istio.io/debug`, debuggen.go) only to an identity in its
/// own namespace (but config_dump, ndsz, edsz), with the debug handler's
/// body as one `Any` resource.
struct AdsService {
    inner: Arc<Inner>,
}

/// istiod's debug type URL (`model.DebugType`, pkg/model/xds.go).
const DEBUG_TYPE: &str = "istio.io/debug";
/// Debug types istiod serves to an identity outside its namespace.
const ACTIVE_NAMESPACE_DEBUGGERS: [&str; 3] = ["config_dump", "ndsz", "edsz"];
/// Envoy's Cluster type.
const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// envoy.config.cluster.v3.Cluster, its name only (field 1): the lab's
/// clusters as istiod would name them for a gateway.
#[derive(Clone, PartialEq, prost::Message)]
struct LabCluster {
    #[prost(string, tag = "1")]
    name: String,
}

/// The authenticated caller of a stream: namespace, service account.
#[derive(Clone)]
struct Caller {
    ns: String,
    sa: String,
}

/// The SPIFFE identity in a verified client certificate's URI SAN.
fn cert_identity(der: &[u8]) -> Result<(String, String), String> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("{e}"))?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or("the certificate has no SAN")?;
    for n in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(u) = n {
            let parts: Vec<&str> = u.trim_start_matches("spiffe://").split('/').collect();
            if let [_, "ns", ns, "sa", sa] = parts.as_slice() {
                return Ok((ns.to_string(), sa.to_string()));
            }
        }
    }
    Err("failed to extract identities from the certificate".into())
}

impl Inner {
    /// security.Authenticate with [ClientCertAuthenticator, KubeJWTAuthenticator].
    async fn authenticate_stream(
        &self,
        md: &MetadataMap,
        peer_certs: Option<Vec<Vec<u8>>>,
        peer: &str,
    ) -> Result<Caller, Status> {
        let cert = match peer_certs.as_deref().and_then(|c| c.first()) {
            None => Err("no verified chain is found".to_string()),
            Some(der) => cert_identity(der),
        };
        if let Ok((ns, sa)) = cert {
            return Ok(Caller { ns, sa });
        }
        match self.authenticate(md).await {
            Ok((ns, sa)) => Ok(Caller { ns, sa }),
            Err(reason) => {
                self.log(format!(
                    "Failed to authenticate client from {peer}: Authenticator ClientCertAuthenticator: {}; Authenticator KubeJWTAuthenticator: {reason}",
                    cert.err().unwrap_or_default()
                ));
                Err(Status::unauthenticated("authentication failure"))
            }
        }
    }

    /// initConnection's checks of the first request's node.
    fn authorize(&self, caller: &Caller, peer: &str, req: &DiscoveryRequest) -> Result<(), Status> {
        // model.ParseServiceNodeWithMetadata: TYPE~IP~ID~DOMAIN.
        let node_id = req.node.as_ref().map(|n| n.id.as_str()).unwrap_or_default();
        let parts: Vec<&str> = node_id.split('~').collect();
        if parts.len() != 4 {
            return Err(Status::invalid_argument(format!(
                "missing parts in the service node {node_id:?}"
            )));
        }
        if !["sidecar", "router", "waypoint", "ztunnel"].contains(&parts[0]) {
            return Err(Status::invalid_argument(format!(
                "invalid node type (valid types: [sidecar router waypoint ztunnel]) in the service node {node_id:?}"
            )));
        }
        let meta = |k: &str| {
            req.node
                .as_ref()
                .and_then(|n| n.metadata.as_ref())
                .and_then(|m| m.fields.get(k))
                .and_then(|v| match &v.kind {
                    Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        // GetProxyConfigNamespace: NAMESPACE, else the domain's first label.
        let mut want_ns = meta("NAMESPACE");
        if want_ns.is_empty() {
            let domain: Vec<&str> = parts[3].split('.').collect();
            if domain.len() > 1 {
                want_ns = domain[0].to_string();
            }
        }
        let want_sa = meta("SERVICE_ACCOUNT");
        let identity = format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.run().trust_domain,
            caller.ns,
            caller.sa
        );
        if (!want_ns.is_empty() && want_ns != caller.ns)
            || (!want_sa.is_empty() && want_sa != caller.sa)
        {
            let why = format!("no identities ([{identity}]) matched {want_ns}/{want_sa}");
            self.log(format!(
                "Unauthorized XDS: {peer} with identity [{identity}]: {why}"
            ));
            return Err(Status::permission_denied(format!(
                "authorization failed: {why}"
            )));
        }
        Ok(())
    }

    async fn answer(
        &self,
        caller: &Caller,
        req: DiscoveryRequest,
    ) -> Result<DiscoveryResponse, Status> {
        if req.type_url.starts_with(DEBUG_TYPE) {
            return self.debug_answer(caller, req).await;
        }
        use prost::Message as _;
        let resources = if req.type_url == CLUSTER_TYPE {
            let ns = &self.cfg.namespace;
            [
                "BlackHoleCluster".to_string(),
                format!("outbound|15012||istiod.{ns}.svc.cluster.local"),
                format!("outbound|15443||istio-eastwestgateway.{ns}.svc.cluster.local"),
            ]
            .into_iter()
            .map(|name| prost_types::Any {
                type_url: CLUSTER_TYPE.into(),
                value: LabCluster { name }.encode_to_vec(),
            })
            .collect()
        } else {
            Vec::new()
        };
        Ok(DiscoveryResponse {
            resources,
            type_url: req.type_url.clone(),
            version_info: format!("lab/{}", self.run().restarts),
            nonce: "1".into(),
        })
    }

    async fn debug_answer(
        &self,
        caller: &Caller,
        req: DiscoveryRequest,
    ) -> Result<DiscoveryResponse, Status> {
        let identity = format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.run().trust_domain,
            caller.ns,
            caller.sa
        );
        let [resource] = req.resource_names.as_slice() else {
            return Err(Status::invalid_argument(
                "exactly one debug request is required",
            ));
        };
        let path = resource.split('?').next().unwrap_or_default();
        if caller.ns != self.cfg.namespace && !ACTIVE_NAMESPACE_DEBUGGERS.contains(&path) {
            return Err(Status::permission_denied(format!(
                "the debug info is not available for current identity: {identity:?}"
            )));
        }
        let body = match path {
            "clusterz" => clusterz_json(&self.clusterz().await),
            _ => "404 page not found\n".to_string(),
        };
        Ok(DiscoveryResponse {
            resources: vec![prost_types::Any {
                type_url: DEBUG_TYPE.into(),
                value: body.into_bytes(),
            }],
            type_url: req.type_url.clone(),
            version_info: String::new(),
            nonce: "1".into(),
        })
    }
}

/// `/debug/clusterz`'s JSON: `[{"id":..,"secretName":..,"syncStatus":..}]`.
fn clusterz_json(entries: &[ClusterzEntry]) -> String {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| serde_json::json!({"id": e.id, "secretName": e.secret_name, "syncStatus": e.sync_status}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

type DiscoveryStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<DiscoveryResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = DiscoveryStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<Response<DiscoveryStream>, Status> {
        use futures::StreamExt as _;
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        if self.inner.cfg.quirks.xds_not_ready {
            return Err(Status::unavailable(
                "server is not ready to serve discovery information",
            ));
        }
        let certs = request
            .peer_certs()
            .map(|c| c.iter().map(|d| d.to_vec()).collect::<Vec<_>>());
        let md = request.metadata().clone();
        let inner = self.inner.clone();
        let caller = inner.authenticate_stream(&md, certs, &peer).await?;
        let incoming = request.into_inner();
        // Each request gets its answer; the first error ends the stream, as
        // an error of istiod's does. The first request's node is authorized.
        let out = incoming
            .enumerate()
            .then(move |(i, r)| {
                let (inner, peer, caller) = (inner.clone(), peer.clone(), caller.clone());
                async move {
                    let req = r?;
                    if i == 0 {
                        inner.authorize(&caller, &peer, &req)?;
                    }
                    inner.answer(&caller, req).await
                }
            })
            .scan(false, |failed, r| {
                let item = if *failed {
                    None
                } else {
                    *failed = r.is_err();
                    Some(r)
                };
                futures::future::ready(item)
            });
        Ok(Response::new(Box::pin(out)))
    }
}

/// security.ExtractBearerToken: the first `authorization` value starting with
/// "Bearer " (case-sensitive, as istiod checks it).
fn extract_bearer(md: &MetadataMap) -> Result<String, &'static str> {
    let values: Vec<_> = md.get_all("authorization").iter().collect();
    if values.is_empty() {
        return Err("no HTTP authorization header exists");
    }
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("Bearer ").map(str::to_string))
        .ok_or("no bearer token exists in HTTP authorization header")
}

/// Exactly one `clusterid` value, else "" (= the config cluster).
fn extract_cluster_id(md: &MetadataMap) -> String {
    let values: Vec<_> = md.get_all("clusterid").iter().collect();
    match values.as_slice() {
        [one] => one.to_str().unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// tokenreview.getTokenReviewResult.
fn token_review_result(r: &TokenReview) -> Result<(String, String), String> {
    let status = r.status.clone().unwrap_or_default();
    if let Some(e) = status.error.as_deref().filter(|e| !e.is_empty()) {
        return Err(format!(
            "the service account authentication returns an error: {e}"
        ));
    }
    if status.authenticated != Some(true) {
        return Err("the token is not authenticated".into());
    }
    let user = status.user.unwrap_or_default();
    if !user
        .groups
        .unwrap_or_default()
        .iter()
        .any(|g| g == "system:serviceaccounts")
    {
        return Err("the token is not a service account".into());
    }
    let username = user.username.unwrap_or_default();
    let parts: Vec<&str> = username.split(':').collect();
    if parts.len() != 4 {
        return Err("invalid username field in the token review result".into());
    }
    Ok((parts[2].to_string(), parts[3].to_string()))
}

/// A kube error the way client-go prints it: the API's Status message
/// ("Unauthorized", the RBAC "forbidden" text), or the transport failure.
fn kube_error_words(e: &kube::Error, url: &str) -> String {
    if let kube::Error::Api(status) = e {
        if !status.message.is_empty() {
            return status.message.clone();
        }
        return status.reason.clone();
    }
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    if url.is_empty() {
        parts.join(": ")
    } else {
        format!(
            "Post \"{url}/apis/authentication.k8s.io/v1/tokenreviews\": {}",
            parts.join(": ")
        )
    }
}

/// Accept a remote-secret kubeconfig as istiod's BuildClientsFromConfig does.
fn load_kubeconfig(bytes: &[u8]) -> Result<Kubeconfig, String> {
    if bytes.is_empty() {
        return Err("kubeconfig is empty".into());
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| format!("kubeconfig cannot be loaded: {e}"))?;
    let kc =
        Kubeconfig::from_yaml(text).map_err(|e| format!("kubeconfig cannot be loaded: {e}"))?;
    validate_kubeconfig(&kc).map_err(|e| format!("kubeconfig is not valid: {e}"))?;
    sanitize_kubeconfig(&kc).map_err(|e| format!("kubeconfig is not allowed: {e}"))?;
    if kc.current_context.as_deref().unwrap_or_default().is_empty() {
        // clientcmd then finds no cluster and kube.NewClient fails.
        return Err(
            "failed to create kube clients: invalid configuration: no configuration has been provided, try setting KUBERNETES_MASTER environment variable"
                .into(),
        );
    }
    Ok(kc)
}

/// clientcmd.Validate, the checks that matter for an inline kubeconfig.
fn validate_kubeconfig(kc: &Kubeconfig) -> Result<(), String> {
    let empty =
        "no configuration has been provided, try setting KUBERNETES_MASTER environment variable";
    if kc.clusters.is_empty()
        && kc.contexts.is_empty()
        && kc.auth_infos.is_empty()
        && kc.current_context.is_none()
    {
        return Err(format!("invalid configuration: {empty}"));
    }
    let mut errs = Vec::new();
    if let Some(cur) = kc.current_context.as_deref().filter(|c| !c.is_empty()) {
        if !kc.contexts.iter().any(|c| c.name == cur) {
            errs.push(format!(
                "context was not found for specified context: {cur}"
            ));
        }
    }
    for c in &kc.contexts {
        let Some(ctx) = &c.context else { continue };
        match ctx.user.as_deref() {
            None | Some("") => {
                errs.push(format!("user was not specified for context {:?}", c.name))
            }
            Some(u) if !kc.auth_infos.iter().any(|a| a.name == u) => {
                errs.push(format!("user {u:?} was not found for context {:?}", c.name))
            }
            _ => {}
        }
        if ctx.cluster.is_empty() {
            errs.push(format!(
                "cluster was not specified for context {:?}",
                c.name
            ));
        } else if !kc.clusters.iter().any(|cl| cl.name == ctx.cluster) {
            errs.push(format!(
                "cluster {:?} was not found for context {:?}",
                ctx.cluster, c.name
            ));
        }
    }
    for cl in &kc.clusters {
        let server = cl
            .cluster
            .as_ref()
            .and_then(|c| c.server.as_deref())
            .unwrap_or_default();
        if server.is_empty() {
            errs.push(format!("no server found for cluster {:?}", cl.name));
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(format!("invalid configuration: {}", errs[0])),
        _ => Err(format!("invalid configuration: [{}]", errs.join(", "))),
    }
}

/// istiod's sanitizeKubeConfig: nothing that runs code or reads local files.
fn sanitize_kubeconfig(kc: &Kubeconfig) -> Result<(), String> {
    for a in kc.auth_infos.iter().filter_map(|a| a.auth_info.as_ref()) {
        if let Some(p) = &a.auth_provider {
            if p.name != "oidc" {
                return Err(format!("auth provider {} is not allowed", p.name));
            }
        }
        if a.client_key.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err("clientKey is not allowed".into());
        }
        if a.client_certificate
            .as_deref()
            .is_some_and(|s| !s.is_empty())
        {
            return Err("clientCertificate is not allowed".into());
        }
        if a.token_file.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err("tokenFile is not allowed".into());
        }
        if a.exec.is_some() {
            return Err("exec is not allowed".into());
        }
    }
    Ok(())
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // serde_json strings are valid YAML scalars, so odd tokens cannot break the document.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    certificate-authority-data: {ca}\n    server: {}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: local\ncurrent-context: local\nusers:\n- name: local\n  user:\n    token: {}\n",
        q(server),
        q(token)
    )
}

/// Go's time.Duration.String() for whole seconds ("2160h0m0s").
fn go_duration(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::apiserver::{ApiServer, BoundApiServer, ClusterSim};
    use crate::lab::tokens::{NameUid, SigningKeys, TokenSpec, now_unix};
    use crate::probe::ca_client::{CsrError, CsrRequest, create_certificate, new_csr};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::RwLock;

    const NS: &str = "istio-system";
    const GW_SA: &str = "istio-eastwestgateway-service-account";
    const GW_POD: &str = "istio-eastwestgateway-abc";
    const READER: &str = "istio-reader-service-account";
    const SERVER_NAME: &str = "istiod.istio-system.svc";

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            ..Default::default()
        }
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn remote_kubeconfig(server: &str, ca_pem: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: remote\n  cluster:\n    certificate-authority-data: {}\n    server: {server}\ncontexts:\n- name: remote\n  context:\n    cluster: remote\n    user: remote\ncurrent-context: remote\nusers:\n- name: remote\n  user:\n{user}",
            b64(ca_pem)
        )
    }

    struct Opts {
        token_audiences: Vec<String>,
        quirks: IstiodQuirks,
        reader_can_review: bool,
        /// Replaces the user section of the remote kubeconfig (None = the reader token).
        user_yaml: Option<String>,
    }

    impl Default for Opts {
        fn default() -> Self {
            Opts {
                token_audiences: vec!["istio-ca".into()],
                quirks: IstiodQuirks::default(),
                reader_can_review: true,
                user_yaml: None,
            }
        }
    }

    struct Fixture {
        istiod: IstiodSim,
        istiod_addr: String,
        primary_api: ApiServer,
        remote_api: ApiServer,
        root_pem: String,
        signer_pem: String,
        /// The gateway pod's projected token (audience istio-ca), from the remote.
        gw_token: String,
        /// A token of a workload in the primary itself.
        primary_token: String,
        /// A token of istio-system/default in the primary (istioctl's debug caller).
        debug_token: String,
    }

    impl Fixture {
        fn stop(&self) {
            self.istiod.shutdown();
            self.primary_api.shutdown();
            self.remote_api.shutdown();
        }

        fn csr<'a>(
            &'a self,
            token: &'a str,
            cluster_id: &'a str,
            csr_pem: &'a str,
            ttl: i64,
        ) -> CsrRequest<'a> {
            CsrRequest {
                addr: &self.istiod_addr,
                server_name: SERVER_NAME,
                root_pem: &self.root_pem,
                token,
                cluster_id,
                csr_pem,
                ttl_secs: ttl,
                timeout: Duration::from_secs(15),
            }
        }
    }

    async fn fixture(o: Opts) -> Fixture {
        crate::install_crypto_provider();
        let now = now_unix();
        let mesh_root = Ca::root("test mesh root", "lab", 3650);
        let signer = Arc::new(mesh_root.intermediate("test mesh intermediate", "lab", 365));
        let primary_bound = BoundApiServer::bind(&Ca::root("primary api ca", "lab", 30)).unwrap();
        let remote_bound = BoundApiServer::bind(&Ca::root("remote api ca", "lab", 30)).unwrap();

        // ---- remote: gateway SA + pod, reader SA with its ClusterRole ----
        let mut remote = ClusterSim::new(
            "remote",
            Arc::new(SigningKeys::generate("https://remote.invalid")),
            "remote-admin-token",
        );
        let gw_uid = remote
            .store
            .put(ServiceAccount {
                metadata: meta(NS, GW_SA),
                ..Default::default()
            })
            .metadata
            .uid
            .unwrap();
        let pod_uid = remote
            .store
            .put(Pod {
                metadata: meta(NS, GW_POD),
                ..Default::default()
            })
            .metadata
            .uid
            .unwrap();
        let reader_uid = remote
            .store
            .put(ServiceAccount {
                metadata: meta(NS, READER),
                ..Default::default()
            })
            .metadata
            .uid
            .unwrap();
        let mut rules = vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["namespaces".into(), "pods".into(), "services".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }];
        if o.reader_can_review {
            rules.push(PolicyRule {
                api_groups: Some(vec!["authentication.k8s.io".into()]),
                resources: Some(vec!["tokenreviews".into()]),
                verbs: vec!["create".into()],
                ..Default::default()
            });
        }
        remote.store.put(ClusterRole {
            metadata: meta("", "istio-reader"),
            rules: Some(rules),
            ..Default::default()
        });
        remote.store.put(ClusterRoleBinding {
            metadata: meta("", "istio-reader"),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: "istio-reader".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: READER.into(),
                namespace: Some(NS.into()),
                ..Default::default()
            }]),
        });
        let gw_token = remote.keys.mint(&TokenSpec {
            namespace: NS.into(),
            service_account: GW_SA.into(),
            service_account_uid: gw_uid,
            audiences: vec!["istio-ca".into()],
            issued_at: now,
            expires_at: now + 43200,
            pod: Some(NameUid {
                name: GW_POD.into(),
                uid: pod_uid,
            }),
        });
        let reader_token = remote.keys.mint(&TokenSpec {
            namespace: NS.into(),
            service_account: READER.into(),
            service_account_uid: reader_uid,
            audiences: remote.api_audiences.clone(),
            issued_at: now,
            expires_at: now + 86400,
            pod: None,
        });

        // ---- primary: the remote secret, and a local workload ----
        let mut primary = ClusterSim::new(
            "primary",
            Arc::new(SigningKeys::generate("https://primary.invalid")),
            "primary-admin-token",
        );
        let user = o
            .user_yaml
            .unwrap_or_else(|| format!("    token: {reader_token}\n"));
        let kc = remote_kubeconfig(&remote_bound.url, &remote_bound.ca_pem, &user);
        let mut data = BTreeMap::new();
        data.insert("remote".to_string(), ByteString(kc.into_bytes()));
        let mut sm = meta(NS, "istio-remote-secret-remote");
        sm.labels = Some([(MULTICLUSTER_LABEL.to_string(), "true".to_string())].into());
        primary.store.put(Secret {
            metadata: sm,
            data: Some(data),
            ..Default::default()
        });
        let local_uid = primary
            .store
            .put(ServiceAccount {
                metadata: meta("default", "local-app"),
                ..Default::default()
            })
            .metadata
            .uid
            .unwrap();
        let primary_token = primary.keys.mint(&TokenSpec {
            namespace: "default".into(),
            service_account: "local-app".into(),
            service_account_uid: local_uid,
            audiences: vec!["istio-ca".into()],
            issued_at: now,
            expires_at: now + 3600,
            pod: None,
        });
        let default_uid = primary
            .store
            .put(ServiceAccount {
                metadata: meta(NS, "default"),
                ..Default::default()
            })
            .metadata
            .uid
            .unwrap();
        let debug_token = primary.keys.mint(&TokenSpec {
            namespace: NS.into(),
            service_account: "default".into(),
            service_account_uid: default_uid,
            audiences: vec!["istio-ca".into()],
            issued_at: now,
            expires_at: now + 600,
            pod: None,
        });

        let primary_state: SharedCluster = Arc::new(RwLock::new(primary));
        let remote_state: SharedCluster = Arc::new(RwLock::new(remote));
        let primary_api = primary_bound.serve(primary_state.clone());
        let remote_api = remote_bound.serve(remote_state);
        let serving = signer.server_cert(
            "istiod",
            &[SERVER_NAME, "istiod-remote.istio-system.svc"],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            30,
        );
        let istiod = IstiodSim::start(IstiodConfig {
            local_cluster_id: "primary".into(),
            namespace: NS.into(),
            trust_domain: "cluster.local".into(),
            token_audiences: o.token_audiences,
            signer: signer.clone(),
            serving,
            primary: primary_state,
            primary_url: primary_api.url.clone(),
            primary_ca_pem: primary_api.ca_pem.clone(),
            quirks: o.quirks,
        })
        .await
        .unwrap();
        Fixture {
            istiod_addr: istiod.addr().to_string(),
            istiod,
            primary_api,
            remote_api,
            root_pem: mesh_root.cert_pem.clone(),
            signer_pem: signer.cert_pem.clone(),
            gw_token,
            primary_token,
            debug_token,
        }
    }

    struct Leaf {
        uris: Vec<String>,
        not_before: i64,
        not_after: i64,
    }

    fn parse_leaf(pem: &str) -> Leaf {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = p.parse_x509().unwrap();
        let uris = cert
            .subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Leaf {
            uris,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        }
    }

    fn auth_failures(f: &Fixture) -> Vec<String> {
        f.istiod
            .logs()
            .into_iter()
            .filter(|l| l.starts_with("Failed to authenticate client from "))
            .collect()
    }

    fn unauthenticated() -> CsrError {
        CsrError::Rpc {
            code: "Unauthenticated".into(),
            message: "request authenticate failure".into(),
        }
    }

    fn debug<'a>(
        f: &'a Fixture,
        token: &'a str,
        ns: &'a str,
        sa: &'a str,
    ) -> crate::probe::xds_debug::DebugRequest<'a> {
        crate::probe::xds_debug::DebugRequest {
            addr: &f.istiod_addr,
            server_name: SERVER_NAME,
            root_pem: &f.root_pem,
            token,
            namespace: ns,
            service_account: sa,
            resource: "clusterz",
            timeout: Duration::from_secs(15),
        }
    }

    #[tokio::test]
    async fn clusterz_over_xds_for_an_identity_in_istiods_namespace() {
        use crate::probe::clusterz;
        let f = fixture(Opts::default()).await;
        let view = clusterz::fetch_xds(&debug(&f, &f.debug_token, NS, "default")).await;
        assert_eq!(
            clusterz::evidence(&view),
            "primary synced, remote synced (istio-system/istio-remote-secret-remote)",
            "{view:?}"
        );
        assert_eq!(view.unwrap()[0].from, format!("xDS {}", f.istiod_addr));
        f.stop();
    }

    #[tokio::test]
    async fn xds_debug_refuses_as_istiod_does() {
        use crate::probe::xds_debug::{XdsError, get};
        let f = fixture(Opts::default()).await;
        // A token istiod cannot authenticate.
        let e = get(&debug(&f, "not-a-token", NS, "default"))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            XdsError::Rpc {
                code: "Unauthenticated".into(),
                message: "authentication failure".into()
            }
        );
        // An identity outside istiod's namespace.
        let e = get(&debug(&f, &f.primary_token, "default", "local-app"))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            XdsError::Rpc {
                code: "PermissionDenied".into(),
                message: "the debug info is not available for current identity: \"spiffe://cluster.local/ns/default/sa/local-app\"".into()
            }
        );
        // Node metadata that names another identity than the token's.
        let e = get(&debug(&f, &f.primary_token, NS, "default"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, XdsError::Rpc { code, message } if code == "PermissionDenied" && message.starts_with("authorization failed: no identities")),
            "{e:?}"
        );
        // No authorization at all, with the generated client.
        use crate::proto::ads::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&f.root_pem))
            .domain_name(SERVER_NAME);
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", f.istiod_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let req = crate::probe::xds_debug::request("clusterz", NS, "default");
        let mut c = AggregatedDiscoveryServiceClient::new(ch);
        let st = match c
            .stream_aggregated_resources(futures::stream::iter([req]))
            .await
        {
            Err(st) => st,
            Ok(resp) => resp.into_inner().message().await.unwrap_err(),
        };
        assert_eq!(st.code(), tonic::Code::Unauthenticated);
        assert_eq!(st.message(), "authentication failure");
        f.stop();
    }

    #[tokio::test]
    async fn remote_gateway_gets_a_certificate() {
        let f = fixture(Opts::default()).await;
        let (_key, csr) = new_csr(
            "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway-service-account",
        )
        .unwrap();
        let before = now_unix();
        let chain = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0))
            .await
            .unwrap();
        assert_eq!(chain.len(), 3);
        assert_eq!(chain[1], f.signer_pem);
        assert_eq!(chain[2], f.root_pem);
        let leaf = parse_leaf(&chain[0]);
        assert_eq!(
            leaf.uris,
            vec![format!("spiffe://cluster.local/ns/{NS}/sa/{GW_SA}")]
        );
        // NotBefore = now - 2m; default TTL 24h.
        assert!(
            (leaf.not_before - (before - 120)).abs() <= 5,
            "{} vs {}",
            leaf.not_before,
            before
        );
        assert!((leaf.not_after - (before + 86400)).abs() <= 5);
        assert!(auth_failures(&f).is_empty(), "{:?}", f.istiod.logs());
        f.stop();
    }

    #[tokio::test]
    async fn local_workload_without_cluster_id_uses_the_primary() {
        let f = fixture(Opts::default()).await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/default/sa/local-app").unwrap();
        let chain = create_certificate(&f.csr(&f.primary_token, "", &csr, 3600))
            .await
            .unwrap();
        let leaf = parse_leaf(&chain[0]);
        assert_eq!(
            leaf.uris,
            vec!["spiffe://cluster.local/ns/default/sa/local-app".to_string()]
        );
        assert_eq!(leaf.not_after - leaf.not_before, 3600 + 120);
        // The remote gateway's token is not valid in the primary.
        let e = create_certificate(&f.csr(&f.gw_token, "primary", &csr, 0))
            .await
            .unwrap_err();
        assert_eq!(e, unauthenticated());
        let logs = auth_failures(&f);
        assert_eq!(logs.len(), 1);
        assert!(
            logs[0].contains(": Authenticator KubeJWTAuthenticator: failed to validate the JWT from cluster \"primary\": the service account authentication returns an error: [invalid bearer token, "),
            "{logs:?}"
        );
        f.stop();
    }

    #[tokio::test]
    async fn unknown_cluster_id_is_named_in_the_log() {
        let f = fixture(Opts::default()).await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let e = create_certificate(&f.csr(&f.gw_token, "remote-1", &csr, 0))
            .await
            .unwrap_err();
        assert_eq!(e, unauthenticated());
        let logs = auth_failures(&f);
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(
            logs[0].starts_with("Failed to authenticate client from 127.0.0.1:"),
            "{}",
            logs[0]
        );
        assert!(
            logs[0].ends_with(": Authenticator KubeJWTAuthenticator: client claims to be in cluster \"remote-1\", but we only know about local cluster \"primary\" and remote clusters [remote]"),
            "{}",
            logs[0]
        );
        f.stop();
    }

    #[tokio::test]
    async fn wrong_audience_is_refused_by_the_remote_api_server() {
        let f = fixture(Opts {
            token_audiences: vec!["other-ca".into()],
            ..Default::default()
        })
        .await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let e = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0))
            .await
            .unwrap_err();
        assert_eq!(e, unauthenticated());
        let logs = auth_failures(&f);
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(
            logs[0].ends_with(": Authenticator KubeJWTAuthenticator: failed to validate the JWT from cluster \"remote\": the service account authentication returns an error: [invalid bearer token, token audiences [\"istio-ca\"] is invalid for the target audiences [\"other-ca\"]]"),
            "{}",
            logs[0]
        );
        f.stop();
    }

    #[tokio::test]
    async fn reader_without_tokenreview_rbac_is_forbidden() {
        let f = fixture(Opts {
            reader_can_review: false,
            ..Default::default()
        })
        .await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let e = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0))
            .await
            .unwrap_err();
        assert_eq!(e, unauthenticated());
        let logs = auth_failures(&f);
        assert_eq!(logs.len(), 1, "{logs:?}");
        let want = format!(
            "failed to validate the JWT from cluster \"remote\": tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:{NS}:{READER}\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
        );
        assert!(logs[0].contains(&want), "{}", logs[0]);
        f.stop();
    }

    #[tokio::test]
    async fn exec_kubeconfig_is_never_registered() {
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n".to_string();
        let f = fixture(Opts {
            user_yaml: Some(exec),
            ..Default::default()
        })
        .await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let e = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0))
            .await
            .unwrap_err();
        assert_eq!(e, unauthenticated());
        let logs = f.istiod.logs();
        assert!(logs.contains(&format!(
            "Add cluster: create remote cluster failed: kubeconfig is not allowed: exec is not allowed\tcluster=remote secret={NS}/istio-remote-secret-remote"
        )), "{logs:?}");
        let failures = auth_failures(&f);
        assert!(
            failures[0].ends_with(
                "but we only know about local cluster \"primary\" and remote clusters []"
            ),
            "{failures:?}"
        );
        // Logged once, however many CSRs arrive.
        let _ = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0)).await;
        assert_eq!(
            f.istiod
                .logs()
                .iter()
                .filter(|l| l.contains("exec is not allowed"))
                .count(),
            1
        );
        f.stop();
    }

    #[tokio::test]
    async fn missing_or_non_bearer_authorization() {
        let f = fixture(Opts::default()).await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&f.root_pem))
            .domain_name(SERVER_NAME);
        let channel =
            tonic::transport::Endpoint::from_shared(format!("https://{}", f.istiod.addr()))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut client =
            crate::proto::istio_certificate_service_client::IstioCertificateServiceClient::new(
                channel,
            );
        let mk = || IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 0,
            metadata: None,
        };
        let st = client.create_certificate(mk()).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Unauthenticated);
        assert_eq!(st.message(), "request authenticate failure");
        let mut req = tonic::Request::new(mk());
        req.metadata_mut()
            .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert_eq!(
            client.create_certificate(req).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let logs = auth_failures(&f);
        assert_eq!(logs.len(), 2);
        assert!(logs[0].ends_with("Authenticator KubeJWTAuthenticator: target JWT extraction error: no HTTP authorization header exists"), "{logs:?}");
        assert!(logs[1].ends_with("Authenticator KubeJWTAuthenticator: target JWT extraction error: no bearer token exists in HTTP authorization header"), "{logs:?}");
        f.stop();
    }

    #[tokio::test]
    async fn ttl_above_90_days_is_invalid_argument() {
        let f = fixture(Opts::default()).await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let e = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 90 * 86400 + 1))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            CsrError::Rpc {
                code: "InvalidArgument".into(),
                message: "CSR signing error (requested TTL 2160h0m1s is greater than the max allowed TTL 2160h0m0s)".into()
            }
        );
        f.stop();
    }

    #[tokio::test]
    async fn quirks_shape_the_chain_and_leaf() {
        let quirks = IstiodQuirks {
            single_element_chain: true,
            leaf_trust_domain: Some("other.local".into()),
            leaf_not_before_offset_secs: 3600,
            omit_root: false,
            secret_controller_stuck: false,
            ..Default::default()
        };
        let f = fixture(Opts {
            quirks,
            ..Default::default()
        })
        .await;
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let now = now_unix();
        let chain = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0))
            .await
            .unwrap();
        assert_eq!(chain.len(), 1);
        let leaf = parse_leaf(&chain[0]);
        assert_eq!(
            leaf.uris,
            vec![format!("spiffe://other.local/ns/{NS}/sa/{GW_SA}")]
        );
        // An hour ahead, minus the 2-minute back-dating: not yet valid now.
        assert!(
            (leaf.not_before - (now + 3600 - 120)).abs() <= 5,
            "{}",
            leaf.not_before - now
        );
        f.stop();

        let f = fixture(Opts {
            quirks: IstiodQuirks {
                omit_root: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let chain = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0))
            .await
            .unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], f.signer_pem);
        f.stop();
    }

    fn primary_entry() -> ClusterzEntry {
        ClusterzEntry {
            id: "primary".into(),
            secret_name: String::new(),
            sync_status: "synced".into(),
            detail: None,
        }
    }

    #[tokio::test]
    async fn clusterz_reports_sync() {
        let f = fixture(Opts::default()).await;
        let z = f.istiod.clusterz().await;
        assert_eq!(
            z,
            vec![
                primary_entry(),
                ClusterzEntry {
                    id: "remote".into(),
                    secret_name: format!("{NS}/istio-remote-secret-remote"),
                    sync_status: "synced".into(),
                    detail: None
                }
            ]
        );
        f.stop();
    }

    /// The monitoring listener serves the same list in istiod's JSON shape,
    /// and Go's 404 for anything else.
    #[tokio::test]
    async fn monitoring_port_serves_clusterz() {
        let f = fixture(Opts::default()).await;
        let addr = f.istiod.monitoring_addr.to_string();
        let get = |path: &str| {
            http::Request::get(path)
                .header(http::header::HOST, addr.clone())
                .body(Vec::new())
                .unwrap()
        };
        let resp = crate::probe::http1::request(&addr, get("/debug/clusterz"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(
            String::from_utf8_lossy(resp.body()),
            format!(
                "[{{\"id\":\"primary\",\"secretName\":\"\",\"syncStatus\":\"synced\"}},{{\"id\":\"remote\",\"secretName\":\"{NS}/istio-remote-secret-remote\",\"syncStatus\":\"synced\"}}]"
            )
        );
        let resp = crate::probe::http1::request(&addr, get("/debug/nope"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(String::from_utf8_lossy(resp.body()), "404 page not found\n");
        f.stop();
    }

    /// A cluster whose kubeconfig istiod refuses is never registered: absent
    /// from clusterz exactly as from the authenticator's list.
    #[tokio::test]
    async fn clusterz_leaves_out_what_was_never_registered() {
        let f = fixture(Opts {
            user_yaml: Some("    tokenFile: /var/run/secrets/token\n".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(f.istiod.clusterz().await, vec![primary_entry()]);
        f.stop();
    }

    /// The stuck secret controller: a valid remote secret, yet istiod lists
    /// only its config cluster and refuses the gateway.
    #[tokio::test]
    async fn stuck_secret_controller_knows_no_remote() {
        let f = fixture(Opts {
            quirks: IstiodQuirks {
                secret_controller_stuck: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        assert_eq!(f.istiod.clusterz().await, vec![primary_entry()]);
        let (_key, csr) = new_csr("spiffe://cluster.local/ns/istio-system/sa/x").unwrap();
        let e = create_certificate(&f.csr(&f.gw_token, "remote", &csr, 0))
            .await
            .unwrap_err();
        assert_eq!(e, unauthenticated());
        let logs = auth_failures(&f);
        assert!(
            logs[0].ends_with("client claims to be in cluster \"remote\", but we only know about local cluster \"primary\" and remote clusters []"),
            "{logs:?}"
        );
        f.stop();
    }

    #[test]
    fn kubeconfig_rules() {
        assert_eq!(load_kubeconfig(b"").unwrap_err(), "kubeconfig is empty");
        assert!(
            load_kubeconfig(b"this: is: not: yaml: [")
                .unwrap_err()
                .starts_with("kubeconfig cannot be loaded: ")
        );
        let good = remote_kubeconfig("https://127.0.0.1:1", "ca", "    token: abc\n");
        assert!(load_kubeconfig(good.as_bytes()).is_ok());
        let tf = remote_kubeconfig(
            "https://127.0.0.1:1",
            "ca",
            "    tokenFile: /var/run/token\n",
        );
        assert_eq!(
            load_kubeconfig(tf.as_bytes()).unwrap_err(),
            "kubeconfig is not allowed: tokenFile is not allowed"
        );
        let ck = remote_kubeconfig(
            "https://127.0.0.1:1",
            "ca",
            "    client-certificate: /a.crt\n    client-key: /a.key\n",
        );
        assert_eq!(
            load_kubeconfig(ck.as_bytes()).unwrap_err(),
            "kubeconfig is not allowed: clientKey is not allowed"
        );
        let gcp = remote_kubeconfig(
            "https://127.0.0.1:1",
            "ca",
            "    auth-provider:\n      name: gcp\n",
        );
        assert_eq!(
            load_kubeconfig(gcp.as_bytes()).unwrap_err(),
            "kubeconfig is not allowed: auth provider gcp is not allowed"
        );
        let no_ctx = good.replace("current-context: remote\n", "");
        assert_eq!(
            load_kubeconfig(no_ctx.as_bytes()).unwrap_err(),
            "failed to create kube clients: invalid configuration: no configuration has been provided, try setting KUBERNETES_MASTER environment variable"
        );
        let wrong_ctx = good.replace("current-context: remote\n", "current-context: nope\n");
        assert_eq!(
            load_kubeconfig(wrong_ctx.as_bytes()).unwrap_err(),
            "kubeconfig is not valid: invalid configuration: context was not found for specified context: nope"
        );
    }

    #[test]
    fn token_review_results_map_to_istiod_strings() {
        use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
        let with = |status: TokenReviewStatus| TokenReview {
            status: Some(status),
            ..Default::default()
        };
        let user = |name: &str, groups: &[&str]| UserInfo {
            username: Some(name.into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            ..Default::default()
        };
        assert_eq!(
            token_review_result(&with(TokenReviewStatus {
                error: Some("boom".into()),
                ..Default::default()
            }))
            .unwrap_err(),
            "the service account authentication returns an error: boom"
        );
        assert_eq!(
            token_review_result(&with(TokenReviewStatus::default())).unwrap_err(),
            "the token is not authenticated"
        );
        assert_eq!(
            token_review_result(&with(TokenReviewStatus {
                authenticated: Some(true),
                user: Some(user("alice", &["system:authenticated"])),
                ..Default::default()
            }))
            .unwrap_err(),
            "the token is not a service account"
        );
        assert_eq!(
            token_review_result(&with(TokenReviewStatus {
                authenticated: Some(true),
                user: Some(user("system:serviceaccount:a", &["system:serviceaccounts"])),
                ..Default::default()
            }))
            .unwrap_err(),
            "invalid username field in the token review result"
        );
        assert_eq!(
            token_review_result(&with(TokenReviewStatus {
                authenticated: Some(true),
                user: Some(user(
                    "system:serviceaccount:ns1:sa1",
                    &["system:serviceaccounts"]
                )),
                ..Default::default()
            }))
            .unwrap(),
            ("ns1".to_string(), "sa1".to_string())
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(61), "1m1s");
        assert_eq!(go_duration(86400), "24h0m0s");
        assert_eq!(go_duration(MAX_TTL_SECS), "2160h0m0s");
    }
}
