//! The command line: parse flags, pick the target (clusters or the lab), run
//! the engine, render, and choose the exit code (0 pass, 1 a step failed, 2
//! meshtrace could not run).

use crate::engine::{self, Clusters, TraceOptions, target};
use crate::lab::profiles::Profile;
use crate::lab::{faults, world::Lab};
use crate::model::{Mode, Target, TraceEvent, TraceReport, Verdict};
use crate::probe::preflight;
use crate::render;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(
    name = "meshtrace",
    version,
    about = "Trace how a remote cluster's Istio gateway authenticates to the primary istiod, and point at the step that breaks",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// kube context of the primary cluster (runs istiod)
    #[arg(long, value_name = "CTX")]
    pub primary: Option<String>,
    /// kube context of the remote cluster (runs the gateway, no istiod)
    #[arg(long, value_name = "CTX")]
    pub remote: Option<String>,
    /// kubeconfig file (repeatable); default $KUBECONFIG, else ~/.kube/config
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Vec<PathBuf>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the trace against the built-in lab: two simulated clusters and a simulated istiod, no cluster needed
    Lab(LabArgs),
    /// Replay a recorded run (`-o events` lines or a `-o json` report) into any output, the TUI included
    Replay(ReplayArgs),
    /// Print the documentation of a step or a finding code (e.g. remote-rbac/no-tokenreview-create), offline
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// A step id (remote-rbac) or a finding code (remote-rbac/no-tokenreview-create)
    #[arg(value_name = "CODE|STEP", required_unless_present = "list")]
    pub what: Option<String>,
    /// List every step and finding code
    #[arg(long)]
    pub list: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The recording: a file written by `-o events` (or `-o json`), or - for stdin
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Pace: 1 replays at the recorded speed, 10 ten times faster, 0 all at once (default: 1 in the TUI, 0 otherwise)
    #[arg(long, value_name = "X", value_parser = parse_speed)]
    pub speed: Option<f64>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!(
            "{s:?} is not a speed: use 1 (as recorded), 10 (ten times faster) or 0 (all at once)"
        )),
    }
}

/// `--fault NAME`: a [`faults::FaultId`] by its kebab-case name, refused
/// with the count of faults so the user knows where to look.
fn parse_fault(s: &str) -> Result<faults::FaultId, String> {
    s.parse()
}

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub action: Option<LabAction>,
    /// Inject a named fault (see --list-faults)
    #[arg(long, value_name = "NAME", value_parser = parse_fault)]
    pub fault: Option<faults::FaultId>,
    /// List the faults the lab can inject, one per line
    #[arg(long)]
    pub list_faults: bool,
    /// Build the lab as install profile NAME (see --list-profiles; docs/profiles.md)
    #[arg(long, value_name = "NAME", value_enum, default_value_t = Profile::Default, hide_default_value = true)]
    pub profile: Profile,
    /// List the install profiles the lab can build, one per line
    #[arg(long)]
    pub list_profiles: bool,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Subcommand, Debug)]
