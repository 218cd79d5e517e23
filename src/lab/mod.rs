//! The built-in lab: two simulated Kubernetes API servers and a simulated
//! istiod CA, in process, speaking the real wire protocols (HTTPS + JSON,
//! gRPC + TLS) so the trace reaches them through the same client code as a
//! real cluster.

pub mod apiserver;
pub mod faults;
pub mod istiod;
#[cfg(test)]
mod kubectl_tests;
pub mod pki;
pub mod profiles;
pub mod store;
pub mod tokens;
pub mod world;
