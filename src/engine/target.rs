//! Building kube clients from kubeconfig files and context names, with
//! errors that name the bad value.

use crate::probe::{kube_client, kube_error};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "kubeconfig {path:?} does not exist; pass --kubeconfig PATH (or set KUBECONFIG) to one that does, or try `meshtrace lab` (no cluster needed)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read kubeconfig {path:?}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "no kubeconfig: pass --kubeconfig PATH, set KUBECONFIG, or create ~/.kube/config; or try `meshtrace lab` (no cluster needed)"
    )]
    NoKubeconfig,
    #[error(
        "context {name:?} is not in the kubeconfig (contexts: {known}); pass the kubeconfig that has it with --kubeconfig PATH"
    )]
    UnknownContext { name: String, known: String },
    #[error("context {name:?} cannot be used: {reason}")]
    BadContext { name: String, reason: String },
}

/// Kubeconfig paths as kubectl finds them: flags, else $KUBECONFIG (colon
/// separated), else ~/.kube/config.
pub fn kubeconfig_paths(flags: &[PathBuf]) -> Vec<PathBuf> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    if let Some(v) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<PathBuf> = std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return paths;
        }
    }
    std::env::var_os("HOME")
        .map(|h| vec![PathBuf::from(h).join(".kube").join("config")])
        .unwrap_or_default()
}

pub fn load_kubeconfig(paths: &[PathBuf]) -> Result<Kubeconfig, TargetError> {
    let mut merged: Option<Kubeconfig> = None;
    for p in paths {
        let kc = Kubeconfig::read_from(p).map_err(|e| read_error(p, e))?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).map_err(|e| TargetError::Unreadable {
                path: p.clone(),
                reason: e.to_string(),
            })?,
        });
    }
    merged.ok_or(TargetError::NoKubeconfig)
}

/// kube's error for one file, said once and in words: kube's own message
/// quotes the path a second time, and its YAML error renders the source
/// lines (which can hold a token).
fn read_error(path: &std::path::Path, e: kube::config::KubeconfigError) -> TargetError {
    use kube::config::KubeconfigError as K;
    let unreadable = |reason: String| TargetError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    match e {
        K::ReadConfig(io, _) if io.kind() == std::io::ErrorKind::NotFound => TargetError::Missing {
            path: path.to_path_buf(),
        },
        K::ReadConfig(io, _) => unreadable(io.to_string()),
        K::Parse(yaml) => unreadable(format!(
            "not a kubeconfig: {}",
            crate::inspect::kubeconfig::yaml_words(&yaml)
        )),
        other => unreadable(other.to_string()),
    }
}

/// A client for one context, plus the server URL it talks to.
pub async fn client_for(
    kc: &Kubeconfig,
    context: &str,
    timeout: Duration,
) -> Result<(kube::Client, String), TargetError> {
    if !kc.contexts.iter().any(|c| c.name == context) {
        let known = kc
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(TargetError::UnknownContext {
            name: context.to_string(),
            known,
        });
    }
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc.clone(), &opts)
        .await
        .map_err(|e| TargetError::BadContext {
            name: context.to_string(),
            reason: kube_error::exec_words(&e).unwrap_or_else(|| e.to_string()),
        })?;
    let server = cfg.cluster_url.to_string();
    let client = kube_client::build(cfg, kube_client::Limits::new(timeout)).map_err(|e| {
        TargetError::BadContext {
            name: context.to_string(),
            reason: kube_error::describe(&e),
        }
    })?;
    Ok((client, server))
}

/// The inline secrets of a context's user (token, client key, password; the
/// key also base64-decoded as kube sends it), for the sanitizer: a proxy
/// that echoes the request must not put them in the report.
pub fn context_secrets(kc: &Kubeconfig, context: &str) -> Vec<String> {
    use base64::Engine;
    let user = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.user.clone().unwrap_or_default());
    let Some(user) = user else { return vec![] };
    let mut out = Vec::new();
    for a in kc.auth_infos.iter().filter(|a| a.name == user) {
        if let Some(info) = &a.auth_info {
            for s in crate::inspect::kubeconfig::inline_secrets(info) {
                if let Ok(d) = base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                    if let Ok(t) = String::from_utf8(d) {
                        out.push(t);
                    }
                }
                out.push(s);
            }
        }
    }
    out
}

/// Every context of the kubeconfig with the server of its cluster, for
/// fleet mode to match remote secrets by server. A context whose cluster
/// is missing has no server and is left out.
pub fn context_servers(kc: &Kubeconfig) -> Vec<(String, String)> {
    kc.contexts
        .iter()
        .filter_map(|c| {
            let cluster = &c.context.as_ref()?.cluster;
            let server = kc
                .clusters
                .iter()
                .find(|x| x.name == *cluster)?
                .cluster
                .as_ref()?
                .server
                .clone()?;
            Some((c.name.clone(), server))
        })
        .collect()
}
