//! Kubernetes client errors in words, for every caller that reports one:
//! the engine's steps, the preflight and istiod's view (probe::clusterz).
//! A module of its own so that no probe needs the engine for it.

use http::StatusCode;

/// A kube error in one line: the API server's own status and message when
/// there is one (quoted through the sanitizer, capped), else the transport
/// error's innermost cause in words, never Rust `Debug` output.
pub fn describe(e: &kube::Error) -> String {
    use crate::inspect::sanitize::quote;
    match e {
        kube::Error::Api(s) if s.reason == "Failed to parse error data" => {
            let words = StatusCode::from_u16(s.code)
                .ok()
                .and_then(|c| c.canonical_reason())
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            format!(
                "HTTP {}{words} without a Kubernetes Status (a proxy in front of the API server?): {}",
                s.code,
                quote(&s.message)
            )
        }
        kube::Error::Api(s) => {
            if s.reason.is_empty() {
                format!("{} {}", s.code, quote(&s.message))
            } else {
                format!("{} {}: {}", s.code, quote(&s.reason), quote(&s.message))
            }
        }
        kube::Error::SerdeError(err) => format!(
            "the answer is not the Kubernetes object asked for ({})",
            quote(&err.to_string())
        ),
        other if exec_words(other).is_some() => exec_words(other).unwrap_or_default(),
        other => {
            if let Some(tls) = tls_words(other) {
                return quote(&format!("TLS: {tls}"));
            }
            // Transport errors nest; the innermost cause is the useful part.
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg = s.to_string();
                src = s.source();
            }
            quote(&msg)
        }
    }
}

/// A TLS refusal anywhere in the error's chain, in words (not rustls' Debug
/// names).
pub fn tls_words(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        // rustls' error travels inside an io::Error, whose `source` skips
        // it: look inside too.
        if let Some(tls) = rustls_inside(err) {
            return Some(crate::probe::tls::rustls_words(tls));
        }
        cur = err.source();
    }
    None
}

/// An exec plugin's failure in words: its exit status and what it said on
/// stderr (kube's own message is the Rust `Debug` form of the process output).
pub fn exec_words(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(kube::client::AuthError::AuthExecRun { out, .. }) =
            err.downcast_ref::<kube::client::AuthError>()
        {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = crate::inspect::sanitize::quote(said.trim());
            return Some(if said.is_empty() {
                format!(
                    "the kubeconfig's exec plugin failed ({}) and said nothing on stderr",
                    out.status
                )
            } else {
                format!(
                    "the kubeconfig's exec plugin failed ({}): {said}",
                    out.status
                )
            });
        }
        cur = err.source();
    }
    None
}

/// The rustls error in `e`, looking through io::Errors (which may nest).
fn rustls_inside<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    for _ in 0..4 {
        if let Some(t) = cur.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        let inner = cur.downcast_ref::<std::io::Error>()?.get_ref()?;
        cur = inner;
    }
    None
}

/// The HTTP status of an API server's refusal, if the error is one.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
