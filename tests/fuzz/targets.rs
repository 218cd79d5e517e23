//! The bodies of meshtrace's fuzz targets, shared by cargo-fuzz
//! (tests/fuzz/fuzz_targets/*.rs, coverage-guided, nightly) and by
//! `cargo test` (tests/integration/fuzz.rs, stable), which replays every
//! corpus and crash file through the same functions.
//!
//! Each target feeds peer-controlled bytes to the code that reads them and
//! checks a property beyond "does not panic" where one exists: no planted
//! secret and no control character survives the sanitizer, no JWT signature
//! reaches evidence, no wrapped line is wider than its room.

use meshtrace::inspect::{jwt, kubeconfig, sanitize, x509};
use meshtrace::probe::{clusterz, kube_client, kube_error};

/// The bytes as text, as a peer's answer is read (lossy UTF-8).
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// No character a terminal would act on: C0/C1 controls (newline and tab
/// allowed when `newlines`), DEL, bidi overrides.
fn assert_printable(s: &str, newlines: bool, what: &str) {
    if let Some(c) = s.chars().find(|c| sanitize::is_unsafe_char(*c, newlines)) {
        panic!("{what}: unsafe character {c:?} in {s:?}");
    }
}

/// A remote secret's value, as the `remote-kubeconfig` step parses it.
pub fn kubeconfig(data: &[u8]) {
    if let Ok(kc) = kubeconfig::parse_remote_kubeconfig(data) {
        let _ = kc.server_host();
        let _ = serde_json::to_string(&kc.evidence());
    }
}

/// A token, as the steps decode it for evidence: the signature never shows.
pub fn jwt(data: &[u8]) {
    let t = text(data);
    let _ = jwt::fingerprint(&t);
    if let Ok(summary) = jwt::decode(&t) {
        let ev = serde_json::to_string(&summary.evidence()).unwrap_or_default();
        if let Some(sig) = t.trim().rsplit('.').next().filter(|s| s.len() >= 16) {
            assert!(
                !ev.contains(sig),
                "the signature reached the evidence: {ev}"
            );
        }
    }
}

/// A PEM bundle, as istio-ca-root-cert, cacerts and the issued chain are read.
pub fn pem_chain(data: &[u8]) {
    let t = text(data);
    if let Ok(certs) = x509::parse_pem_chain(&t) {
        for c in &certs {
            let _ = serde_json::to_string(&c.evidence());
        }
    }
    let pems: Vec<String> = t
        .split("-----END CERTIFICATE-----")
        .filter(|p| p.contains("-----BEGIN"))
        .map(|p| format!("{p}-----END CERTIFICATE-----"))
        .take(16)
        .collect();
    let _ = x509::verify_chain(&pems, &t, "cluster.local", Some("istio-system/gw"), 0);
    let _ = x509::parse_der(data);
    let _ = x509::parse_spiffe(&t);
}

/// istiod's `/debug/clusterz` answer: what is quoted from it is printable.
pub fn clusterz(data: &[u8]) {
    match clusterz::parse(&text(data)) {
        Ok(entries) => {
            let summary = clusterz::summary(&entries);
            assert_printable(&summary, false, "clusterz summary");
            let view: clusterz::View = Ok(vec![clusterz::Answer {
                from: "pod istiod-0".into(),
                result: Ok(entries),
            }]);
            let _ = clusterz::judge(&view, "remote");
            let _ = clusterz::evidence(&view);
        }
        Err(e) => assert_printable(&e, false, "clusterz error"),
    }
}

/// A recording (`-o events` lines or a `-o json` report): whatever it holds,
/// what replay shows has no control character but newlines.
pub fn replay(data: &[u8]) {
    let t = text(data);
    match meshtrace::replay::parse(&t, "fuzz") {
        Ok(rec) => {
            let mut st = meshtrace::model::TraceState::default();
            for e in &rec.events {
                st.apply(e);
            }
            let report = st.report();
            let style = meshtrace::render::text::TextStyle {
                color: false,
                verbose: true,
                ascii: false,
                ..Default::default()
            };
            let out = meshtrace::render::text::render(&report, style);
            assert_printable(&out, true, "replayed text");
        }
        Err(e) => assert!(!e.contains('\u{1b}'), "an escape in the error: {e:?}"),
    }
}