pub enum LabAction {
    /// Start the lab and keep it running until Ctrl-C; prints a kubeconfig path and istiod's address
    Serve {
        /// Inject a named fault
        #[arg(long, value_name = "NAME", value_parser = parse_fault)]
        fault: Option<faults::FaultId>,
        /// Build the lab as install profile NAME
        #[arg(long, value_name = "NAME", value_enum)]
        profile: Option<Profile>,
        /// Where to write the kubeconfig (default: a temporary file, removed on exit)
        #[arg(long, value_name = "PATH")]
        kubeconfig_out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Tui,
    Text,
    Json,
    Markdown,
    Mermaid,
    /// The live event stream, one JSON object per line (record a run; replay it into any renderer)
    Events,
}

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Output format; default tui when stdout is a terminal, else text
    #[arg(short, long, value_enum, global = true)]
    pub output: Option<Output>,
    /// Namespace of the Istio control plane
    #[arg(long, default_value = "istio-system", global = true)]
    pub istio_namespace: String,
    /// Cluster ID the gateway sends (default: its ISTIO_META_CLUSTER_ID, else the remote secret key that points at --remote)
    #[arg(long, value_name = "ID", global = true)]
    pub cluster_id: Option<String>,
    /// The primary's own cluster ID (default: istiod's CLUSTER_ID, else the remote's controlPlaneClusters annotation)
    #[arg(long, value_name = "ID", global = true)]
    pub primary_cluster_id: Option<String>,
    /// Gateway pod or deployment as NAMESPACE/NAME (default: find the east-west or ingress gateway)
    #[arg(long, value_name = "NS/NAME", value_parser = parse_gateway, global = true)]
    pub gateway: Option<String>,
    /// istiod's CA address HOST:PORT (default: from the remote's istiod EndpointSlice)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, global = true)]
    pub istiod_addr: Option<String>,
    /// istiod's monitoring address HOST:PORT (plain HTTP), to read istiod's own view of its remote clusters; a real istiod answers only on its loopback, so: kubectl -n istio-system port-forward deploy/istiod 15014, then 127.0.0.1:15014 (default: try the primary API server's pod proxy)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_debug_addr, global = true)]
    pub istiod_debug_addr: Option<String>,
    /// Passive mode: do not send a CSR to istiod
    #[arg(long, global = true)]
    pub no_csr: bool,
    /// Timeout per step, e.g. 5s, 1500ms
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration, global = true)]
    pub timeout: Duration,
    /// Warn when a token or certificate expires within this, e.g. 7d, 30d
    #[arg(long, default_value = "7d", value_parser = parse_positive_duration, global = true)]
    pub warn_within: Duration,
    /// Audience the gateway's token must carry; default: istiod's TOKEN_AUDIENCES as its Deployment sets them (Istio's default istio-ca)
    #[arg(long, value_name = "AUD", value_parser = parse_word, global = true)]
    pub token_audience: Option<String>,
    /// istiod revision to judge with (istio.io/rev); default: the gateway's revision, else the only one in the primary
    #[arg(long, value_name = "REV", value_parser = parse_word, global = true)]
    pub revision: Option<String>,
    /// Exit 1 on warnings too
    #[arg(long, global = true)]
    pub fail_on_warn: bool,
    /// Show every step's evidence in text output
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Theme of the terminal UI: default, light, colorblind or mono (t cycles them; NO_COLOR forces mono)
    #[arg(long, value_name = "NAME", default_value = "default", value_parser = parse_theme, global = true)]
    pub theme: String,
    /// Watch mode: run the trace again this long after each run ends, e.g. 30s (tui, text and events); Ctrl-C stops
    #[arg(long, value_name = "DURATION", value_parser = parse_watch, global = true)]
    pub watch: Option<Duration>,
    /// Teaching mode for the terminal UI: reveal the flow one hop at a time (Space/→ next, ← back), with what happens at each hop
    #[arg(long, global = true)]
    pub step: bool,
}

fn parse_theme(s: &str) -> Result<String, String> {
    let names = crate::tui::theme::names();
    if names.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a theme; built in: {}",
            names.join(", ")
        ))
    }
}

fn parse_watch(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is too short for --watch: at least 1s"));
    }
    Ok(d)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 5s, 1500ms or 7d: {e}"))
}

/// A duration above zero: a zero timeout fails every step, and a zero
/// A single non-empty word without whitespace (an audience, a revision).
fn parse_word(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not a single word"));
    }
    Ok(s.to_string())
}

/// warning window warns about nothing.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is zero: give a duration above zero, like 5s or 7d"
        ));
    }
    Ok(d)
}

