//! A lab the TUI can break and fix while it runs (`b` and `f` in
//! `meshtrace lab`): the running [`Lab`], rebuilt with another fault on
//! request, and the fixes meshtrace printed run for real, with `sh -c` and
//! the kubectl on PATH against the lab's own kubeconfig, exactly as
//! tests/integration/fixes.rs proves them against `meshtrace lab serve`.
//! What the commands changed is read back from the lab API servers' stores
//! and shown as a diff of each object, secrets redacted.

use super::faults::Fault;
use super::profiles::Profile;
use super::store::{ObjectKey, ResourceKey};
use super::world::Lab;
use crate::engine::{self, Clusters, TraceOptions};
use crate::model::{Target, TraceEvent};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one fix command may take (a rollout waits for its pods).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// Objects shown in a fix's diff; the rest are counted.
const DIFF_OBJECTS: usize = 8;

struct Current {
    lab: Lab,
    /// The single-remote lab's clients and target (a fleet lab is planned
    /// from its kubeconfig, as a fleet of real clusters is).
    single: Option<(Clusters, Target)>,
    opts: TraceOptions,
}

pub struct LabSession {
    profile: Profile,
    /// How many remotes the lab has (`lab --remotes N`); 1 is the
    /// single-remote lab.
    remotes: usize,
    base: TraceOptions,
    cur: Mutex<Option<Current>>,
    /// The lab's kubeconfig for kubectl, private to this process.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for LabSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabSession")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// One object a fix changed: where, and its YAML's changed lines with
/// context, each `(' ' | '-' | '+', line)`; a `'@'` line separates hunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDiff {
    pub cluster: String,
    pub object: String,
    pub lines: Vec<(char, String)>,
}

/// What `f` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub commands: Vec<String>,
    pub diffs: Vec<ObjectDiff>,
    /// Objects changed beyond the [`DIFF_OBJECTS`] shown.
    pub more: usize,
}

impl LabSession {
    /// Start the lab of `profile` with `fault`, as `meshtrace lab` does.
    pub async fn start(
        profile: Profile,
        fault: Option<&'static Fault>,
        base: TraceOptions,
    ) -> Result<LabSession, String> {
        Self::start_fleet(profile, 1, fault, 1, base).await
    }

    /// Start the lab of `profile` with `remotes` remotes and `fault` on
    /// remote `at` (from 1), as `meshtrace lab --remotes N --fault F@AT` does.
    pub async fn start_fleet(
        profile: Profile,
        remotes: usize,
        fault: Option<&'static Fault>,
        at: usize,
        base: TraceOptions,
    ) -> Result<LabSession, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let s = LabSession {
            profile,
            remotes: remotes.max(1),
            base,
            cur: Mutex::new(None),
            dir,
        };
        let c = s.build(fault, at).await?;
        *s.lock() = Some(c);
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.cur.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    async fn build(&self, fault: Option<&'static Fault>, at: usize) -> Result<Current, String> {
        let lab = if self.remotes > 1 {
            Lab::start_fleet(self.profile, self.remotes, fault, at, |_| {}).await
        } else {
            Lab::start_profile(self.profile, fault, |_| {}).await
        }
        .map_err(|e| format!("cannot start the lab: {e}"))?;
        let mut opts = self.base.clone();
        crate::cli::lab_profile_options(&lab, &mut opts);
        let single = if self.remotes > 1 {
            None
        } else {
            match crate::cli::lab_target(&lab, &opts).await {
                Ok(x) => Some(x),
                Err(e) => {
                    lab.shutdown();
                    return Err(e.0);
                }
            }
        };
        if let Err(e) = super::write_private(&self.kubeconfig(), &lab.kubeconfig_yaml) {
            lab.shutdown();
            return Err(format!("cannot write the lab's kubeconfig: {e}"));
        }
        Ok(Current { lab, single, opts })
    }

