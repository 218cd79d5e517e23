//! Running meshtrace (against the test bed and against the lab) and asking
//! the real istiod for a certificate as the gateway would.

use crate::bed::{GATEWAY, GATEWAY_SA, NS, Testbed, Token};
use meshtrace::engine::target::{client_for, load_kubeconfig};
use meshtrace::engine::{self, Clusters, TraceOptions};
use meshtrace::lab::faults::Fault;
use meshtrace::lab::world::Lab;
use meshtrace::model::{Status, Target, TraceReport, Verdict};
use meshtrace::probe::ca_client::{CsrError, CsrRequest, create_certificate, new_csr};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub fn options(istiod_addr: Option<&str>) -> TraceOptions {
    TraceOptions {
        istiod_addr: istiod_addr.map(str::to_string),
        ..Default::default()
    }
}

/// meshtrace against the test bed, as `meshtrace --kubeconfig ... --primary
/// tb-primary --remote tb-remote [--istiod-addr ...] --istiod-debug-addr
/// $ISTIOD_MONITORING` runs it: istiod runs outside any cluster here, so its
/// view of the clusters is read from its monitoring port, not through a pod.
pub async fn trace(tb: &Testbed, mut opts: TraceOptions) -> TraceReport {
    meshtrace::install_crypto_provider();
    if opts.istiod_debug_addr.is_none() {
        opts.istiod_debug_addr = Some(tb.istiod_monitoring.clone());
    }
    if opts.istiod_webhook_addr.is_none() {
        opts.istiod_webhook_addr = tb.webhook_addr_flag();
    }
    // An external istiod's public CA is the platform's roots, as the
    // profile's gateway trusts it (the binary reads SSL_CERT_FILE).
    if opts.platform_roots_pem.is_none() {
        opts.platform_roots_pem = tb.public_root_pem();
    }
    let kc =
        load_kubeconfig(std::slice::from_ref(&tb.kubeconfig)).expect("test bed kubeconfig loads");
    let (primary, _) = client_for(&kc, &tb.primary_ctx, opts.timeout)
        .await
        .expect("primary client");
    let (remote, remote_server) = client_for(&kc, &tb.remote_ctx, opts.timeout)
        .await
        .expect("remote client");
    let target = Target {
        primary: tb.primary_ctx.clone(),
        remote: tb.remote_ctx.clone(),
        istio_namespace: opts.istio_namespace.clone(),
        mode: meshtrace::model::Mode::Clusters,
        fault: None,
        cluster_id: None,
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    engine::run(
        Clusters {
            primary,
            remote,
            remote_server,
            primary_server: String::new(),
            secrets: vec![],
        },
        opts,
        target,
        tx,
    )
    .await
}

/// meshtrace against the lab with one fault, on the test bed's profile
/// (`meshtrace lab --profile P --fault F`, as tests/integration does).
pub async fn lab_trace(tb: &Testbed, fault: &'static Fault) -> TraceReport {
    meshtrace::install_crypto_provider();
    let profile = meshtrace::lab::profiles::Profile::ALL
        .iter()
        .copied()
        .find(|p| p.name() == tb.profile)
        .unwrap_or_else(|| panic!("the lab has no profile {:?} (TB_PROFILE)", tb.profile));
    let lab = Lab::start_profile(profile, Some(fault), |_| {})
        .await
        .expect("lab starts");
    let mut opts = TraceOptions::default();
    meshtrace::cli::lab_profile_options(&lab, &mut opts);
    let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts)
        .await
        .unwrap_or_else(|e| panic!("lab clients: {}", e.0));
    let (tx, _rx) = mpsc::unbounded_channel();
    let report = engine::run(clusters, opts, target, tx).await;
    lab.shutdown();
    report
}

