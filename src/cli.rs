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

mod bundle;

/// `meshtrace --version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MESHTRACE_COMMIT"),
    ")"
);

const EXAMPLES: &str = "\
Examples:
  meshtrace --primary ctx1 --remote ctx2            trace one remote (the TUI on a terminal)
  meshtrace --primary ctx1 --remote ctx2 -o json    the report for a ticket or a script
  meshtrace --primary ctx1                          every remote the primary registers (fleet mode)
  meshtrace lab --remotes 3 --fault stale-root@2    a lab of three remotes, the second broken
  meshtrace lab                                     the built-in lab, no cluster needed
  meshtrace lab --fault stale-root --step           teach: break a hop, reveal it step by step
  meshtrace explain remote-rbac/no-tokenreview-create
  meshtrace completions bash > /etc/bash_completion.d/meshtrace

Exit codes: 0 every step passed, 1 a step failed (or warned with --fail-on-warn),
2 meshtrace could not run (a bad flag, a missing context).
Docs: docs/checks.md (every step and finding code), docs/flow.md (the flow).";

#[derive(Parser, Debug)]
#[command(
    name = "meshtrace",
    version = VERSION,
    about = "Trace how a remote cluster's Istio gateway authenticates to the primary istiod, and point at the step that breaks",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// kube context of the primary cluster (runs istiod); default: the kubeconfig's current context, when it is not the --remote
    #[arg(long, value_name = "CTX")]
    pub primary: Option<String>,
    /// kube context of the remote cluster (runs the gateway, no istiod); repeat it, or leave it out, to trace every remote the primary registers (fleet mode)
    #[arg(long, value_name = "CTX")]
    pub remote: Vec<String>,
    /// Fleet mode: trace the remote of cluster ID ID (a remote secret's key) through kube context CTX (repeatable); default: the context whose server is the remote secret's
    #[arg(long, value_name = "ID=CTX", value_parser = parse_remote_context)]
    pub remote_context: Vec<(String, String)>,
    /// kubeconfig file (repeatable); default $KUBECONFIG, else ~/.kube/config
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Vec<PathBuf>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

/// `--remote-context ID=CTX`: a cluster ID and a kube context, both non-empty.
fn parse_remote_context(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, ctx)) if !id.is_empty() && !ctx.is_empty() => {
            Ok((id.to_string(), ctx.to_string()))
        }
        _ => Err(format!(
            "{s:?} is not ID=CONTEXT (a cluster ID, the key of its remote secret, then the kube context to trace it through, e.g. remote-1=kind-remote-1)"
        )),
    }
}

/// `--fault NAME[@INDEX]` of the lab: a fault, and which remote it breaks
/// (from 1; default the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAt {
    pub id: faults::FaultId,
    pub at: Option<usize>,
}

fn parse_fault_at(s: &str) -> Result<FaultAt, String> {
    let (name, at) = match s.split_once('@') {
        None => (s, None),
        Some((name, i)) => match i.parse::<usize>() {
            Ok(n) if n >= 1 && i.bytes().all(|c| c.is_ascii_digit()) => (name, Some(n)),
            _ => {
                return Err(format!(
                    "{s:?}: {i:?} after @ is not a remote's number (1 for the first, up to --remotes)"
                ));
            }
        },
    };
    Ok(FaultAt {
        id: parse_fault(name)?,
        at,
    })
}

fn parse_remotes(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_LAB_REMOTES).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of remotes from 1 to {MAX_LAB_REMOTES}"
        )),
    }
}

/// The most remotes `lab --remotes` builds (each an API server on loopback).
pub const MAX_LAB_REMOTES: usize = 200;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the trace against the built-in lab: two simulated clusters and a simulated istiod, no cluster needed
    Lab(LabArgs),
    /// Replay a recorded run (`-o events` lines or a `-o json` report) into any output, the TUI included
    Replay(ReplayArgs),
    /// Print the documentation of a step or a finding code (e.g. remote-rbac/no-tokenreview-create), offline
    Explain(ExplainArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `meshtrace man | man -l -`
    Man,
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
    /// Inject a named fault (see --list-faults); NAME@INDEX breaks remote INDEX (from 1) of --remotes
    #[arg(long, value_name = "NAME[@INDEX]", value_parser = parse_fault_at)]
    pub fault: Option<FaultAt>,
    /// Build the lab with N remotes around one primary (one istiod, one mesh root); with more than one, every remote is traced (fleet mode)
    #[arg(long, value_name = "N", value_parser = parse_remotes, default_value_t = 1, hide_default_value = true)]
    pub remotes: usize,
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
        /// Inject a named fault; NAME@INDEX breaks remote INDEX (from 1) of --remotes
        #[arg(long, value_name = "NAME[@INDEX]", value_parser = parse_fault_at)]
        fault: Option<FaultAt>,
        /// Build the lab with N remotes (contexts lab-remote-1 to lab-remote-N)
        #[arg(long, value_name = "N", value_parser = parse_remotes)]
        remotes: Option<usize>,
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
    /// Where to dial istiod's webhook port HOST:PORT (15017) for injection-webhook, keeping the webhook's server name (default: where the remote API server would send it: the webhook's Service and EndpointSlice, or its URL)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, global = true)]
    pub istiod_webhook_addr: Option<String>,
    /// istiod's monitoring address HOST:PORT (plain HTTP), to read istiod's own view of its remote clusters; a real istiod answers only on its loopback, so: kubectl -n istio-system port-forward deploy/istiod 15014, then 127.0.0.1:15014 (default: try the primary API server's pod proxy)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_debug_addr, global = true)]
    pub istiod_debug_addr: Option<String>,
    /// Passive mode: do not send a CSR to istiod
    #[arg(long, global = true)]
    pub no_csr: bool,
    /// write the trace for a ticket into DIR as well: report.json, report.md and events.jsonl (the recording `meshtrace replay` shows); the output chosen with -o is unchanged
    #[arg(long, value_name = "DIR", global = true)]
    pub output_dir: Option<PathBuf>,
    /// do not run STEP (repeatable, or comma-separated), e.g. where your account may not list the remote's webhook configurations: it is reported skipped (`<step>/skipped-by-flag`) and what needs it is blocked
    #[arg(long, value_name = "STEP", value_delimiter = ',', value_parser = parse_step, global = true)]
    pub skip: Vec<crate::model::StepId>,
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
    /// Theme of the terminal UI: default, light, colorblind, mono or high-contrast (t cycles them; NO_COLOR forces mono)
    #[arg(long, value_name = "NAME", default_value = "default", value_parser = parse_theme, global = true)]
    pub theme: String,
    /// A theme file for the terminal UI: JSON whose slots (e.g. {"fail": {"fg": "#ff5f5f", "bold": true}}) replace those of --theme; the others stay
    #[arg(long, value_name = "PATH", value_parser = parse_theme_file, global = true)]
    pub theme_file: Option<crate::tui::theme::Overrides>,
    /// Watch mode: run the trace again this long after each run ends, e.g. 30s (tui, text and events); Ctrl-C stops
    #[arg(long, value_name = "DURATION", value_parser = parse_watch, global = true)]
    pub watch: Option<Duration>,
    /// Teaching mode for the terminal UI: reveal the flow one hop at a time (Space/→ next, ← back), with what happens at each hop
    #[arg(long, global = true)]
    pub step: bool,
    /// Fleet mode: how many remotes are traced at once
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256), global = true)]
    pub parallel: u16,
}

