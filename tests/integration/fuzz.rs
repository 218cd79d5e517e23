//! Deterministic mutation fuzzing of the parsers that read cluster data:
//! kubeconfigs, JWTs, PEM/x509 chains and SPIFFE IDs. Whatever the bytes,
//! they return a value or an error, never panic. (A fixed seed keeps the run
//! repeatable; raise MESHTRACE_FUZZ_ITERS for a longer run.)

use meshtrace::inspect::{jwt, kubeconfig, x509};

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flip, insert, delete, duplicate and splice bytes of a valid seed input.
fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let i = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let at = i.min(v.len() - 1);
                v[at] ^= 1 << rng.below(8);
            }
            1 => v.insert(i, (rng.next() & 0xff) as u8),
            2 if i < v.len() => {
                v.remove(i);
            }
            3 if i < v.len() => {
                let end = (i + rng.below(64)).min(v.len());
                let chunk = v[i..end].to_vec();
                v.splice(i..i, chunk);
            }
            4 => v.truncate(i),
            _ => {
                let b = [b':', b'\n', b' ', b'.', b'-', b'=', b'{', b'"', 0xff][rng.below(9)];
                v.insert(i, b);
            }
        }
    }
    v
}

fn iters() -> usize {
    std::env::var("MESHTRACE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn seeds() -> (String, String, String) {
    meshtrace::install_crypto_provider();
    let root = meshtrace::lab::pki::Ca::root("fuzz root", "fuzz", 10);
    let inter = root.intermediate("fuzz inter", "fuzz", 5);
    let chain = inter.chain_pem.concat();
    let keys = meshtrace::lab::tokens::SigningKeys::generate("https://fuzz.invalid");
    let now = meshtrace::lab::tokens::now_unix();
    let token = keys.mint(&meshtrace::lab::tokens::TokenSpec {
        namespace: "ns".into(),
        service_account: "sa".into(),
        service_account_uid: "u".into(),
        audiences: vec!["istio-ca".into()],
        issued_at: now,
        expires_at: now + 600,
        pod: None,
    });
    let kc = meshtrace::lab::world::kubeconfig(
        "remote",
        "https://127.0.0.1:6443",
        &root.cert_pem,
        &token,
    );
    (kc, token, chain)
}

#[test]
fn parsers_never_panic_on_mutated_input() {
    let (kc, token, chain) = seeds();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = [0usize; 3];
    for _ in 0..iters() {
        let k = mutate(&mut rng, kc.as_bytes());
        if kubeconfig::parse_remote_kubeconfig(&k).is_ok() {
            accepted[0] += 1;
        }
        let t = mutate(&mut rng, token.as_bytes());
        if jwt::decode(&String::from_utf8_lossy(&t)).is_ok() {
            accepted[1] += 1;
        }
        let c = mutate(&mut rng, chain.as_bytes());
        let text = String::from_utf8_lossy(&c).to_string();
        if x509::parse_pem_chain(&text).is_ok() {
            accepted[2] += 1;
        }
        let _ = x509::verify_chain(std::slice::from_ref(&text), &text, "cluster.local", None, 0);
        let _ = x509::parse_spiffe(&String::from_utf8_lossy(&mutate(
            &mut rng,
            b"spiffe://cluster.local/ns/a/sa/b",
        )));
        let _ = x509::parse_der(&c);
    }
    // The mutations must leave some inputs valid, or the fuzzer tests nothing
    // but the first error path.
    assert!(
        accepted.iter().all(|n| *n > 0),
        "accepted per parser: {accepted:?}"
    );
}

#[test]
fn parsers_never_panic_on_random_bytes() {
    let mut rng = XorShift(42);
    for _ in 0..iters() {
        let len = rng.below(512);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let _ = kubeconfig::parse_remote_kubeconfig(&bytes);
        let _ = jwt::decode(&text);
        let _ = x509::parse_pem_chain(&text);
        let _ = x509::parse_der(&bytes);
        let _ = x509::parse_spiffe(&text);
    }
}
