//! Findings: what a step that did not pass says, in a shape every front end
//! and every script can rely on.
//!
//! A finding's `code` is `<step-id>/<cause>` in kebab-case and is part of the
//! JSON contract, like the step ids: never rename one. Each step module
//! declares its causes with [`causes!`]; [`crate::engine::steps::causes`]
//! gathers them into the one catalogue that `meshtrace explain`, the docs
//! test and the fault tests read.

use crate::model::StepId;
use serde::{Deserialize, Serialize};

/// One way a step can fail or warn. Declared with [`causes!`].
#[derive(Debug, PartialEq, Eq)]
pub struct Cause {
    pub step: StepId,
    /// The part after the slash.
    pub name: &'static str,
    /// What the cause means, in one line (the catalogue's title for it).
    pub title: &'static str,
}

impl Cause {
    pub fn code(&self) -> String {
        format!("{}/{}", self.step.as_str(), self.name)
    }
}

/// Causes every step shares: the engine, not the step, reports them.
pub mod generic {
    /// `<step>/blocked`: a step it needs did not pass.
    pub const BLOCKED: &str = "blocked";
    /// `<step>/timeout`: the step ran past its time limit.
    pub const TIMEOUT: &str = "timeout";
    /// `<step>/internal-error`: meshtrace failed inside the step (a bug).
    pub const INTERNAL_ERROR: &str = "internal-error";
    /// `<step>/no-context`: a fleet remote without a kube context; the step
    /// needs the remote's own rights, which istiod's credentials lack.
    pub const NO_CONTEXT: &str = "no-context";
    /// `<step>/skipped-by-flag`: the operator asked for it with `--skip`
    /// (their account may lack the rights it needs).
    pub const SKIPPED_BY_FLAG: &str = "skipped-by-flag";
    pub const ALL: [(&str, &str); 5] = [
        (BLOCKED, "a step it needs did not pass, so it was not run"),
        (TIMEOUT, "the step did not finish within its time limit"),
        (INTERNAL_ERROR, "meshtrace failed inside the step (a bug)"),
        (
            NO_CONTEXT,
            "no kube context for this remote, and the step needs the remote's own rights",
        ),
        (SKIPPED_BY_FLAG, "the operator skipped the step with --skip"),
    ];
}

/// Declares a step's causes as constants plus `CAUSES`, the list of them all,
/// so the catalogue cannot miss one:
///
/// ```ignore
/// causes! { StepId::RemoteRbac;
///     NO_TOKENREVIEW_CREATE = "no-tokenreview-create", "the identity may not create tokenreviews";
/// }
/// ```
#[macro_export]
macro_rules! causes {
    ($step:expr; $( $konst:ident = $name:literal, $title:literal; )+) => {
        $( pub const $konst: $crate::findings::Cause = $crate::findings::Cause {
            step: $step, name: $name, title: $title,
        }; )+
        pub const CAUSES: &[&$crate::findings::Cause] = &[ $( &$konst ),+ ];
    };
}

/// Where the documentation lives: the crate's repository (Cargo.toml), so a
/// link works for someone holding only the binary or a pasted report.
pub const DOC_BASE: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/checks.md");

/// The absolute URL of an anchor of docs/checks.md.
pub fn doc_url(anchor: &str) -> String {
    format!("{DOC_BASE}#{anchor}")
}

/// The anchor a code's documentation has: its own, or for the causes every
/// step shares, the one section that explains them.
pub fn anchor_of(code: &str) -> String {
    match code.split_once('/') {
        Some((_, cause)) if generic::ALL.iter().any(|(g, _)| *g == cause) => cause.to_string(),
        _ => code.to_string(),
    }
}

/// The finding of a result that is not a pass (flattened into the step's JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Finding {
    /// `<step-id>/<cause>`, stable.
    pub code: String,
    /// The cause in one line, shown first everywhere.
    pub summary: String,
    /// Exact shell commands that fix it, in order, with the real names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Prose that goes with the commands: what they do, what to check, or
    /// which value meshtrace cannot know and how to find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Absolute URL of the code's documentation.
    pub doc: String,
}

impl Finding {
    pub fn new(cause: &Cause, summary: impl Into<String>) -> Finding {
        let code = cause.code();
        Finding {
            doc: doc_url(&anchor_of(&code)),
            code,
            summary: summary.into(),
            ..Default::default()
        }
    }
    /// A cause every step shares (`generic::*`).
    pub fn generic(step: StepId, cause: &str, summary: impl Into<String>) -> Finding {
        let code = format!("{}/{cause}", step.as_str());
        Finding {
            doc: doc_url(&anchor_of(&code)),
            code,
            summary: summary.into(),
            ..Default::default()
        }
    }
    pub fn command(mut self, c: impl Into<String>) -> Self {
        self.commands.push(c.into());
        self
    }
    pub fn commands<S: Into<String>>(mut self, cs: impl IntoIterator<Item = S>) -> Self {
        self.commands.extend(cs.into_iter().map(Into::into));
        self
    }
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(n.into());
        self
    }
    /// The prose-and-commands text of `meshtrace.v1`'s `hint`, kept for
    /// readers of the first schema: the note, then the commands.
    pub fn legacy_hint(&self) -> Option<String> {
        let mut parts: Vec<String> = self.note.iter().cloned().collect();
        parts.extend(self.commands.iter().cloned());
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Shell-quotes a word for a command meshtrace prints, only when it needs it.
pub fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_urls_are_absolute_and_generic_codes_share_one_anchor() {
        assert!(DOC_BASE.starts_with("https://"), "{DOC_BASE}");
        assert_eq!(anchor_of("remote-rbac/timeout"), "timeout");
        assert_eq!(
            anchor_of("remote-rbac/no-tokenreview-create"),
            "remote-rbac/no-tokenreview-create"
        );
        let f = Finding::generic(StepId::Csr, generic::BLOCKED, "not run");
        assert_eq!(f.code, "csr/blocked");
        assert!(f.doc.ends_with("/docs/checks.md#blocked"), "{}", f.doc);
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("kind-primary"), "kind-primary");
        assert_eq!(
            shell_word("arn:aws:eks:eu-west-1:1:cluster/remote"),
            "arn:aws:eks:eu-west-1:1:cluster/remote"
        );
        assert_eq!(shell_word("it's mine"), r"'it'\''s mine'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn legacy_hint_is_note_then_commands() {
        let c = Cause {
            step: StepId::Csr,
            name: "x",
            title: "t",
        };
        let f = Finding::new(&c, "s")
            .note("do this")
            .command("kubectl a")
            .command("kubectl b");
        assert_eq!(
            f.legacy_hint().as_deref(),
            Some("do this; kubectl a; kubectl b")
        );
        assert_eq!(Finding::new(&c, "s").legacy_hint(), None);
    }
}
