//! The one sanitizer for everything a peer says (API servers, proxies in
//! front of them, istiod, a recording on disk).
//!
//! Applied before text enters the trace model, so every front end (text,
//! JSON, Markdown, Mermaid, events, the TUI, replay) shows only clean text:
//!
//! 1. every exact secret the trace holds (the operator's credentials, the
//!    remote secret's token, the gateway's token, and each JWT's signature
//!    alone) becomes `[redacted]`;
//! 2. control characters and terminal escape sequences (CSI, OSC, DCS, ...,
//!    C1 controls, bidi overrides) are removed;
//! 3. anything shaped like a secret is redacted even when unknown: JWTs,
//!    `Bearer …`/`Basic …` values, PEM private-key blocks, and the values of
//!    `token`, `password`, `authorization`, `*-key-data` fields;
//! 4. peer text is capped ([`QUOTE_MAX`]) with "… N bytes more".
//!
//! Exact secrets are replaced both before and after stripping escapes, so a
//! secret split by an escape sequence is caught, and so is one whose first
//! character an escape sequence would swallow.

use std::sync::{Arc, RwLock};

/// Most bytes of one quoted piece of peer text (an error body, a message).
pub const QUOTE_MAX: usize = 1024;
/// Most bytes of one evidence string.
pub const FIELD_MAX: usize = 1024;
/// Most bytes of a diagnosis or a fix.
pub const DIAGNOSIS_MAX: usize = 4096;
/// Most items of one evidence list (a certificate chain, a list of secrets).
pub const LIST_MAX: usize = 32;

pub const REDACTED: &str = "[redacted]";

/// The exact secrets one trace holds, shared by its steps. Cloning shares.
#[derive(Clone, Default)]
pub struct Secrets(Arc<RwLock<Vec<String>>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} held)", self.snapshot().len())
    }
}

