//! `meshtrace explain CODE|STEP`: the documentation of a finding code or a
//! step, offline. docs/checks.md is embedded in the binary, so what a report
//! links to can be read without the repository or a network.

use crate::findings::{anchor_of, generic};
use crate::model::{STEPS, StepId};

/// docs/checks.md as built into this binary.
pub const CHECKS_MD: &str = include_str!("../docs/checks.md");

/// Every code meshtrace can report: each step's own causes, then the causes
/// every step shares.
pub fn all_codes() -> Vec<String> {
    let mut out: Vec<String> = crate::engine::steps::causes()
        .iter()
        .map(|c| c.code())
        .collect();
    for s in STEPS {
        for (g, _) in generic::ALL {
            out.push(format!("{}/{g}", s.id.as_str()));
        }
    }
    out
}

fn anchor_line(anchor: &str) -> String {
    format!("<a id=\"{anchor}\"></a>")
}

/// The markdown of the section an anchor opens: up to the next anchor of the
/// same or a higher level (for a step: the next `---` rule; for a code: the
/// next code anchor or the end of the step).
pub fn section(doc: &str, anchor: &str) -> Option<String> {
    let start = doc.find(&anchor_line(anchor))?;
    let body = &doc[start + anchor_line(anchor).len()..];
    let is_shared = generic::ALL.iter().any(|(g, _)| *g == anchor);
    let is_step = !is_shared && (StepId::parse(anchor).is_some() || !anchor.contains('/'));
    let mut end = body.find("\n---\n").unwrap_or(body.len());
    if !is_step {
        if let Some(next) = body.find("\n<a id=") {
            end = end.min(next);
        }
    }
    Some(body[..end].trim().to_string())
}

/// Markdown made plain for a terminal: anchors dropped, emphasis marks removed.
fn plain(md: &str) -> String {
    md.lines()
        .filter(|l| !l.trim_start().starts_with("<a id="))
        .map(|l| {
            l.replace("**", "")
                .trim_start_matches("#### ")
                .trim_start_matches("## ")
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `explain` prints for `what`, or the error message (exit 2).
pub fn explain(what: &str) -> Result<String, String> {
    let what = what.trim().trim_start_matches('#');
    let known = StepId::parse(what).is_some() || all_codes().iter().any(|c| c == what);
    if !known {
        return Err(did_you_mean(what));
    }
    let anchor = if StepId::parse(what).is_some() {
        what.to_string()
    } else {
        anchor_of(what)
    };
    let text = section(CHECKS_MD, &anchor).ok_or_else(|| {
        format!("{what:?} has no section in the built-in docs (a bug: report it)")
    })?;
    let url = crate::findings::doc_url(&anchor);
    let head = if anchor != what {
        // A shared cause: name the step it was asked for.
        let step = what.split('/').next().unwrap_or(what);
        format!("{what} (the cause every step shares; step: {step})\n\n")
    } else {
        String::new()
    };
    Ok(format!("{head}{}\n\n{url}\n", plain(&text)))
}

fn did_you_mean(what: &str) -> String {
    let mut cands: Vec<String> = STEPS.iter().map(|s| s.id.as_str().to_string()).collect();
    cands.extend(all_codes());
    let mut scored: Vec<(usize, &String)> = cands.iter().map(|c| (distance(what, c), c)).collect();
    scored.sort();
    let near: Vec<&str> = scored
        .iter()
        .take_while(|(d, _)| *d <= what.len().max(4) / 2)
        .take(3)
        .map(|(_, c)| c.as_str())
        .collect();
    let same_step: Vec<&str> = cands
        .iter()
        .filter(|c| {
            what.split('/')
                .next()
                .is_some_and(|s| c.starts_with(&format!("{s}/")))
        })
        .map(String::as_str)
        .take(12)
        .collect();
    let hint = if !near.is_empty() {
        format!("did you mean {}?", near.join(", "))
    } else if !same_step.is_empty() {
        format!("codes of that step: {}", same_step.join(", "))
    } else {
        "`meshtrace explain --list` lists every step and code".to_string()
    };
    format!("unknown step or finding code {what:?}; {hint}")
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `explain --list`: every step and code with its one-line title.
pub fn list() -> String {
    let mut out = String::new();
    let causes = crate::engine::steps::causes();
    for s in STEPS {
        out.push_str(&format!("{:<34} {}\n", s.id.as_str(), s.title));
        for c in causes.iter().filter(|c| c.step == s.id) {
            out.push_str(&format!("  {:<32} {}\n", c.code(), c.title));
        }
    }
    out.push_str("\nEvery step can also report:\n");
    for (g, title) in generic::ALL {
        out.push_str(&format!("  {:<32} {title}\n", format!("<step>/{g}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_and_every_code_has_its_anchor_in_checks_md() {
        for s in STEPS {
            assert!(
                CHECKS_MD.contains(&anchor_line(s.id.as_str())),
                "no anchor for step {}",
                s.id
            );
        }
        for c in crate::engine::steps::causes() {
            let code = c.code();
            assert!(
                CHECKS_MD.contains(&anchor_line(&code)),
                "no anchor for code {code} in docs/checks.md"
            );
        }
        for (g, _) in generic::ALL {
            assert!(
                CHECKS_MD.contains(&anchor_line(g)),
                "no anchor for the shared cause {g}"
            );
        }
    }

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut codes = all_codes();
        let n = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n, "a code is declared twice");
        for c in &codes {
            let (step, cause) = c.split_once('/').expect("step/cause");
            assert!(StepId::parse(step).is_some(), "{c}: unknown step");
            assert!(
                !cause.is_empty()
                    && cause
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'),
                "{c}: cause is not kebab-case"
            );
        }
    }

    #[test]
    fn explain_prints_the_section_and_refuses_unknown_codes() {
        let t = explain("remote-rbac").unwrap();
        assert!(t.contains("SelfSubjectAccessReview"), "{t}");
        assert!(t.contains("https://"), "{t}");
        assert!(!t.contains("<a id="));
        let g = explain("csr/timeout").unwrap();
        assert!(g.contains("csr/timeout"), "{g}");
        assert!(g.contains("--timeout"), "{g}");
        assert!(
            !g.contains("internal-error"),
            "the section runs into the next code: {g}"
        );
        let e = explain("remote-rbca").unwrap_err();
        assert!(e.contains("did you mean remote-rbac"), "{e}");
        let e = explain("nothing-like-it/at-all").unwrap_err();
        assert!(e.contains("\"nothing-like-it/at-all\""), "{e}");
    }

    #[test]
    fn a_code_section_stops_at_the_next_code() {
        let doc = "<a id=\"s\"></a>\n## s\nintro\n<a id=\"s/a\"></a>\n#### a\nabout a\n<a id=\"s/b\"></a>\n#### b\nabout b\n\n---\nnext";
        assert_eq!(section(doc, "s/a").unwrap(), "#### a\nabout a");
        assert!(section(doc, "s").unwrap().contains("about b"));
        assert!(!section(doc, "s").unwrap().contains("next"));
    }
}
