//! meshtrace: trace how an Istio remote-cluster gateway authenticates to the
//! primary cluster's istiod, step by step, and point at the step that breaks.
#![forbid(unsafe_code)]

pub mod findings;
pub mod inspect;
pub mod lab;
pub mod model;
pub mod probe;
pub mod proto;
pub mod sequence;

/// rustls needs one process-wide crypto provider; meshtrace uses ring so that
/// building needs no C toolchain beyond what `ring` itself needs.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub mod cli;
pub mod engine;
pub mod explain;
pub mod render;
pub mod replay;
pub mod tui;