/// One line per step that did not pass.
pub fn summary(r: &TraceReport) -> String {
    let mut out = format!(
        "verdict {:?}, first failure {:?}",
        r.verdict,
        r.first_failure.map(|s| s.as_str())
    );
    for s in &r.steps {
        if s.status != Status::Pass {
            out.push_str(&format!(
                "\n  {} {}: {}",
                s.status.as_str(),
                s.id,
                s.diagnosis.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

fn all_pass(r: &TraceReport) -> bool {
    r.verdict == Verdict::Pass
        && r.steps.len() == meshtrace::model::STEPS.len()
        && r.steps.iter().all(|s| s.status == Status::Pass)
}

/// Traces until every step passes (the CSR step included, so istiod has
/// caught up too), or fails with the last report.
pub async fn wait_healthy(tb: &Testbed, timeout: Duration) -> Result<TraceReport, String> {
    let t0 = Instant::now();
    loop {
        let r = trace(tb, options(tb.istiod_addr_flag())).await;
        if all_pass(&r) {
            return Ok(r);
        }
        if t0.elapsed() > timeout {
            return Err(summary(&r));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ------------------------------------------------------------------ istiod, asked as the gateway

/// What the gateway would send, and where.
#[derive(Debug, Clone)]
pub struct GatewayView {
    pub token: Token,
    pub cluster_id: String,
    /// The root the gateway verifies istiod with.
    pub root_pem: String,
    pub addr: String,
    pub server_name: String,
}

impl GatewayView {
    /// The healthy gateway of the test bed's profile: a TokenRequest for its
    /// SA with its istio-token's audience (istio-ca, or the profile's),
    /// bound to its pod (what the kubelet projects), cluster ID `remote`,
    /// the root it verifies istiod with (the mesh root; an external
    /// istiod's public CA), and istiod's address (an external istiod only
    /// through the load balancer that terminates its public TLS).
    pub fn healthy(tb: &Testbed) -> Result<GatewayView, String> {
        Ok(GatewayView {
            token: tb.token(
                crate::bed::Cluster::Remote,
                GATEWAY_SA,
                Some(&tb.gateway_audience),
                Some(GATEWAY),
                "10m",
            )?,
            cluster_id: tb.remote_cluster_id.clone(),
            root_pem: tb.public_root_pem().unwrap_or_else(|| tb.root_pem.clone()),
            addr: match tb.public_root {
                Some(_) => tb.dial_addr(),
                None => tb.istiod_addr.clone(),
            },
            server_name: tb.server_name.clone(),
        })
    }
}

/// istiod's answer to one CreateCertificate.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A chain, with the leaf's URI SANs.
    Issued {
        chain_len: usize,
        uri_sans: Vec<String>,
    },
    Unauthenticated(String),
    /// Any other gRPC status.
    Rpc {
        code: String,
        message: String,
    },
    /// TLS or TCP failed: the CSR never reached istiod's CA.
    NotReached(String),
    Other(String),
}

impl Answer {
    pub fn short(&self) -> String {
        match self {
            Answer::Issued {
                chain_len,
                uri_sans,
            } => format!("issued ({chain_len} certs, {})", uri_sans.join(",")),
            Answer::Unauthenticated(m) => format!("Unauthenticated {m:?}"),
            Answer::Rpc { code, message } => format!("{code} {message:?}"),
            Answer::NotReached(m) => format!("not reached: {m}"),
            Answer::Other(m) => format!("error: {m}"),
        }
    }
    pub fn is_issued(&self) -> bool {
        matches!(self, Answer::Issued { .. })
    }
}

pub async fn ask_istiod(g: &GatewayView) -> Answer {
    meshtrace::install_crypto_provider();
    let spiffe = format!("spiffe://cluster.local/ns/{NS}/sa/{GATEWAY_SA}");
    let (key, csr) = match new_csr(&spiffe) {
        Ok(k) => k,
        Err(e) => return Answer::Other(format!("CSR: {e}")),
    };
    let r = create_certificate(&CsrRequest {
        addr: &g.addr,
        server_name: &g.server_name,
        root_pem: &g.root_pem,
        token: &g.token.0,
        cluster_id: &g.cluster_id,
        csr_pem: &csr,
        ttl_secs: 3600,
        timeout: Duration::from_secs(5),
    })
    .await;
    drop(key);
    match r {
        Ok(chain) => {
            let leaf = chain
                .first()
                .and_then(|p| meshtrace::inspect::x509::parse_pem_chain(p).ok())
                .and_then(|c| c.into_iter().next());
            Answer::Issued {
                chain_len: chain.len(),
                uri_sans: leaf.map(|l| l.uri_sans).unwrap_or_default(),
            }
        }
        Err(CsrError::Rpc { code, message }) if code == "Unauthenticated" => {
            Answer::Unauthenticated(message)
        }
        Err(CsrError::Rpc { code, message }) => Answer::Rpc { code, message },
        Err(CsrError::Connect(m)) => Answer::NotReached(crate::bed::redact(&m)),
        Err(e) => Answer::Other(crate::bed::redact(&e.to_string())),
    }
}

/// Asks until `done` holds (istiod's informers need a moment to see a
/// change), at most `timeout`; returns the last answer.
pub async fn ask_until(
    g: &GatewayView,
    timeout: Duration,
    done: impl Fn(&Answer) -> bool,
) -> Answer {
    let t0 = Instant::now();
    loop {
        let a = ask_istiod(g).await;
        if done(&a) || t0.elapsed() > timeout {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks several times over `over`; returns the first answer that is not
/// "issued", else the last one. For faults after which istiod must keep issuing.
pub async fn ask_stays_issued(g: &GatewayView, over: Duration) -> Answer {
    let t0 = Instant::now();
    loop {
        let a = ask_istiod(g).await;
        if !a.is_issued() || t0.elapsed() > over {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ------------------------------------------------------------------ a non-loopback address for EndpointSlices

/// An address of this machine that is not loopback: the real API server
/// refuses loopback (and link-local) addresses in EndpointSlices
/// (`may not be in the loopback range`).
pub fn local_ip() -> Result<std::net::IpAddr, String> {
    for probe in [
        "192.0.2.1:9",
        "10.255.255.1:9",
        "172.31.255.1:9",
        "192.168.255.1:9",
        "8.8.8.8:53",
    ] {
        let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            continue;
        };
        if sock.connect(probe).is_err() {
            continue;
        }
        if let Ok(a) = sock.local_addr() {
            let ip = a.ip();
            if !ip.is_loopback() && !ip.is_unspecified() {
                return Ok(ip);
            }
        }
    }
    Err("this machine has no non-loopback IPv4 address (needed: the API server refuses loopback addresses in EndpointSlices)".into())
}

/// A TCP pass-through on `ip` to `target` (the east-west gateway's role: TLS
/// passes through untouched). Runs on the current runtime until it stops.
pub async fn passthrough(ip: std::net::IpAddr, target: String) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind pass-through");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    addr
}

/// A port on `ip` nothing listens on.
pub fn closed_port_on(ip: std::net::IpAddr) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}