/// `NAMESPACE/NAME` of the gateway pod or deployment: the namespace a
/// DNS-1123 label, the name a DNS-1123 subdomain, as Kubernetes has them.
pub fn parse_gateway(s: &str) -> Result<String, String> {
    let shape = || {
        format!(
            "{s:?} is not NAMESPACE/NAME (a pod or deployment, e.g. istio-system/istio-eastwestgateway)"
        )
    };
    let mut parts = s.split('/');
    let (Some(ns), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(shape());
    };
    if ns.is_empty() || name.is_empty() {
        return Err(shape());
    }
    if !is_dns1123_label(ns) {
        return Err(format!(
            "{s:?}: the namespace {ns:?} is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    let name_ok = name.len() <= 253 && name.split('.').all(is_dns1123_label);
    if !name_ok {
        return Err(format!(
            "{s:?}: the name {name:?} is not a DNS-1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)"
        ));
    }
    Ok(s.to_string())
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `HOST:PORT` with a port from 1 to 65535; an IPv6 host in brackets
/// (`[::1]:15012`), as in a URL.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    let example = "like istiod.istio-system.svc:15012, 10.0.0.5:15012 or [::1]:15012";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not HOST:PORT ({example})"));
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host: HOST:PORT ({example})"));
    }
    let port_ok = port.bytes().all(|c| c.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    if !port_ok {
        return Err(format!(
            "{s:?}: the port {port:?} is not a number from 1 to 65535"
        ));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else if host.contains(':') {
        return Err(format!(
            "{s:?}: an IPv6 address goes in brackets, like [::1]:15012"
        ));
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok()
            || (host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                }))
    };
    if !host_ok {
        return Err(format!(
            "{s:?}: the host {host:?} is neither an IP address nor a DNS name ({example})"
        ));
    }
    Ok(s.to_string())
}

/// istiod's monitoring address: `HOST:PORT`, and, as istiod's docs write
/// it, with an optional `http://` in front and `/` behind.
fn parse_debug_addr(s: &str) -> Result<String, String> {
    let inner = s.strip_prefix("http://").unwrap_or(s);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    parse_host_port(inner).map_err(|e| if inner == s { e } else { format!("{s:?}: {e}") })?;
    Ok(s.to_string())
}

impl TraceArgs {
    fn options(&self) -> TraceOptions {
        TraceOptions {
            istio_namespace: self.istio_namespace.clone(),
            cluster_id: self.cluster_id.clone(),
            primary_cluster_id: self.primary_cluster_id.clone(),
            gateway: self.gateway.clone(),
            istiod_addr: self.istiod_addr.clone(),
            no_csr: self.no_csr,
            timeout: self.timeout,
            warn_within: self.warn_within,
            token_audience: self.token_audience.clone(),
            revision: self.revision.clone(),
            platform_roots_pem: None,
            istiod_debug_addr: self.istiod_debug_addr.clone(),
            kubeconfig: Vec::new(),
        }
    }
}

/// A reason meshtrace could not run: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

/// Parse the process arguments and run; returns the exit code.
pub fn main() -> i32 {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshtrace: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let result = rt.block_on(run(cli));
    // A parse still running on a blocking thread (its step already timed
    // out) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(UsageError(msg)) => {
            // Errors can quote a kubeconfig or an exec plugin's output. One
            // line per problem (the preflight may find one per context).
            for line in msg.lines() {
                eprintln!("meshtrace: {}", crate::inspect::sanitize::quote(line));
            }
            2
        }
    }
}