/// A step id, as `meshtrace explain --list` lists them, with did-you-mean.
fn parse_step(s: &str) -> Result<crate::model::StepId, String> {
    crate::model::StepId::parse(s).ok_or_else(|| {
        let ids: Vec<&str> = crate::model::STEPS.iter().map(|i| i.id.as_str()).collect();
        let near = ids
            .iter()
            .min_by_key(|id| crate::probe::preflight::edit_distance(s, id))
            .filter(|id| crate::probe::preflight::edit_distance(s, id) <= s.len().max(4) / 2);
        match near {
            Some(id) => format!("{s:?} is not a step; did you mean {id}?"),
            None => format!("{s:?} is not a step; the steps: {}", ids.join(", ")),
        }
    })
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

/// Read and check the whole file now: a bad one is exit 2 before any trace.
fn parse_theme_file(s: &str) -> Result<crate::tui::theme::Overrides, String> {
    crate::tui::theme::Overrides::load(s)
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
            istiod_webhook_addr: self.istiod_webhook_addr.clone(),
            no_csr: self.no_csr,
            timeout: self.timeout,
            warn_within: self.warn_within,
            token_audience: self.token_audience.clone(),
            revision: self.revision.clone(),
            platform_roots_pem: None,
            istiod_debug_addr: self.istiod_debug_addr.clone(),
            kubeconfig: Vec::new(),
            skip: self
                .skip
                .iter()
                .map(|s| engine::Skip::by_flag(*s))
                .collect(),
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
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "meshtrace", &mut std::io::stdout());
            Ok(0)
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| UsageError(format!("cannot render the manual page: {e}")))?;
            std::io::stdout()
                .write_all(&out)
                .map_err(|e| UsageError(format!("cannot write the manual page: {e}")))?;
            Ok(0)
        }
        None => {
            let primary = match cli.primary.clone() {
                Some(p) => p,
                None => default_primary(&cli)?,
            };
            if cli.remote.len() != 1 || !cli.remote_context.is_empty() {
                return run_fleet_clusters(cli, primary).await;
            }
            let remote = cli.remote[0].clone();
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
                    server: primary_server.clone(),
                    client: p.clone(),
                },
                preflight::Access {
                    flag: "--remote",
                    context: remote.clone(),
                    server: remote_server.clone(),
                    client: r.clone(),
                },
            ];
            let clusters = Clusters {
                primary: p,
                remote: r,
                remote_server,
                primary_server,
                secrets: secrets.clone(),
            };
            let t = Target {
                primary,
                remote,
                istio_namespace: opts.istio_namespace.clone(),
                mode: Mode::Clusters,
                fault: None,
                cluster_id: None,
            };
            // The first trace runs beside the preflight (its requests only
            // read, or create nothing) and is dropped unseen when the
            // preflight refuses: the operator's access costs no round trip
            // before the trace.
            let (tx, first) = mpsc::unbounded_channel::<TraceEvent>();
            let run = tokio::spawn(engine::run(clusters.clone(), opts.clone(), t.clone(), tx));
            if let Err(e) = run_preflight(&access, &opts, &secrets).await {
                run.abort();
                return Err(e);
            }
            Ok(trace_and_render(clusters, opts, t, &cli.trace, first).await)
        }
    }
}