/// Shorter strings would redact ordinary words; no credential is this short.
const MIN_SECRET: usize = 8;

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }
    /// Hold `secret` (and, for a JWT, its signature alone) for redaction.
    pub fn add(&self, secret: &str) {
        let secret = secret.trim();
        let mut parts = vec![secret.to_string()];
        if let Some(sig) = secret.rsplit('.').next().filter(|_| secret.contains('.')) {
            parts.push(sig.to_string());
        }
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        for p in parts {
            if p.len() >= MIN_SECRET && !held.contains(&p) {
                held.push(p);
            }
        }
        // Longest first: a token is replaced whole before its signature.
        held.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
    pub fn snapshot(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Clean text for the model: secrets redacted, control characters and escape
/// sequences removed (newlines and tabs kept). Not capped.
pub fn clean(text: &str, secrets: &[String]) -> String {
    let once = replace_exact(text, secrets);
    let stripped = strip_controls(&once, true);
    let again = replace_exact(&stripped, secrets);
    redact_shapes(&again)
}

/// Clean peer text for quoting inside one line of a diagnosis: as [`clean`]
/// with no exact secrets known, whitespace runs folded to one space, capped
/// at [`QUOTE_MAX`].
pub fn quote(text: &str) -> String {
    quote_with(text, &[])
}

/// [`quote`] with the exact secrets the caller holds.
pub fn quote_with(text: &str, secrets: &[String]) -> String {
    let c = clean(text, secrets);
    let folded = c.split_whitespace().collect::<Vec<_>>().join(" ");
    cap(&folded, QUOTE_MAX)
}

/// `text` cut to at most `max` bytes (at a character boundary), then
/// "… N bytes more".
pub fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… {} bytes more", &text[..end], text.len() - end)
}

fn replace_exact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() < MIN_SECRET {
            continue;
        }
        // Bounded: each pass removes at least one occurrence, and the
        // replacement cannot hold a secret of MIN_SECRET or more characters
        // unless the secret is inside "[redacted]" itself.
        for _ in 0..64 {
            if !out.contains(s.as_str()) {
                break;
            }
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// Whether `c` is a control character meshtrace never shows: C0 (except
/// newline and tab when `keep_newlines`), DEL, C1, and the bidirectional
/// overrides and isolates that reorder what a terminal displays.
pub fn is_unsafe_char(c: char, keep_newlines: bool) -> bool {
    match c {
        '\n' | '\t' => !keep_newlines,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// Removes terminal escape sequences whole (so their parameters do not
/// show), then every other unsafe character. A carriage return becomes a
/// newline when newlines are kept.
pub fn strip_controls(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\u{1b}' => match it.peek().copied() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    it.next();
                    while let Some(&n) = it.peek() {
                        it.next();
                        if ('\u{40}'..='\u{7e}').contains(&n) {
                            break;
                        }
                        if !('\u{20}'..='\u{3f}').contains(&n) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST.
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    it.next();
                    while let Some(n) = it.next() {
                        if n == '\u{7}' || n == '\u{9c}' {
                            break;
                        }
                        if n == '\u{1b}' {
                            if it.peek() == Some(&'\\') {
                                it.next();
                            }
                            break;
                        }
                    }
                }
                // Any other escape: ESC and the one character after it.
                Some(_) => {
                    it.next();
                }
                None => {}
            },
            // The 8-bit CSI and OSC introducers.
            '\u{9b}' | '\u{9d}' => {}
            '\r' if keep_newlines => {
                if it.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            c if is_unsafe_char(c, keep_newlines) => {}
            c => out.push(c),
        }
    }
    out
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=' || b == b'+' || b == b'/'
}

/// Redacts what looks like a credential, whether or not the trace knows it.
fn redact_shapes(text: &str) -> String {
    let t = redact_pem_keys(text);
    let t = redact_jwts(&t);
    let t = redact_schemes(&t);
    redact_fields(&t)
}

/// `-----BEGIN … PRIVATE KEY-----` to its END line (or to the end).
fn redact_pem_keys(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin..];
        let header_end = after[11..].find("-----").map(|i| i + 11 + 5);
        let is_key = header_end.is_some_and(|e| after[..e].contains("PRIVATE KEY"));
        if !is_key {
            out.push_str(&rest[..begin + 11]);
            rest = &rest[begin + 11..];
            continue;
        }
        out.push_str(&rest[..begin]);
        out.push_str("[redacted private key]");
        match after.find("-----END ") {
            Some(end) => {
                let tail = &after[end + 9..];
                let close = tail.find("-----").map(|i| i + 5).unwrap_or(tail.len());
                rest = &tail[close..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// `eyJ…` with at least two dots: a JWT (header.payload.signature).
fn redact_jwts(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    while i + 3 <= b.len() {
        let boundary = i == 0 || !is_b64url(b[i - 1]);
        if boundary && &b[i..i + 3] == b"eyJ" {
            let mut j = i;
            let mut dots = 0;
            while j < b.len() && (is_b64url(b[j]) || b[j] == b'.') {
                if b[j] == b'.' {
                    dots += 1;
                }
                j += 1;
            }
            if dots >= 2 {
                out.push_str(&text[last..i]);
                out.push_str("[redacted JWT]");
                last = j;
                i = j;
                continue;
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    out.push_str(&text[last..]);
    out
}

/// `Bearer X` and `Basic X` (any case): the credential after the scheme.
fn redact_schemes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lower = text.to_ascii_lowercase();
    let mut last = 0;
    let mut search = 0;
    // The next occurrence of each scheme, found again only once passed: a
    // fresh search for both on every hit is quadratic on a peer's body full
    // of one scheme and none of the other.
    const SCHEMES: [&str; 2] = ["bearer ", "basic "];
    let mut next = SCHEMES.map(|scheme| lower.find(scheme));
    loop {
        for (k, scheme) in SCHEMES.iter().enumerate() {
            if next[k].is_some_and(|p| p < search) {
                next[k] = lower[search..].find(scheme).map(|p| p + search);
            }
        }
        let Some((start, len)) = (0..2)
            .filter_map(|k| next[k].map(|p| (p, SCHEMES[k].len())))
            .min()
        else {
            break;
        };
        let boundary = start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric();
        let vstart = start + len;
        let mut vend = vstart;
        let vb = text.as_bytes();
        while vend < vb.len() && vb[vend] == b' ' {
            vend += 1;
        }
        let cred_start = vend;
        while vend < vb.len() && (is_b64url(vb[vend]) || vb[vend] == b'.' || vb[vend] == b'~') {
            vend += 1;
        }
        if boundary && vend - cred_start >= MIN_SECRET {
            out.push_str(&text[last..vstart]);
            out.push_str(REDACTED);
            last = vend;
        }
        search = vend.max(start + 1);
    }
    out.push_str(&text[last..]);
    out
}

/// The value of a field whose name says it is a secret, in JSON (`"token":
/// "…"`), YAML (`token: …`) or header (`Authorization: …`) form.
fn redact_fields(text: &str) -> String {
    const KEYS: [&str; 7] = [
        "token",
        "password",
        "authorization",
        "key-data",
        "id-token",
        "refresh-token",
        "client-secret",
    ];
    let lower = text.to_ascii_lowercase();
    let lb = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut i = 0;
    while i < lb.len() {
        let Some(key) = KEYS.iter().find(|k| lb[i..].starts_with(k.as_bytes())) else {
            i += 1;
            continue;
        };
        // `key-data` also ends `client-key-data`; the others start a word.
        let word_start = i == 0 || !(lb[i - 1].is_ascii_alphanumeric() || lb[i - 1] == b'_');
        let suffix_ok = *key == "key-data" || word_start;
        let mut j = i + key.len();
        if !suffix_ok || (j < lb.len() && (lb[j].is_ascii_alphanumeric() || lb[j] == b'-')) {
            i += 1;
            continue;
        }
        if j < lb.len() && lb[j] == b'"' {
            j += 1;
        }
        while j < lb.len() && lb[j] == b' ' {
            j += 1;
        }
        if j >= lb.len() || !(lb[j] == b':' || lb[j] == b'=') {
            i += 1;
            continue;
        }
        j += 1;
        while j < lb.len() && lb[j] == b' ' {
            j += 1;
        }
        let quoted = j < lb.len() && (lb[j] == b'"' || lb[j] == b'\'');
        let vstart = if quoted { j + 1 } else { j };
        let mut vend = vstart;
        if quoted {
            let q = lb[j];
            while vend < lb.len() && lb[vend] != q && lb[vend] != b'\n' {
                vend += if lb[vend] == b'\\' { 2 } else { 1 };
            }
            vend = vend.min(lb.len());
        } else {
            while vend < lb.len() && !matches!(lb[vend], b'\n' | b',' | b'}' | b';' | b'&') {
                vend += 1;
            }
        }
        // A header value like `Bearer [redacted]` is already clean.
        let value = &text[vstart..vend];
        if value.trim().len() >= MIN_SECRET
            && !value.contains(REDACTED)
            && !value.contains("[redacted JWT]")
        {
            out.push_str(&text[last..vstart]);
            out.push_str(REDACTED);
            last = vend;
        }
        i = vend.max(i + 1);
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_interleaved_are_all_redacted() {
        let text = "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ== then bearer c2VjcmV0LXNlY3JldC1zZWNyZXQ \
                    basic short, and BASIC dXNlcjpwYXNzd29yZC1sb25n end";
        let out = redact_schemes(text);
        for leaked in ["QWxhZGRpbjpv", "c2VjcmV0LXNl", "dXNlcjpwYXNz"] {
            assert!(!out.contains(leaked), "{leaked} survived: {out}");
        }
        // Too short to be a credential: kept, as before.
        assert!(out.contains("basic short"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }

    const JWT: &str =
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2E6eCJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWc";

    #[test]
    fn redacts_exact_secrets_and_signatures() {
        let s = Secrets::new();
        s.add("opaque-token-0123456789");
        s.add(JWT);
        let held = s.snapshot();
        let sig = JWT.rsplit('.').next().unwrap();
        let text = format!("a opaque-token-0123456789 b {JWT} c {sig} d");
        let c = clean(&text, &held);
        assert!(!c.contains("opaque-token"), "{c}");
        assert!(!c.contains(sig), "{c}");
        assert!(c.starts_with("a [redacted] b "), "{c}");
    }

    #[test]
    fn a_secret_split_by_an_escape_is_still_found() {
        let held = vec!["secret-value-123456".to_string()];
        let c = clean("x secret-val\x1b[31mue-123456 y", &held);
        assert_eq!(c, "x [redacted] y");
        // The CSI parser would swallow the first character as its final byte.
        let c = clean("x \x1b[secret-value-123456 y", &held);
        assert!(!c.contains("ecret-value-123456"), "{c}");
    }

    #[test]
    fn redacts_shapes_without_knowing_the_secret() {
        let cases = [
            (format!("echo: Authorization: Bearer {JWT}"), "c2lnbmF0dXJl"),
            (format!("{{\"token\":\"{JWT}\"}}"), "c2lnbmF0dXJl"),
            ("token: abcdefgh12345678".into(), "abcdefgh12345678"),
            (
                "client-key-data: QUJDREVGR0hJSktMTU5PUA==".into(),
                "QUJDREVG",
            ),
            (
                "Authorization: Basic dXNlcjpwYXNzd29yZA==".into(),
                "dXNlcjpw",
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI\n-----END EC PRIVATE KEY-----".into(),
                "MHcCAQEEI",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg".into(),
                "MIIEvQIBADANBg",
            ),
            ("password=hunter2hunter2&x=1".into(), "hunter2"),
        ];
        for (text, secret) in cases {
            let c = clean(&text, &[]);
            assert!(!c.contains(secret), "{text:?} -> {c:?}");
            assert!(c.contains("redacted"), "{text:?} -> {c:?}");
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        for text in [
            "tokenreviews.authentication.k8s.io is forbidden: User \"x\" cannot create resource \"tokenreviews\"",
            "the token expired at 2026-01-01T00:00:00Z",
            "token audiences [\"istio-ca\"] is invalid for the target audiences [\"other\"]",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "basic auth is off; bearer tokens only",
            "line one\nline\ttwo",
        ] {
            assert_eq!(clean(text, &[]), text);
        }
    }

    #[test]
    fn strips_escape_sequences_and_controls() {
        let c = clean(
            "a\x1b]0;pwned title\x07b\x1b[2Jc\x1b]52;c;ZXZpbA==\x1b\\d\u{9b}31me\u{202e}f\x00g\rh",
            &[],
        );
        assert_eq!(c, "abcd31mefg\nh", "{c:?}");
        assert!(!quote("a\nb\tc").chars().any(|c| c.is_control()));
    }

    #[test]
    fn caps_quoted_text_with_the_rest_counted() {
        let q = quote(&"é".repeat(2000));
        assert!(q.len() < QUOTE_MAX + 40, "{}", q.len());
        assert!(q.ends_with(&format!("… {} bytes more", 4000 - 1024)), "{q}");
        assert_eq!(cap("short", 10), "short");
    }
}