pub async fn run(cli: Cli) -> Result<i32, UsageError> {
    match cli.command {
        Some(Command::Lab(lab)) => run_lab(lab).await,
        Some(Command::Replay(r)) => run_replay(r).await,
        Some(Command::Explain(e)) => {
            if e.list {
                print!("{}", crate::explain::list());
                return Ok(0);
            }
            let what = e.what.unwrap_or_default();
            let text = crate::explain::explain(&what).map_err(UsageError)?;
            print!("{text}");
            Ok(0)
        }
        None => {
            let (Some(primary), Some(remote)) = (cli.primary.clone(), cli.remote.clone()) else {
                return Err(UsageError(
                    "need --primary CTX and --remote CTX (or `meshtrace lab` for the built-in lab); see --help".into(),
                ));
            };
            if primary == remote {
                return Err(UsageError(format!(
                    "--primary and --remote are the same context {primary:?}: meshtrace traces a remote cluster against its primary, so pass two contexts (or try `meshtrace lab`)"
                )));
            }
            let paths = target::kubeconfig_paths(&cli.kubeconfig);
            let kc = target::load_kubeconfig(&paths).map_err(|e| UsageError(e.to_string()))?;
            let mut opts = cli.trace.options();
            opts.kubeconfig = cli.kubeconfig.clone();
            // Both contexts at once: an exec plugin or a token refresh each.
            let (p, r) = tokio::join!(
                target::client_for(&kc, &primary, opts.timeout),
                target::client_for(&kc, &remote, opts.timeout)
            );
            let (p, primary_server) = p.map_err(|e| UsageError(format!("--primary: {e}")))?;
            let (r, remote_server) = r.map_err(|e| UsageError(format!("--remote: {e}")))?;
            let mut secrets = target::context_secrets(&kc, &primary);
            secrets.extend(target::context_secrets(&kc, &remote));
            let access = [
                preflight::Access {
                    flag: "--primary",
                    context: primary.clone(),
                    server: primary_server,
                    client: p.clone(),
                },
                preflight::Access {
                    flag: "--remote",
                    context: remote.clone(),
                    server: remote_server.clone(),
                    client: r.clone(),
                },
            ];
            run_preflight(&access, &opts, &secrets).await?;
            let clusters = Clusters {
                primary: p,
                remote: r,
                remote_server,
                secrets,
            };
            let t = Target {
                primary,
                remote,
                istio_namespace: opts.istio_namespace.clone(),
                mode: Mode::Clusters,
                fault: None,
            };
            Ok(trace_and_render(clusters, opts, t, &cli.trace).await)
        }
    }
}

/// The operator's access to both clusters, before any step runs (see
/// [`preflight`]): each failing context is one line of the error.
pub async fn run_preflight(
    access: &[preflight::Access],
    opts: &TraceOptions,
    secrets: &[String],
) -> Result<(), UsageError> {
    let failures = preflight::dial_all(access, opts.timeout).await;
    if !failures.is_empty() {
        // A server's refusal can echo the operator's own credentials.
        let lines: Vec<String> = failures
            .iter()
            .map(|f| crate::inspect::sanitize::quote_with(&f.to_string(), secrets))
            .collect();
        return Err(UsageError(lines.join("\n")));
    }
    preflight::check_namespace(access, &opts.istio_namespace, opts.timeout)
        .await
        .map_err(|e| UsageError(crate::inspect::sanitize::quote_with(&e, secrets)))
}

async fn run_lab(lab: LabArgs) -> Result<i32, UsageError> {
    if lab.list_faults {
        let width = faults::FAULTS
            .iter()
            .map(|f| f.name.len())
            .max()
            .unwrap_or(0);
        for f in faults::FAULTS {
            println!("{:<width$}  {:<22}  {}", f.name, f.step.as_str(), f.summary);
        }
        return Ok(0);
    }
    if lab.list_profiles {
        let width = Profile::ALL
            .iter()
            .map(|p| p.name().len())
            .max()
            .unwrap_or(0);
        for p in Profile::ALL {
            println!("{:<width$}  {}", p.name(), p.about());
        }
        return Ok(0);
    }
    if let Some(LabAction::Serve {
        fault,
        kubeconfig_out,
        profile,
    }) = &lab.action
    {
        // `lab --fault X serve` and `lab serve --fault X` mean the same.
        let fault = fault.or(lab.fault).map(faults::get);
        let profile = profile.unwrap_or(lab.profile);
        return serve(profile, fault, kubeconfig_out.clone()).await;
    }
    let fault = lab.fault.map(faults::get);
    let running = Lab::start_profile(lab.profile, fault, |_| {})
        .await
        .map_err(|e| UsageError(format!("cannot start the lab: {e}")))?;
    let mut opts = lab.trace.options();
    lab_profile_options(&running, &mut opts);
    let (clusters, t) = lab_target(&running, &opts).await?;
    // The lab goes through the same preflight (a few milliseconds), so that
    // e.g. a mistyped --istio-namespace is caught here too.
    let access = [
        preflight::Access {
            flag: "--primary",
            context: t.primary.clone(),
            server: running.primary.url.clone(),
            client: clusters.primary.clone(),
        },
        preflight::Access {
            flag: "--remote",
            context: t.remote.clone(),
            server: running.remote.url.clone(),
            client: clusters.remote.clone(),
        },
    ];
    if let Err(e) = run_preflight(&access, &opts, &clusters.secrets).await {
        running.shutdown();
        return Err(e);
    }
    let code = trace_and_render(clusters, opts, t, &lab.trace).await;
    running.shutdown();
    Ok(code)
}

