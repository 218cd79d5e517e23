//! Helpers the gateway steps share (gateway-pod, gateway-token,
//! network-labels): the gateway's Deployment, and the commands that change it.

use super::Settings;
use crate::findings::shell_word;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;

/// `kubectl --context <remote> -n <ns>`.
pub(super) fn kubectl_remote_ns(s: &Settings, ns: &str) -> String {
    format!("{} -n {}", s.kubectl_remote(), shell_word(ns))
}

pub(super) fn name_of(d: &Deployment) -> &str {
    d.metadata.name.as_deref().unwrap_or_default()
}

/// The container of the Deployment's pod template named `name`, with its index
/// (JSON patches address containers by index).
pub(super) fn template_container<'a>(
    d: &'a Deployment,
    name: &str,
) -> Option<(usize, &'a Container)> {
    d.spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name)
}

/// A JSON value as one shell word (single-quoted), for `kubectl patch -p`.
pub(super) fn json_word(v: &serde_json::Value) -> String {
    shell_word(&v.to_string())
}

/// `kubectl ... rollout restart deployment/<name>`: new pods, so they pick up
/// what changed outside their spec (a recreated service account, a template
/// the running pods predate).
pub(super) fn rollout_restart(s: &Settings, ns: &str, d: &Deployment) -> String {
    format!(
        "{} rollout restart deployment/{}",
        kubectl_remote_ns(s, ns),
        shell_word(name_of(d))
    )
}

/// A `<word>` placeholder, or `...`, in a command: tests hold commands to
/// real values (a shell redirection `< file` is no placeholder).
#[cfg(test)]
pub(super) fn has_placeholder(c: &str) -> bool {
    c.contains("...")
        || c.split('<').skip(1).any(|rest| {
            let word: String = rest.chars().take_while(|ch| *ch != '>').collect();
            rest.len() > word.len()
                && !word.is_empty()
                && word
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        })
}