/// No `--primary`: the kubeconfig's current context, as kubectl would use,
/// where that is unambiguous (it is set, and it is not a `--remote`); said
/// on stderr so that the run names what it traced.
fn default_primary(cli: &Cli) -> Result<String, UsageError> {
    const NEED: &str = "need --primary CTX (and --remote CTX for one remote, none for every remote the primary registers; or `meshtrace lab` for the built-in lab); see --help";
    let paths = target::kubeconfig_paths(&cli.kubeconfig);
    let kc = target::load_kubeconfig(&paths)
        .map_err(|e| UsageError(format!("{NEED}\n(no current context to default to: {e})")))?;
    let current = kc.current_context.clone().filter(|c| !c.is_empty());
    let Some(current) = current else {
        return Err(UsageError(format!(
            "{NEED}\n(the kubeconfig sets no current-context to default to)"
        )));
    };
    if cli.remote.contains(&current) {
        return Err(UsageError(format!(
            "no --primary, and the current context {current:?} is the --remote one: pass --primary CTX for the primary (istiod's) cluster"
        )));
    }
    eprintln!("meshtrace: no --primary: the current context {current:?} is the primary");
    Ok(current)
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
        remotes,
    }) = &lab.action
    {
        // `lab --fault X serve` and `lab serve --fault X` mean the same.
        let fault = fault.or(lab.fault);
        let profile = profile.unwrap_or(lab.profile);
        let remotes = remotes.unwrap_or(lab.remotes);
        check_fault_at(fault, remotes)?;
        return serve(profile, fault, remotes, kubeconfig_out.clone()).await;
    }
    check_fault_at(lab.fault, lab.remotes)?;
    if lab.remotes > 1 {
        return run_lab_fleet(lab).await;
    }
    let fault = lab.fault.map(|f| faults::get(f.id));
    // A session, not a bare Lab: the TUI's b and f rebuild and fix it.
    let session = crate::lab::session::LabSession::start(lab.profile, fault, lab.trace.options())
        .await
        .map_err(UsageError)?;
    let session = std::sync::Arc::new(session);
    let Some((clusters, opts, t)) = session.parts() else {
        return Err(UsageError("the lab did not start".into()));
    };
    let (primary_url, remote_url) = session.urls();
    // The lab goes through the same preflight (a few milliseconds), so that
    // e.g. a mistyped --istio-namespace is caught here too.
    let access = [
        preflight::Access {
            flag: "--primary",
            context: t.primary.clone(),
            server: primary_url,
            client: clusters.primary.clone(),
        },
        preflight::Access {
            flag: "--remote",
            context: t.remote.clone(),
            server: remote_url,
            client: clusters.remote.clone(),
        },
    ];
    // As for clusters: the first trace runs beside the preflight.
    let mut first = Some(session.start_trace());
    if let Err(e) = run_preflight(&access, &opts, &clusters.secrets).await {
        session.shutdown();
        return Err(e);
    }
    let traced = session.clone();
    let code = render_traces(
        move || first.take().unwrap_or_else(|| traced.start_trace()),
        &lab.trace,
        Some(session.clone()),
    )
    .await;
    session.shutdown();
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
        if opts.istiod_webhook_addr.is_none() {
            opts.istiod_webhook_addr = Some(lab.istiod.webhook_addr.to_string());
        }
        opts.platform_roots_pem = Some(root.clone());
    }
}

/// Clients for a running lab, built from its kubeconfig exactly as for real clusters.
pub async fn lab_target(lab: &Lab, opts: &TraceOptions) -> Result<(Clusters, Target), UsageError> {
    let kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml)
        .map_err(|e| UsageError(format!("lab kubeconfig: {e}")))?;
    let (p, primary_server) =
        target::client_for(&kc, crate::lab::world::PRIMARY_CONTEXT, opts.timeout)
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
        cluster_id: None,
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
            primary_server,
            secrets,
        },
        t,
    ))
}

/// `NAME@INDEX` must name one of the lab's remotes.
fn check_fault_at(fault: Option<FaultAt>, remotes: usize) -> Result<(), UsageError> {
    match fault.and_then(|f| f.at.map(|at| (f, at))) {
        Some((f, at)) if at > remotes => Err(UsageError(format!(
            "--fault {}@{at}: the lab has {remotes} remote{} (--remotes {remotes}); give an index from 1 to {remotes}",
            f.id.name(),
            if remotes == 1 { "" } else { "s" }
        ))),
        _ => Ok(()),
    }
}

/// The lab's fault as a target names it: `NAME`, or `NAME@INDEX` in a lab
/// of several remotes.
fn fault_label(fault: Option<FaultAt>, remotes: usize) -> Option<String> {
    fault.map(|f| {
        if remotes > 1 {
            format!("{}@{}", f.id.name(), f.at.unwrap_or(1))
        } else {
            f.id.name().to_string()
        }
    })
}