/// What a profile's lab needs of the trace that DNS and the OS store give
/// on a real machine: `external-istiod`'s public name resolves to the lab's
/// istiod (`--istiod-addr`, unless given) and its public CA is the
/// platform's roots.
pub fn lab_profile_options(lab: &Lab, opts: &mut TraceOptions) {
    if let Some(root) = &lab.public_root_pem {
        if opts.istiod_addr.is_none() {
            opts.istiod_addr = Some(lab.istiod_addr.to_string());
        }
        opts.platform_roots_pem = Some(root.clone());
    }
}

/// Clients for a running lab, built from its kubeconfig exactly as for real clusters.
pub async fn lab_target(lab: &Lab, opts: &TraceOptions) -> Result<(Clusters, Target), UsageError> {
    let kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml)
        .map_err(|e| UsageError(format!("lab kubeconfig: {e}")))?;
    let (p, _) = target::client_for(&kc, crate::lab::world::PRIMARY_CONTEXT, opts.timeout)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let (r, remote_server) =
        target::client_for(&kc, crate::lab::world::REMOTE_CONTEXT, opts.timeout)
            .await
            .map_err(|e| UsageError(e.to_string()))?;
    let t = Target {
        primary: crate::lab::world::PRIMARY_CONTEXT.into(),
        remote: crate::lab::world::REMOTE_CONTEXT.into(),
        istio_namespace: opts.istio_namespace.clone(),
        mode: Mode::Lab,
        fault: lab.fault.map(|f| f.name.to_string()),
    };
    let mut secrets = target::context_secrets(&kc, crate::lab::world::PRIMARY_CONTEXT);
    secrets.extend(target::context_secrets(
        &kc,
        crate::lab::world::REMOTE_CONTEXT,
    ));
    Ok((
        Clusters {
            primary: p,
            remote: r,
            remote_server,
            secrets,
        },
        t,
    ))
}

