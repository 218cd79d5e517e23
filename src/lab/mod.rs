//! The built-in lab: two simulated Kubernetes API servers and a simulated
//! istiod CA, in process, speaking the real wire protocols (HTTPS + JSON,
//! gRPC + TLS) so the trace reaches them through the same client code as a
//! real cluster.

pub mod apiserver;
pub mod faults;
pub mod istio_types;
pub mod istiod;
#[cfg(test)]
mod kubectl_tests;
pub mod pki;
pub mod profiles;
pub mod session;
pub mod store;
pub mod tokens;
pub mod webhook;
pub mod world;

/// Writes a file only its owner may read (0600): the lab's kubeconfigs hold
/// its admin tokens.
pub fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}