/// An HTTP answer from an "API server": the first bytes pick the status and
/// head, the rest is the body. What meshtrace says about it is one clean line.
pub fn kube_answer(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let statuses = [
        200, 201, 204, 301, 302, 307, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504,
    ];
    let types = [
        None,
        Some("application/json"),
        Some("text/html; charset=utf-8"),
        Some("text/plain"),
        Some("application/vnd.kubernetes.protobuf"),
    ];
    let paths = [
        "/api/v1/namespaces/istio-system/secrets",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "/version",
        "/api/v1/namespaces/x/pods/p:15014/proxy/debug",
    ];
    let status = statuses[data[0] as usize % statuses.len()];
    let content_type = types[data[1] as usize % types.len()];
    let path = paths[data[2] as usize % paths.len()];
    let body = &data[3..];
    let t = text(body);
    let head = kube_client::Head {
        status,
        content_type,
        location: Some(t.get(..t.len().min(40)).unwrap_or("")),
        retry_after: Some("1"),
        path,
    };
    if let Err(e) = kube_client::classify("https://peer.invalid", &head, body) {
        assert_printable(&e.to_string(), false, "classify");
        assert!(e.to_string().len() < 4 * sanitize::QUOTE_MAX, "too long");
    }
    // An error body as kube reads it: a Status, or text kube wraps in one.
    let status_obj = serde_json::from_slice::<kube::core::Status>(body).unwrap_or_else(|_| {
        kube::core::Status::failure(&t, "Failed to parse error data").with_code(status)
    });
    let said = kube_error::describe(&kube::Error::Api(status_obj.boxed()));
    assert_printable(&said, false, "describe");
    assert!(
        said.len() < 4 * sanitize::QUOTE_MAX,
        "too long: {}",
        said.len()
    );
}

/// The sanitizer: a token planted anywhere in any text never survives, and
/// nothing it returns holds a control character (but newline and tab in
/// `clean`).
pub fn sanitize(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let len = 8 + data[0] as usize % 57;
    let at = data[1] as usize;
    let rest = &data[2..];
    let token: String = (0..len)
        .map(|i| {
            let b = rest.get(i).copied().unwrap_or(i as u8);
            ALPHABET[b as usize % ALPHABET.len()] as char
        })
        .collect();
    // A token is not all dots, and its signature part is long enough to hold.
    if token.trim_matches('.').len() < 8 {
        return;
    }
    let body = text(rest.get(len.min(rest.len())..).unwrap_or_default());
    let mut cut = at.min(body.len());
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    let planted = format!("{}{token}{}", &body[..cut], &body[cut..]);
    let secrets = sanitize::Secrets::new();
    secrets.add(&token);
    let held = secrets.snapshot();
    let clean = sanitize::clean(&planted, &held);
    assert!(
        !clean.contains(&token),
        "the planted token survived: {clean:?}"
    );
    assert_printable(&clean, true, "clean");
    let quoted = sanitize::quote_with(&planted, &held);
    assert!(
        !quoted.contains(&token),
        "the planted token survived quote: {quoted:?}"
    );
    assert_printable(&quoted, false, "quote");
    assert!(
        quoted.len() <= sanitize::QUOTE_MAX + 32,
        "quote is {} bytes",
        quoted.len()
    );
    // Shapes alone (no exact secret): still printable.
    assert_printable(&sanitize::clean(&body, &[]), true, "clean without secrets");
}

/// The TUI's text layout: every wrapped line fits its room, every word's
/// characters survive in order.
pub fn tui_wrap(data: &[u8]) {
    use meshtrace::tui::text as t;
    if data.is_empty() {
        return;
    }
    let w = 1 + data[0] as usize % 120;
    let s = text(&data[1..]).replace(['\n', '\r', '\t'], " ");
    let s = sanitize::strip_controls(&s, false);
    let lines = t::wrap_words(&s, w);
    for l in &lines {
        // A single character wider than the room is the one allowed overflow.
        assert!(t::width(l) <= w.max(2), "line {l:?} is wider than {w}");
    }
    let joined: String = lines.concat().chars().filter(|c| *c != ' ').collect();
    let want: String = s.chars().filter(|c| *c != ' ').collect();
    assert_eq!(joined, want, "wrapping lost or reordered characters");
    let _ = t::wrap_hard(&s, w / 2, w);
    let _ = t::layout_hint(&s, w);
    let _ = meshtrace::tui::fix_to_copy(&s);
}