async fn serve(
    profile: Profile,
    fault: Option<&'static faults::Fault>,
    out: Option<PathBuf>,
) -> Result<i32, UsageError> {
    let lab = Lab::start_profile(profile, fault, |_| {})
        .await
        .map_err(|e| UsageError(format!("cannot start the lab: {e}")))?;
    // A temp dir we remove on exit, unless the user asked for a path.
    let tmp =
        tempfile::tempdir().map_err(|e| UsageError(format!("cannot create a temp dir: {e}")))?;
    let path = out.unwrap_or_else(|| tmp.path().join("kubeconfig"));
    write_private(&path, &lab.kubeconfig_yaml)
        .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
    println!(
        "meshtrace lab is running{}{}",
        if profile == Profile::Default {
            String::new()
        } else {
            format!(" as profile {}", profile.name())
        },
        fault
            .map(|f| format!(" with fault {}", f.name))
            .unwrap_or_default()
    );
    println!("kubeconfig: {}", path.display());
    println!(
        "contexts:   lab-primary ({}), lab-remote ({})",
        lab.primary.url, lab.remote.url
    );
    println!(
        "istiod:     {} (gRPC + TLS, server name istiod.istio-system.svc)",
        lab.istiod_addr
    );
    let mut extra = String::new();
    let mut env = String::new();
    if let Some(root) = &lab.public_root_pem {
        // external-istiod: the public name and the public CA stand in for DNS and the OS store.
        let root_path = path.with_file_name("public-root.pem");
        write_private(&root_path, root)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", root_path.display())))?;
        println!(
            "public CA:  {} (istiod's serving certificate is from it: the platform's roots for CA_ROOT_CA=SYSTEM)",
            root_path.display()
        );
        extra = format!(" --istiod-addr {}", lab.istiod_addr);
        env = format!("SSL_CERT_FILE={} ", root_path.display());
    }
    println!();
    println!(
        "try:  {env}meshtrace --kubeconfig {} --primary lab-primary --remote lab-remote{extra} -o text",
        path.display()
    );
    println!(
        "      kubectl --kubeconfig {} --context lab-remote get secrets,configmaps,services,pods -n istio-system",
        path.display()
    );
    println!("Ctrl-C (or SIGTERM) stops the lab.");
    let _ = std::io::stdout().flush();
    // Ctrl-C or SIGTERM: either way, stop the servers and remove the temp kubeconfig.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| UsageError(format!("cannot watch for SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    lab.shutdown();
    drop(tmp);
    eprintln!("lab stopped");
    Ok(0)
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

async fn trace_and_render(
    clusters: Clusters,
    opts: TraceOptions,
    t: Target,
    args: &TraceArgs,
) -> i32 {
    // `r` in the TUI re-runs the trace: a new engine run with the same clusters and options.
    let start = move || {
        let (tx, rx) = mpsc::unbounded_channel::<TraceEvent>();
        tokio::spawn(engine::run(clusters.clone(), opts.clone(), t.clone(), tx));
        rx
    };
    if let Some(every) = args.watch {
        if let Err(UsageError(msg)) = check_watch(args) {
            eprintln!("meshtrace: {msg}");
            return 2;
        }
        if !full_screen(args) {
            return watch_lines(start, args, every).await;
        }
    }
    match render_stream(start, args, None).await {
        Ok((report, true)) => exit_code(&report, args.fail_on_warn),
        Ok((report, false)) => {
            eprintln!(
                "meshtrace: the trace engine stopped unexpectedly ({} of {} steps finished)",
                report.steps.len(),
                crate::model::STEPS.len()
            );
            2
        }
        Err(code) => code,
    }
}

/// The output chosen: `-o`, else tui on a terminal and text otherwise.
fn output_of(args: &TraceArgs) -> Output {
    args.output.unwrap_or(if std::io::stdout().is_terminal() {
        Output::Tui
    } else {
        Output::Text
    })
}

/// Whether this run gets the full-screen TUI.
fn full_screen(args: &TraceArgs) -> bool {
    output_of(args) == Output::Tui && crate::tui::usable()
}

fn check_watch(args: &TraceArgs) -> Result<(), UsageError> {
    match output_of(args) {
        Output::Json | Output::Markdown | Output::Mermaid => Err(UsageError(format!(
            "--watch prints run after run: use it with -o tui, text or events, not -o {}",
            format!("{:?}", output_of(args)).to_lowercase()
        ))),
        _ if args.step => Err(UsageError(
            "--watch and --step do not go together: teaching mode waits for you, not for a timer"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Watch mode without the full screen: run, print, wait, run again, with
/// what changed since the previous run, until Ctrl-C (exit code of the last
/// finished run).
async fn watch_lines<F>(mut start: F, args: &TraceArgs, every: Duration) -> i32
where
    F: FnMut() -> mpsc::UnboundedReceiver<TraceEvent>,
{
    use std::collections::HashMap;
    let last_code = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let code = last_code.clone();
    let events = output_of(args) == Output::Events;
    let runs = async move {
        let mut previous: Option<HashMap<crate::model::StepId, crate::model::Status>> = None;
        for run in 1.. {
            if !events {
                println!(
                    "── run {run} · {} ──",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                );
            }
            let report = match render_stream(&mut start, args, None).await {
                Ok((report, true)) => report,
                Ok((_, false)) => {
                    eprintln!("meshtrace: the trace engine stopped unexpectedly");
                    return 2;
                }
                Err(c) => return c,
            };
            code.store(
                exit_code(&report, args.fail_on_warn),
                std::sync::atomic::Ordering::SeqCst,
            );
            let now: HashMap<_, _> = report.steps.iter().map(|r| (r.id, r.status)).collect();
            if let (Some(prev), false) = (&previous, events) {
                let changed: Vec<String> = report
                    .steps
                    .iter()
                    .filter_map(|r| {
                        let before = prev.get(&r.id)?;
                        (*before != r.status).then(|| {
                            format!("{}: {} → {}", r.id, before.as_str(), r.status.as_str())
                        })
                    })
                    .collect();
                if changed.is_empty() {
                    println!("nothing changed since run {}", run - 1);
                } else {
                    println!("Δ changed since run {}: {}", run - 1, changed.join(", "));
                }
            }
            previous = Some(now);
            if !events {
                println!(
                    "next run in {} (Ctrl-C stops)\n",
                    humantime::format_duration(every)
                );
            }
            let _ = std::io::stdout().flush();
            tokio::time::sleep(every).await;
        }
        0
    };
    tokio::select! {
        c = runs => c,
        _ = tokio::signal::ctrl_c() => last_code.load(std::sync::atomic::Ordering::SeqCst),
    }
}

async fn run_replay(r: ReplayArgs) -> Result<i32, UsageError> {
    let t = &r.trace;
    let defaults = TraceOptions::default();
    let ignored = [
        ("--cluster-id", t.cluster_id.is_some()),
        ("--primary-cluster-id", t.primary_cluster_id.is_some()),
        ("--gateway", t.gateway.is_some()),
        ("--istiod-addr", t.istiod_addr.is_some()),
        ("--istiod-debug-addr", t.istiod_debug_addr.is_some()),
        ("--no-csr", t.no_csr),
        ("--timeout", t.timeout != defaults.timeout),
        ("--warn-within", t.warn_within != defaults.warn_within),
        ("--token-audience", t.token_audience.is_some()),
        ("--revision", t.revision.is_some()),
        (
            "--istio-namespace",
            t.istio_namespace != defaults.istio_namespace,
        ),
    ];
    if let Some((flag, _)) = ignored.iter().find(|(_, set)| *set) {
        return Err(UsageError(format!(
            "{flag} changes how a trace runs, and replay runs none: it shows the recorded steps as they were"
        )));
    }
    let rec = crate::replay::load(&r.file).map_err(UsageError)?;
    let speed = r.speed.unwrap_or(if full_screen(t) { 1.0 } else { 0.0 });
    let start = move || crate::replay::play(rec.clone(), speed);
    match render_stream(start, t, Some((&r.file, speed))).await {
        Ok((report, finished)) => {
            if !finished {
                eprintln!(
                    "meshtrace: the recording ends before the trace finished ({} of {} steps)",
                    report.steps.len(),
                    crate::model::STEPS.len()
                );
                // Nothing failed in what was recorded, but that is not a pass.
                if report.verdict != Verdict::Fail {
                    return Ok(2);
                }
            }
            Ok(exit_code(&report, t.fail_on_warn))
        }
        Err(code) => Ok(code),
    }
}

/// What a stream of events ended as: the report, and whether the stream
/// reached `trace-finished`.
type Streamed = (TraceReport, bool);

/// Renders one stream of events (a live engine run or a replay) in the chosen
/// output; `start` begins a new stream (the TUI's `r` calls it again).
/// Returns the folded report, or the exit code when rendering failed.
async fn render_stream<F>(
    mut start: F,
    args: &TraceArgs,
    replay: Option<(&str, f64)>,
) -> Result<Streamed, i32>
where
    F: FnMut() -> mpsc::UnboundedReceiver<TraceEvent>,
{
    let output = output_of(args);
    let style = text_style(args);
    if full_screen(args) {
        let first = start();
        let tui_opts = crate::tui::TuiOptions {
            theme: args.theme.clone(),
            teaching: args.step,
            replay: replay.map(|(file, _)| file.to_string()),
            speed: replay.map_or(1.0, |(_, speed)| speed),
            watch: if replay.is_some() { None } else { args.watch },
        };
        let report = match crate::tui::run_tui(first, start, tui_opts).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("meshtrace: the terminal UI failed: {e}");
                return Err(2);
            }
        };
        // The result stays in the scrollback once the alternate screen is gone.
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(render::text::render(&report, style).as_bytes());
        let _ = stdout.flush();
        if let Some(sig) = crate::tui::signalled() {
            eprintln!("meshtrace: stopped by signal {sig}");
            return Err(128 + sig);
        }
        let finished = report.steps.len();
        if finished < crate::model::STEPS.len() {
            eprintln!(
                "meshtrace: quit before the trace finished ({finished} of {} steps)",
                crate::model::STEPS.len()
            );
            if report.verdict == Verdict::Pass {
                return Err(130);
            }
        }
        return Ok((report, true));
    }
    let mut rx = start();
    let mut state = crate::model::TraceState::default();
    let mut stdout = std::io::stdout();
    while let Some(e) = rx.recv().await {
        state.apply(&e);
        match (output, &e) {
            // Not a terminal, or one too small for the full screen: the live
            // line view, each step printed as it finishes, in that order.
            (Output::Tui, TraceEvent::TraceStarted { target, .. }) => {
                let _ = writeln!(stdout, "{}\n", render::text::header_for(target));
            }
            (Output::Tui, TraceEvent::StepFinished { result }) => {
                let _ = write!(stdout, "{}", render::text::step_block(result, style));
                let _ = stdout.flush();
            }
            (Output::Events, _) => {
                if let Ok(line) = serde_json::to_string(&e) {
                    let _ = writeln!(stdout, "{line}");
                    let _ = stdout.flush();
                }
            }
            _ => {}
        }
    }
    let report = state.report();
    let text = match output {
        Output::Tui => format!("\n{}\n", render::summary_line(&report)),
        Output::Text => render::text::render(&report, style),
        Output::Json => render::json::render(&report),
        Output::Markdown => render::markdown::render(&report),
        Output::Mermaid => render::mermaid::render(&report),
        Output::Events => String::new(),
    };
    let _ = stdout.write_all(text.as_bytes());
    if !text.is_empty() && !text.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
    Ok((report, state.finished.is_some()))
}

fn text_style(args: &TraceArgs) -> render::text::TextStyle {
    render::text::TextStyle {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        verbose: args.verbose,
        ascii: false,
    }
}

pub fn exit_code(r: &TraceReport, fail_on_warn: bool) -> i32 {
    match r.verdict {
        Verdict::Pass => 0,
        Verdict::Warn if fail_on_warn => 1,
        Verdict::Warn => 0,
        Verdict::Fail => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_namespace_slash_name() {
        for ok in [
            "istio-system/istio-eastwestgateway",
            "gw/istio-ingressgateway-7d9f8b6c5-x2x9z",
            "a/b.c",
        ] {
            assert_eq!(parse_gateway(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "foo", "/x", "x/", "a/b/c", "Istio/gw", "ns/Gw", "-a/b", "a/b_c", "",
        ] {
            let e = parse_gateway(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(parse_gateway(&format!("{}/x", "a".repeat(64))).is_err());
    }

    #[test]
    fn addresses_are_host_and_a_port_from_1_to_65535() {
        for ok in [
            "127.0.0.1:15012",
            "[::1]:15012",
            "host.example:15012",
            "istiod.istio-system.svc:1",
            "x:65535",
        ] {
            assert_eq!(parse_host_port(ok).as_deref(), Ok(ok));
        }
        for (bad, says) in [
            ("nope", "not HOST:PORT"),
            (
                "127.0.0.1:99999",
                "\"99999\" is not a number from 1 to 65535",
            ),
            ("127.0.0.1:0", "from 1 to 65535"),
            ("x:+1", "from 1 to 65535"),
            (":15012", "no host"),
            ("::1:15012", "brackets"),
            ("[nope]:15012", "neither an IP address nor a DNS name"),
            ("a b:15012", "neither"),
        ] {
            let e = parse_host_port(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains(says),
                "{bad}: {e}"
            );
        }
        assert!(parse_debug_addr("http://127.0.0.1:15014/").is_ok());
        let e = parse_debug_addr("http://127.0.0.1/").unwrap_err();
        assert!(e.contains("\"http://127.0.0.1/\""), "{e}");
    }

    #[test]
    fn durations_must_be_above_zero() {
        assert_eq!(
            parse_positive_duration("1500ms"),
            Ok(Duration::from_millis(1500))
        );
        let e = parse_positive_duration("0s").unwrap_err();
        assert!(e.contains("\"0s\"") && e.contains("zero"), "{e}");
        assert!(parse_positive_duration("fast").is_err());
    }
}
