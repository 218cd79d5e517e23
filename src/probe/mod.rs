//! Network probes: TLS handshakes, the istiod CA client, istiod's view of
//! its clusters and the preflight of the operator's own access. They return
//! facts, never touch UI state, and never import the engine.
pub mod admission;
pub mod ca_client;
pub mod clusterz;
pub mod http1;
pub mod kube_cache;
pub mod kube_client;
pub mod kube_error;
pub mod kube_stack;
pub mod preflight;
pub mod tls;
pub mod xds;
pub mod xds_debug;