    /// What the running lab is traced with: clients, options and target.
    pub fn parts(&self) -> Option<(Clusters, TraceOptions, Target)> {
        let g = self.lock();
        let c = g.as_ref()?;
        let (clusters, target) = c.single.clone()?;
        Some((clusters, c.opts.clone(), target))
    }

    /// The running lab's kubeconfig (its ports change with every rebuild)
    /// and the trace options its profile needs.
    pub fn kubeconfig_and_options(&self) -> Option<(String, TraceOptions)> {
        self.lock()
            .as_ref()
            .map(|c| (c.lab.kubeconfig_yaml.clone(), c.opts.clone()))
    }

    /// The running lab's fault as a target names it: `NAME`, or
    /// `NAME@INDEX` in a lab of several remotes.
    pub fn fault_label(&self) -> Option<String> {
        let g = self.lock();
        let lab = &g.as_ref()?.lab;
        let f = lab.fault?;
        Some(match (self.remotes > 1, lab.fault_at) {
            (true, Some(at)) => format!("{}@{at}", f.name),
            _ => f.name.to_string(),
        })
    }

    /// Which of the lab's remotes (from 1) has cluster ID `id`.
    pub fn remote_index(&self, id: &str) -> Option<usize> {
        let g = self.lock();
        let lab = &g.as_ref()?.lab;
        remote_ids(lab).position(|x| x == id).map(|i| i + 1)
    }

    /// The API server URLs of the running lab: primary, remote.
    pub fn urls(&self) -> (String, String) {
        self.lock()
            .as_ref()
            .map(|c| (c.lab.primary.url.clone(), c.lab.remote.url.clone()))
            .unwrap_or_default()
    }

    /// A new trace of the lab as it is now.
    pub fn start_trace(&self) -> mpsc::UnboundedReceiver<TraceEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some((clusters, opts, target)) = self.parts() {
            tokio::spawn(engine::run(clusters, opts, target, tx));
        }
        rx
    }

    /// Replace the running lab by one built with `fault` (none: healthy),
    /// on remote `at` (from 1) of a lab of several.
    pub async fn rebuild(
        &self,
        fault: Option<&'static Fault>,
        at: usize,
    ) -> Result<String, String> {
        let new = self.build(fault, at).await?;
        let on = match (self.remotes > 1, new.lab.fault_at) {
            (true, Some(i)) => remote_ids(&new.lab)
                .nth(i - 1)
                .map(|id| format!(" on {id}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        if let Some(old) = self.lock().replace(new) {
            old.lab.shutdown();
        }
        Ok(match fault {
            Some(f) => format!("lab rebuilt with fault {}{on}; re-running", f.name),
            None => "lab rebuilt healthy; re-running".into(),
        })
    }

    /// Run a fix's commands against the lab, one after the other, as a
    /// shell would, and read back what they changed. Refuses, saying why,
    /// what cannot run here (a tool that is not on PATH).
    pub async fn apply(&self, commands: &[String]) -> Result<Applied, String> {
        if commands.is_empty() {
            return Err("the fix has no command to run".into());
        }
        for tool in ["kubectl", "istioctl"] {
            if commands.iter().any(|c| names_tool(c, tool)) && !on_path(tool) {
                return Err(format!(
                    "this fix needs {tool}, which is not on PATH, so it cannot be applied from here: run it in a shell that has {tool} (y copies it)"
                ));
            }
        }
        let (states, istiod_port, webhook_port) = {
            let g = self.lock();
            let c = g.as_ref().ok_or("the lab is not running")?;
            let mut states = vec![
                (
                    crate::lab::world::PRIMARY_CONTEXT.to_string(),
                    c.lab.primary_state.clone(),
                ),
                (c.lab.remote_context.clone(), c.lab.remote_state.clone()),
            ];
            states.extend(
                c.lab
                    .extra_remotes
                    .iter()
                    .map(|r| (r.context.clone(), r.state.clone())),
            );
            (
                states,
                c.lab.istiod_addr.port().to_string(),
                c.lab.istiod.webhook_addr.port().to_string(),
            )
        };
        let snapshot = || {
            states
                .iter()
                .map(|(name, s)| {
                    let g = s.read().unwrap_or_else(|e| e.into_inner());
                    (name.as_str(), g.store.objects.clone())
                })
                .collect::<Vec<_>>()
        };
        let before = snapshot();
        for c in commands {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg("-c")
                .arg(c)
                .env("KUBECONFIG", self.kubeconfig())
                .env("LAB_ISTIOD_PORT", &istiod_port)
                .env("LAB_WEBHOOK_PORT", &webhook_port)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
                .await
                .map_err(|_| format!("the fix's command took over {COMMAND_TIMEOUT:?}; stopped"))?
                .map_err(|e| format!("cannot run sh: {e}"))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let err = crate::inspect::sanitize::clean(err.trim(), &[]);
                return Err(format!(
                    "the fix's command failed ({}): {}",
                    out.status,
                    crate::inspect::sanitize::cap(&err, 300)
                ));
            }
        }
        let after = snapshot();
        let mut diffs = vec![];
        for ((cluster, b), (_, a)) in before.iter().zip(&after) {
            diffs.extend(diff_stores(cluster, b, a));
        }
        let more = diffs.len().saturating_sub(DIFF_OBJECTS);
        diffs.truncate(DIFF_OBJECTS);
        Ok(Applied {
            commands: commands.to_vec(),
            diffs,
            more,
        })
    }

    pub fn shutdown(&self) {
        if let Some(c) = self.lock().take() {
            c.lab.shutdown();
        }
    }
}