async fn serve(
    profile: Profile,
    fault: Option<FaultAt>,
    remotes: usize,
    out: Option<PathBuf>,
) -> Result<i32, UsageError> {
    let lab = Lab::start_fleet(
        profile,
        remotes,
        fault.map(|f| faults::get(f.id)),
        fault.and_then(|f| f.at).unwrap_or(1),
        |_| {},
    )
    .await
    .map_err(|e| UsageError(format!("cannot start the lab: {e}")))?;
    let fault = fault.map(|f| faults::get(f.id));
    // A temp dir we remove on exit, unless the user asked for a path.
    let tmp =
        tempfile::tempdir().map_err(|e| UsageError(format!("cannot create a temp dir: {e}")))?;
    let path = out.unwrap_or_else(|| tmp.path().join("kubeconfig"));
    crate::lab::write_private(&path, &lab.kubeconfig_yaml)
        .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
    println!(
        "meshtrace lab is running{}{}{}",
        if profile == Profile::Default {
            String::new()
        } else {
            format!(" as profile {}", profile.name())
        },
        fault
            .map(|f| format!(" with fault {}", f.name))
            .unwrap_or_default(),
        lab.fault_at
            .filter(|_| remotes > 1)
            .map(|i| format!(" on remote {i}"))
            .unwrap_or_default()
    );
    println!("kubeconfig: {}", path.display());
    let remote_list: Vec<String> = lab
        .remotes()
        .iter()
        .map(|(_, ctx, url)| format!("{ctx} ({url})"))
        .collect();
    println!(
        "contexts:   lab-primary ({}), {}",
        lab.primary.url,
        remote_list.join(", ")
    );
    println!(
        "istiod:     {} (gRPC + TLS, server name istiod.istio-system.svc)",
        lab.istiod_addr
    );
    println!(
        "webhook:    {} (istiod's 15017: HTTPS /inject, the remote's istiod EndpointSlice port tcp-webhook)",
        lab.istiod.webhook_addr
    );
    let mut extra = String::new();
    let mut env = String::new();
    if let Some(root) = &lab.public_root_pem {
        // external-istiod: the public name and the public CA stand in for DNS and the OS store.
        let root_path = path.with_file_name("public-root.pem");
        crate::lab::write_private(&root_path, root)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", root_path.display())))?;
        println!(
            "public CA:  {} (istiod's serving certificate is from it: the platform's roots for CA_ROOT_CA=SYSTEM)",
            root_path.display()
        );
        extra = format!(
            " --istiod-addr {} --istiod-webhook-addr {}",
            lab.istiod_addr, lab.istiod.webhook_addr
        );
        env = format!("SSL_CERT_FILE={} ", root_path.display());
    }
    println!();
    let remote_flag = if remotes > 1 {
        String::new()
    } else {
        format!(" --remote {}", lab.remote_context)
    };
    println!(
        "try:  {env}meshtrace --kubeconfig {} --primary lab-primary{remote_flag}{extra} -o text",
        path.display()
    );
    println!(
        "      kubectl --kubeconfig {} --context {} get secrets,configmaps,services,pods -n istio-system",
        path.display(),
        lab.remote_context
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

/// Fleet mode is refused what only makes sense for one remote.
fn check_fleet_args(args: &TraceArgs) -> Result<(), UsageError> {
    let one = "pass one --remote CTX to trace one remote";
    if args.cluster_id.is_some() {
        return Err(UsageError(format!(
            "--cluster-id names the remote of one trace; fleet mode (no --remote, or several) traces each remote by its own remote secret key: {one}"
        )));
    }
    if args.step {
        return Err(UsageError(format!(
            "--step teaches the flow of one remote: {one}"
        )));
    }
    if let Some(dir) = &args.output_dir {
        return Err(UsageError(format!(
            "--output-dir {} bundles one remote's trace for a ticket; for every remote use -o json (meshtrace.fleet.v1), or {one}",
            dir.display()
        )));
    }
    match output_of(args) {
        o @ (Output::Markdown | Output::Mermaid | Output::Events) => Err(UsageError(format!(
            "-o {} shows one remote's trace; fleet mode (no --remote, or several) prints -o text, json or tui: {one}",
            format!("{o:?}").to_lowercase()
        ))),
        _ => Ok(()),
    }
}

/// Fleet mode through the user's kubeconfig: `--primary` with no
/// `--remote`, several, or `--remote-context`.
async fn run_fleet_clusters(cli: Cli, primary: String) -> Result<i32, UsageError> {
    if cli.remote.contains(&primary) {
        return Err(UsageError(format!(
            "--primary and --remote are the same context {primary:?}: meshtrace traces remote clusters against their primary"
        )));
    }
    if let Some((id, c)) = cli.remote_context.iter().find(|(_, c)| *c == primary) {
        return Err(UsageError(format!(
            "--remote-context {:?}: {c:?} is the --primary context; give the remote's own",
            format!("{id}={c}")
        )));
    }
    check_fleet_args(&cli.trace)?;
    let paths = target::kubeconfig_paths(&cli.kubeconfig);
    let kc = target::load_kubeconfig(&paths).map_err(|e| UsageError(e.to_string()))?;
    let mut opts = cli.trace.options();
    opts.kubeconfig = cli.kubeconfig.clone();
    let setup = FleetSetup {
        kc,
        primary,
        given: cli.remote,
        explicit: cli.remote_context,
        mode: Mode::Clusters,
        fault: None,
        lab: None,
    };
    fleet(setup, opts, &cli.trace).await
}

/// `meshtrace lab --remotes N` (N > 1): the lab's contexts, traced as a fleet.
async fn run_lab_fleet(lab: LabArgs) -> Result<i32, UsageError> {
    check_fleet_args(&lab.trace)?;
    // A session, not a bare Lab: the fleet screen's b and f rebuild and fix it.
    let session = crate::lab::session::LabSession::start_fleet(
        lab.profile,
        lab.remotes,
        lab.fault.map(|f| faults::get(f.id)),
        lab.fault.and_then(|f| f.at).unwrap_or(1),
        lab.trace.options(),
    )
    .await
    .map_err(UsageError)?;
    let session = std::sync::Arc::new(session);
    let Some((yaml, opts)) = session.kubeconfig_and_options() else {
        return Err(UsageError("the lab did not start".into()));
    };
    let kc = match kube::config::Kubeconfig::from_yaml(&yaml) {
        Ok(kc) => kc,
        Err(e) => {
            session.shutdown();
            return Err(UsageError(format!("lab kubeconfig: {e}")));
        }
    };
    let setup = FleetSetup {
        kc,
        primary: crate::lab::world::PRIMARY_CONTEXT.into(),
        given: vec![],
        explicit: vec![],
        mode: Mode::Lab,
        fault: fault_label(lab.fault, lab.remotes),
        lab: Some(session.clone()),
    };
    let code = fleet(setup, opts, &lab.trace).await;
    session.shutdown();
    code
}

/// What a fleet run starts from.
struct FleetSetup {
    kc: kube::config::Kubeconfig,
    primary: String,
    /// `--remote` contexts (candidates for matching, traced even when no
    /// remote secret points at them).
    given: Vec<String>,
    /// `--remote-context ID=CTX`.
    explicit: Vec<(String, String)>,
    mode: Mode,
    fault: Option<String>,
    /// The running lab, when the fleet screen's `b` and `f` may break and
    /// fix it (`meshtrace lab --remotes N`).
    lab: Option<std::sync::Arc<crate::lab::session::LabSession>>,
}

/// Reads which remotes the primary registers, finds a context for each,
/// checks access (the preflight, once per context), then traces them all
/// and renders the fleet.
async fn fleet(setup: FleetSetup, opts: TraceOptions, args: &TraceArgs) -> Result<i32, UsageError> {
    let run = plan_fleet(&setup, &opts, args).await?;
    Ok(fleet_render(run, args, &setup).await)
}

/// What one fleet run traces: the remotes the primary registers now, each
/// with its context (or istiod's view), after the preflight. `--watch` plans
/// again before every run, so added and removed remote secrets are followed.
async fn plan_fleet(
    setup: &FleetSetup,
    opts: &TraceOptions,
    args: &TraceArgs,
) -> Result<FleetRun, UsageError> {
    use crate::engine::fleet;
    // A lab the TUI can break gets new ports (and a new public CA) with
    // every rebuild: plan from the lab as it runs now.
    let current = setup.lab.as_ref().and_then(|l| l.kubeconfig_and_options());
    let (kc, opts) = match current {
        Some((yaml, lab_opts)) => (
            kube::config::Kubeconfig::from_yaml(&yaml)
                .map_err(|e| UsageError(format!("lab kubeconfig: {e}")))?,
            lab_opts,
        ),
        None => (setup.kc.clone(), opts.clone()),
    };
    let kc = &kc;
    let primary = setup.primary.clone();
    // Every named context must exist before anything is dialled.
    let known = |c: &str| kc.contexts.iter().any(|x| x.name == c);
    let names = || {
        kc.contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for g in &setup.given {
        if !known(g) {
            return Err(UsageError(format!(
                "--remote {g:?}: no such context in the kubeconfig (contexts: {})",
                names()
            )));
        }
    }
    for (id, c) in &setup.explicit {
        if !known(c) {
            return Err(UsageError(format!(
                "--remote-context {:?}: no context {c:?} in the kubeconfig (contexts: {})",
                format!("{id}={c}"),
                names()
            )));
        }
    }
    let (p, primary_server) = target::client_for(kc, &primary, opts.timeout)
        .await
        .map_err(|e| UsageError(format!("--primary: {e}")))?;
    let primary_secrets = target::context_secrets(kc, &primary);
    run_preflight(
        &[preflight::Access {
            flag: "--primary",
            context: primary.clone(),
            server: primary_server.clone(),
            client: p.clone(),
        }],
        &opts,
        &primary_secrets,
    )
    .await?;
    let (cached, _) = crate::probe::kube_cache::shared_reads(p.clone());
    let reg = fleet::registry(&cached, &opts).await.map_err(UsageError)?;
    let planned = fleet::plan(
        &reg,
        &setup.explicit,
        &setup.given,
        &target::context_servers(kc),
        &primary,
    )
    .map_err(UsageError)?;
    // One client per context used, and one preflight for all of them.
    let mut clients: std::collections::BTreeMap<String, (kube::Client, String)> =
        Default::default();
    for c in planned.iter().filter_map(|x| x.remote.context.clone()) {
        if clients.contains_key(&c) {
            continue;
        }
        let got = target::client_for(kc, &c, opts.timeout)
            .await
            .map_err(|e| UsageError(format!("remote context {c:?}: {e}")))?;
        clients.insert(c, got);
    }
    let mut all_secrets = primary_secrets.clone();
    for c in clients.keys() {
        all_secrets.extend(target::context_secrets(kc, c));
    }
    let access: Vec<preflight::Access> = clients
        .iter()
        .map(|(c, (client, server))| preflight::Access {
            flag: "--remote",
            context: c.clone(),
            server: server.clone(),
            client: client.clone(),
        })
        .collect();
    // A remote context that fails its preflight stops only its own remote:
    // that remote is traced as one without a context (istiod's view, with
    // its remote secret's credentials), and the steps it skips say why.
    let mut failed: std::collections::BTreeMap<String, String> = Default::default();
    if !access.is_empty() {
        for f in preflight::dial_all(&access, opts.timeout).await {
            let line = crate::inspect::sanitize::quote_with(&f.to_string(), &all_secrets);
            // (On screen, each such remote's skipped steps say it.)
            if !crate::tui::on_screen() {
                eprintln!(
                    "meshtrace: {line}; that remote is traced with its remote secret's credentials"
                );
            }
            failed.insert(f.context.clone(), line);
        }
        let usable: Vec<_> = access
            .into_iter()
            .filter(|a| !failed.contains_key(&a.context))
            .collect();
        if !usable.is_empty() {
            preflight::check_namespace(&usable, &opts.istio_namespace, opts.timeout)
                .await
                .map_err(|e| UsageError(crate::inspect::sanitize::quote_with(&e, &all_secrets)))?;
        }
    }
    let mut templates = Vec::with_capacity(planned.len());
    for x in planned {
        let mut o = opts.clone();
        let id = x.remote.cluster_id.clone();
        let failed_context = x
            .remote
            .context
            .as_ref()
            .and_then(|c| failed.get(c).map(|w| (c, w)));
        if let (Some((_, why)), None) = (failed_context, x.registered) {
            // No remote secret to fall back on: nothing to trace it with.
            return Err(UsageError(why.clone()));
        }
        let usable_context = x
            .remote
            .context
            .as_ref()
            .filter(|c| !failed.contains_key(*c));
        let (remote, remote_server, mut secrets, context) = match usable_context {
            Some(c) => {
                let (client, server) = clients[c].clone();
                (client, server, target::context_secrets(kc, c), c.clone())
            }
            None => {
                let r = &reg.remotes[x.registered.unwrap_or_default()];
                let (view, s) = fleet::istiod_view(r, &reg, &opts).await;
                let mut skips = fleet::skips_without_context(&r.cluster_id, view.is_some());
                if let Some((c, why)) = failed_context {
                    skips = fleet::after_failed_preflight(skips, &r.cluster_id, c, why);
                }
                o.skip.extend(skips);
                if view.is_none() {
                    // No gateway to read its cluster ID from: the key is it.
                    o.cluster_id = Some(r.cluster_id.clone());
                }
                (
                    // No client for the remote: one that reaches nobody
                    // (the steps that read the remote are skipped anyway).
                    view.or_else(|| fleet::unreachable_client(opts.timeout))
                        .ok_or_else(|| UsageError("cannot build a kube client".into()))?,
                    r.server.clone().unwrap_or_default(),
                    s,
                    // No context: empty (the fixes name it by a variable, Target::context_var).
                    String::new(),
                )
            }
        };
        secrets.extend(primary_secrets.iter().cloned());
        templates.push(fleet::Prepared {
            remote: x.remote.clone(),
            clusters: Clusters {
                primary: p.clone(),
                remote,
                remote_server,
                primary_server: primary_server.clone(),
                secrets,
            },
            opts: o,
            target: Target {
                primary: primary.clone(),
                remote: context,
                istio_namespace: opts.istio_namespace.clone(),
                mode: setup.mode,
                fault: setup
                    .lab
                    .as_ref()
                    .map_or_else(|| setup.fault.clone(), |l| l.fault_label()),
                cluster_id: id,
            },
        });
    }
    let run = FleetRun {
        templates,
        primary_client: p,
        primary,
        opts,
        mode: setup.mode,
        fault: setup
            .lab
            .as_ref()
            .map_or_else(|| setup.fault.clone(), |l| l.fault_label()),
        ignored: reg.ignored,
        parallel: usize::from(args.parallel),
    };
    Ok(run)
}

/// Everything one fleet run needs, re-runnable (`--watch`, the TUI's `r`):
/// each run gets a fresh shared-reads cache over the primary's client.
#[derive(Clone)]
pub struct FleetRun {
    templates: Vec<crate::engine::fleet::Prepared>,
    primary_client: kube::Client,
    primary: String,
    opts: TraceOptions,
    mode: Mode,
    fault: Option<String>,
    ignored: Vec<crate::model::IgnoredKey>,
    /// How many remotes are traced at once (`--parallel`).
    parallel: usize,
}

impl FleetRun {
    /// Starts a run: events of remote `i` come as `(i, event)`; the
    /// handle's result is the fleet document.
    pub fn start(
        &self,
    ) -> (
        mpsc::UnboundedReceiver<(usize, TraceEvent)>,
        tokio::task::JoinHandle<crate::model::FleetReport>,
    ) {
        self.clone().start_owned()
    }

    /// [`FleetRun::start`] for the last run: the remotes' clients move into
    /// the run, so each one's pooled connections close when its trace ends
    /// instead of staying open to every API server until the fleet ends
    /// (the peak memory of a one-shot fleet follows `--parallel`, not the
    /// number of remotes).
    pub fn start_owned(
        self,
    ) -> (
        mpsc::UnboundedReceiver<(usize, TraceEvent)>,
        tokio::task::JoinHandle<crate::model::FleetReport>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut me = self;
        let parallel = me.parallel;
        let handle = tokio::spawn(async move {
            let started_at = crate::model::now_rfc3339();
            let t0 = std::time::Instant::now();
            let (cached, _) = crate::probe::kube_cache::shared_reads(me.primary_client.clone());
            let remotes = me.templates.iter().map(|p| p.remote.clone()).collect();
            let prepared: Vec<_> = std::mem::take(&mut me.templates)
                .into_iter()
                .map(|mut p| {
                    p.clusters.primary = cached.clone();
                    p
                })
                .collect();
            let reports = crate::engine::fleet::run(prepared, parallel, tx).await;
            crate::engine::fleet::report(
                &me.primary,
                &me.opts,
                me.mode,
                me.fault.clone(),
                remotes,
                me.ignored.clone(),
                reports,
                crate::model::millis(t0.elapsed()),
                started_at,
            )
        });
        (rx, handle)
    }
    /// The remotes, in the order of the reports, cleaned for display.
    pub fn remotes(&self) -> Vec<crate::model::FleetRemote> {
        self.templates
            .iter()
            .map(|p| {
                let mut r = p.remote.clone();
                r.sanitize();
                r
            })
            .collect()
    }
}

/// The exit code of a fleet: the worst of its remotes'.
pub fn fleet_exit_code(f: &crate::model::FleetReport, fail_on_warn: bool) -> i32 {
    f.reports
        .iter()
        .map(|r| exit_code(r, fail_on_warn))
        .max()
        .unwrap_or(0)
}

async fn fleet_render(run: FleetRun, args: &TraceArgs, setup: &FleetSetup) -> i32 {
    if let Some(every) = args.watch {
        if let Err(UsageError(msg)) = check_watch(args) {
            eprintln!("meshtrace: {msg}");
            return 2;
        }
        if !full_screen(args) {
            return fleet_watch(run, args, every, setup).await;
        }
    }
    if full_screen(args) {
        return fleet_tui(run, args, setup).await;
    }
    match fleet_once(run, args).await {
        Some(f) => fleet_exit_code(&f, args.fail_on_warn),
        None => 2,
    }
}

/// The fleet screen (a row per remote, Enter drills in); afterwards the
/// text stays in the scrollback.
async fn fleet_tui(run: FleetRun, args: &TraceArgs, setup: &FleetSetup) -> i32 {
    let (rx, _first) = run.start();
    // `r` and the watch timer read the remotes again first, as --watch in
    // text does; the last list is kept when that read fails.
    let last = std::sync::Arc::new(std::sync::Mutex::new(run.clone()));
    let latest = last.clone();
    let rerun = move || {
        let last = last.clone();
        async move {
            let opts = last.lock().map(|r| r.opts.clone()).unwrap_or_default();
            let planned = plan_fleet(setup, &opts, args).await;
            let mut run = last.lock().unwrap_or_else(|e| e.into_inner());
            let (remotes, note) = match planned {
                Ok(again) => {
                    *run = again;
                    (Some(run.remotes()), None)
                }
                Err(UsageError(e)) => (
                    None,
                    Some(format!(
                        "could not read the remotes again ({e}); tracing the last list"
                    )),
                ),
            };
            crate::tui::fleet::NextRun {
                events: run.start().0,
                remotes,
                note,
            }
        }
    };
    let tui_opts = crate::tui::TuiOptions {
        theme: args.theme.clone(),
        theme_file: args.theme_file.clone(),
        teaching: false,
        replay: None,
        speed: 1.0,
        watch: args.watch,
        lab: setup.lab.clone(),
    };
    let (remotes, reports) =
        match crate::tui::fleet::run_fleet_tui(rx, rerun, run.remotes(), tui_opts).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("meshtrace: the terminal UI failed: {e}");
                return 2;
            }
        };
    let run = latest.lock().map(|r| r.clone()).unwrap_or(run);
    let total = reports.iter().map(|r| r.total_ms).fold(0.0, f64::max);
    let started = reports
        .iter()
        .filter_map(|r| r.started_at.clone())
        .min()
        .unwrap_or_default();
    let f = crate::engine::fleet::report(
        &run.primary,
        &run.opts,
        run.mode,
        run.fault.clone(),
        remotes,
        run.ignored.clone(),
        reports,
        total,
        started,
    );
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(render::fleet::render(&f, text_style(args)).as_bytes());
    let _ = stdout.flush();
    if let Some(sig) = crate::tui::signalled() {
        eprintln!("meshtrace: stopped by signal {sig}");
        return 128 + sig;
    }
    let unfinished = f
        .reports
        .iter()
        .filter(|r| r.steps.len() < crate::model::STEPS.len())
        .count();
    if unfinished > 0 {
        eprintln!(
            "meshtrace: quit before the fleet finished ({unfinished} of {} remotes still running)",
            f.reports.len()
        );
        if f.verdict == Verdict::Pass {
            return 130;
        }
    }
    fleet_exit_code(&f, args.fail_on_warn)
}

/// One fleet run, rendered: JSON, text, or the line view (each remote's
/// line as its trace ends, then the summary and failures).
async fn fleet_once(run: FleetRun, args: &TraceArgs) -> Option<crate::model::FleetReport> {
    let style = text_style(args);
    let output = output_of(args);
    let live = output == Output::Tui;
    let remotes = run.remotes();
    // What the rendering needs of the run; the remotes' clients move into
    // the run itself (FleetRun::start_owned).
    let mut shell = run.clone();
    shell.templates.clear();
    let (mut rx, handle) = run.start_owned();
    let run = &shell;
    let mut stdout = std::io::stdout();
    if live {
        let head = render::fleet::header(&crate::model::FleetReport {
            remotes: remotes.clone(),
            ..empty_fleet(run)
        });
        let _ = writeln!(stdout, "{head}\n");
    }
    let widths = render::fleet::widths(&remotes);
    // The line view follows each remote's events; JSON and text only wait
    // for the engine's reports (a second copy of every remote's evidence
    // would double the fleet's memory). A remote's state is dropped once
    // its line is printed.
    let mut states: Vec<crate::model::TraceState> = vec![];
    if live {
        states.resize_with(remotes.len(), Default::default);
    }
    while let Some((i, e)) = rx.recv().await {
        let Some(st) = states.get_mut(i) else {
            continue;
        };
        st.apply(&e);
        if matches!(e, TraceEvent::TraceFinished { .. }) {
            let _ = writeln!(
                stdout,
                "{}",
                render::fleet::line(&remotes[i], &st.report(), widths, style)
            );
            let _ = stdout.flush();
            *st = Default::default();
        }
    }
    let f = match handle.await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("meshtrace: the fleet run stopped unexpectedly: {e}");
            return None;
        }
    };
    let text = match output {
        Output::Json => {
            // Written as it is encoded: a fleet's document runs to megabytes.
            let mut out = std::io::BufWriter::new(stdout.lock());
            let _ = render::fleet::write_json(&f, &mut out).and_then(|()| out.flush());
            return Some(f);
        }
        // The lines are printed already: the summary and failures follow.
        Output::Tui => render::fleet::render_tail(&f, style),
        _ => render::fleet::render(&f, style),
    };
    let _ = stdout.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
    Some(f)
}