/// The lab's remotes' cluster IDs, remote 1 first.
fn remote_ids(lab: &Lab) -> impl Iterator<Item = &str> {
    std::iter::once(lab.remote_id.as_str())
        .chain(lab.extra_remotes.iter().map(|r| r.cluster_id.as_str()))
}

/// Whether `command` runs `tool` (as a word of the shell line).
fn names_tool(command: &str, tool: &str) -> bool {
    command
        .split(|c: char| c.is_whitespace() || matches!(c, '|' | ';' | '&' | '(' | ')' | '`'))
        .any(|w| w == tool)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

type Objects = BTreeMap<ResourceKey, BTreeMap<ObjectKey, Value>>;

/// The objects that differ between two snapshots of one store, each as a
/// diff of its YAML (bookkeeping fields left out, secrets redacted).
pub fn diff_stores(cluster: &str, before: &Objects, after: &Objects) -> Vec<ObjectDiff> {
    let mut keys: Vec<(&ResourceKey, &ObjectKey)> = vec![];
    for m in [before, after] {
        for (rk, objs) in m {
            for ok in objs.keys() {
                if !keys.contains(&(rk, ok)) {
                    keys.push((rk, ok));
                }
            }
        }
    }
    keys.sort();
    let mut out = vec![];
    for (rk, ok) in keys {
        let get = |m: &Objects| m.get(rk).and_then(|o| o.get(ok)).map(|v| shown(rk, v));
        let (b, a) = (get(before), get(after));
        if b == a {
            continue;
        }
        let yaml = |v: &Option<Value>| {
            v.as_ref()
                .and_then(|v| serde_saphyr::to_string(v).ok())
                .map(|y| crate::inspect::sanitize::clean(&y, &[]))
                .unwrap_or_default()
        };
        let (yb, ya) = (yaml(&b), yaml(&a));
        let d = similar::TextDiff::from_lines(&yb, &ya);
        let mut lines = vec![];
        for (i, group) in d.grouped_ops(2).iter().enumerate() {
            if i > 0 {
                lines.push(('@', "…".to_string()));
            }
            for op in group {
                for ch in d.iter_changes(op) {
                    let sign = match ch.tag() {
                        similar::ChangeTag::Equal => ' ',
                        similar::ChangeTag::Delete => '-',
                        similar::ChangeTag::Insert => '+',
                    };
                    lines.push((sign, ch.value().trim_end_matches('\n').to_string()));
                }
            }
        }
        let what = match (&b, &a) {
            (None, _) => "created",
            (_, None) => "deleted",
            _ => "changed",
        };
        let kind = rk.plural.trim_end_matches('s');
        let name = if ok.0.is_empty() {
            ok.1.clone()
        } else {
            format!("{}/{}", ok.0, ok.1)
        };
        out.push(ObjectDiff {
            cluster: cluster.to_string(),
            object: format!("{kind} {name} {what}"),
            lines,
        });
    }
    out
}

/// An object as the diff shows it: no bookkeeping the API server changes
/// on every write, a Secret's values as fingerprints, never their bytes.
fn shown(rk: &ResourceKey, v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "managedFields", "generation", "uid"] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            // kubectl apply keeps the whole object here, a Secret's data too.
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    if rk.plural == "secrets" {
        for field in ["data", "stringData"] {
            if let Some(d) = v.get_mut(field).and_then(Value::as_object_mut) {
                for val in d.values_mut() {
                    let bytes = val.as_str().unwrap_or_default();
                    *val = Value::String(fingerprint(bytes));
                }
            }
        }
    }
    v
}