fn empty_fleet(run: &FleetRun) -> crate::model::FleetReport {
    crate::engine::fleet::report(
        &run.primary,
        &run.opts,
        run.mode,
        run.fault.clone(),
        vec![],
        vec![],
        vec![],
        0.0,
        String::new(),
    )
}

/// `--watch` on a fleet: run, print, wait, run again, with which remotes
/// changed verdict, until Ctrl-C (exit code of the last finished run).
async fn fleet_watch(run: FleetRun, args: &TraceArgs, every: Duration, setup: &FleetSetup) -> i32 {
    let last_code = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let code = last_code.clone();
    let runs = async move {
        let mut run = run;
        let mut previous: Option<std::collections::BTreeMap<String, Verdict>> = None;
        for n in 1.. {
            println!(
                "── run {n} · {} ──",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            );
            // The remotes as the primary registers them now; when that read
            // fails, the last list is traced again and the failure said.
            if n > 1 {
                match plan_fleet(setup, &run.opts, args).await {
                    Ok(again) => run = again,
                    Err(UsageError(e)) => println!(
                        "could not read the remotes again ({e}); tracing the {} of run {}",
                        run.templates.len(),
                        n - 1
                    ),
                }
            }
            let Some(f) = fleet_once(run.clone(), args).await else {
                return 2;
            };
            code.store(
                fleet_exit_code(&f, args.fail_on_warn),
                std::sync::atomic::Ordering::SeqCst,
            );
            let now: std::collections::BTreeMap<String, Verdict> = f
                .remotes
                .iter()
                .zip(&f.reports)
                .map(|(m, r)| (render::fleet::remote_name(m), r.verdict))
                .collect();
            if let Some(prev) = &previous {
                let mut changed: Vec<String> = now
                    .iter()
                    .filter_map(|(name, b)| match prev.get(name) {
                        Some(a) if a != b => Some(format!(
                            "{name}: {} → {}",
                            verdict_word(*a),
                            verdict_word(*b)
                        )),
                        Some(_) => None,
                        None => Some(format!("{name}: new ({})", verdict_word(*b))),
                    })
                    .collect();
                changed.extend(
                    prev.keys()
                        .filter(|name| !now.contains_key(*name))
                        .map(|name| format!("{name}: no longer registered")),
                );
                if changed.is_empty() {
                    println!("nothing changed since run {}", n - 1);
                } else {
                    println!("Δ changed since run {}: {}", n - 1, changed.join(", "));
                }
            }
            previous = Some(now);
            println!(
                "next run in {} (Ctrl-C stops)\n",
                humantime::format_duration(every)
            );
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

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "warn",
        Verdict::Fail => "fail",
    }
}

async fn trace_and_render(
    clusters: Clusters,
    opts: TraceOptions,
    t: Target,
    args: &TraceArgs,
    first: mpsc::UnboundedReceiver<TraceEvent>,
) -> i32 {
    // The first run is started already; `r` in the TUI (and --watch)
    // re-runs the trace: a new engine run with the same clusters and options.
    let mut first = Some(first);
    let start = move || {
        if let Some(rx) = first.take() {
            return rx;
        }
        let (tx, rx) = mpsc::unbounded_channel::<TraceEvent>();
        tokio::spawn(engine::run(clusters.clone(), opts.clone(), t.clone(), tx));
        rx
    };
    render_traces(start, args, None).await
}

/// Render the runs `start` starts as `args` asks; `lab`: the lab the TUI
/// may break and fix (`b`, `f`).
async fn render_traces<F>(
    start: F,
    args: &TraceArgs,
    lab: Option<std::sync::Arc<crate::lab::session::LabSession>>,
) -> i32
where
    F: FnMut() -> mpsc::UnboundedReceiver<TraceEvent>,
{
    // --output-dir: every run's events copied on their way, the last run written.
    let bundle = match &args.output_dir {
        Some(dir) => match bundle::Bundle::open(dir, args.watch.is_some()) {
            Ok(b) => Some(b),
            Err(UsageError(msg)) => {
                eprintln!("meshtrace: {msg}");
                return 2;
            }
        },
        None => None,
    };
    let recorder = bundle.as_ref().map(|b| b.recorder());
    let mut start = start;
    let start = move || {
        let rx = start();
        match &recorder {
            Some(r) => r.tee(rx),
            None => rx,
        }
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
    let streamed = render_stream(start, args, None, lab).await;
    if let (Some(b), Ok((report, _))) = (&bundle, &streamed) {
        if let Err(e) = b.write(report) {
            eprintln!("meshtrace: {e}");
            return 2;
        }
    }
    match streamed {
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
            let report = match render_stream(&mut start, args, None, None).await {
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
        ("--istiod-webhook-addr", t.istiod_webhook_addr.is_some()),
        ("--istiod-debug-addr", t.istiod_debug_addr.is_some()),
        ("--no-csr", t.no_csr),
        ("--skip", !t.skip.is_empty()),
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
    if let Some(dir) = &t.output_dir {
        return Err(UsageError(format!(
            "--output-dir {} bundles a new trace; a replay shows a recording that already is one",
            dir.display()
        )));
    }
    let rec = crate::replay::load(&r.file).map_err(UsageError)?;
    let speed = r.speed.unwrap_or(if full_screen(t) { 1.0 } else { 0.0 });
    let start = move || crate::replay::play(rec.clone(), speed);
    match render_stream(start, t, Some((&r.file, speed)), None).await {
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
    lab: Option<std::sync::Arc<crate::lab::session::LabSession>>,
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
            theme_file: args.theme_file.clone(),
            teaching: args.step,
            replay: replay.map(|(file, _)| file.to_string()),
            speed: replay.map_or(1.0, |(_, speed)| speed),
            watch: if replay.is_some() { None } else { args.watch },
            lab,
        };
        let report = match crate::tui::run_tui(first, start, tui_opts).await {
            Ok(r) => r,
            // A terminal that went away (EIO, or a hang-up the input thread
            // saw) ends the run as SIGHUP would; stderr may be that terminal,
            // so nothing here may panic on a failed write.
            Err(e) if crate::tui::is_hang_up(&e) => {
                let _ = writeln!(std::io::stderr(), "meshtrace: the terminal went away ({e})");
                return Err(128 + 1);
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "meshtrace: the terminal UI failed: {e}");
                return Err(2);
            }
        };
        // The result stays in the scrollback once the alternate screen is gone.
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(render::text::render(&report, style).as_bytes());
        let _ = stdout.flush();
        if let Some(sig) = crate::tui::signalled() {
            let _ = writeln!(std::io::stderr(), "meshtrace: stopped by signal {sig}");
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
    let tty = std::io::stdout().is_terminal();
    render::text::TextStyle {
        color: tty && !crate::tui::theme::no_color_env(),
        verbose: args.verbose,
        ascii: false,
        // The terminal's width; piped, `PIPED_WIDTH`.
        width: if tty {
            crossterm::terminal::size().map_or(0, |(w, _)| w as usize)
        } else {
            0
        },
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