fn fingerprint(s: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(s.as_bytes());
    format!("[redacted, sha256:{}]", &hex::encode(h)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(objs: &[(&str, &str, Value)]) -> Objects {
        let mut m = Objects::new();
        for (plural, name, v) in objs {
            m.entry(ResourceKey {
                group: String::new(),
                version: "v1".into(),
                plural: plural.to_string(),
            })
            .or_default()
            .insert(("istio-system".into(), name.to_string()), v.clone());
        }
        m
    }

    #[test]
    fn a_diff_shows_what_changed_and_never_a_secret_value() {
        let secret_b = json!({"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "1",
            "labels": {"a": "b"}}, "data": {"token": "c2VjcmV0LXRva2VuLXZhbHVl"}});
        let secret_a = json!({"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "2",
            "labels": {"a": "b", "istio/multiCluster": "true"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"token\":\"c2VjcmV0LXRva2VuLXZhbHVl\"}}"}},
            "data": {"token": "c2VjcmV0LXRva2VuLXZhbHVl"}});
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "3"}, "data": {"x": "1"}});
        let cm_touched = json!({"kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "9"}, "data": {"x": "1"}});
        let before = store(&[("secrets", "s", secret_b), ("configmaps", "c", cm)]);
        let after = store(&[("secrets", "s", secret_a), ("configmaps", "c", cm_touched)]);
        let d = diff_stores("lab-primary", &before, &after);
        assert_eq!(
            d.len(),
            1,
            "a new resourceVersion alone is no change: {d:?}"
        );
        assert_eq!(d[0].object, "secret istio-system/s changed");
        assert!(
            d[0].lines
                .iter()
                .any(|(s, l)| *s == '+' && l.contains("istio/multiCluster")),
            "{:?}",
            d[0].lines
        );
        let all = format!("{d:?}");
        assert!(!all.contains("c2VjcmV0"), "{all}");
        assert!(!all.contains("last-applied"), "{all}");
        let gone = diff_stores("lab-remote", &before, &Objects::new());
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|o| o.object.ends_with("deleted")));
        assert!(
            gone.iter()
                .flat_map(|o| &o.lines)
                .all(|(s, _)| *s == '-' || *s == '@' || *s == ' ')
        );
    }

    #[test]
    fn tools_are_found_as_words_of_the_command() {
        assert!(names_tool(
            "istioctl create-remote-secret --context=x | kubectl apply -f -",
            "istioctl"
        ));
        assert!(names_tool("a && kubectl get x", "kubectl"));
        assert!(!names_tool(
            "kubectl get configmap istioctl-config",
            "istioctl"
        ));
        assert!(on_path("sh"));
        assert!(!on_path("no-such-tool-meshtrace"));
    }
}
