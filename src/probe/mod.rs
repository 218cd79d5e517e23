//! Network probes: TLS handshakes, the istiod CA client and istiod's view of
//! its clusters. They return facts, never touch UI state.
pub mod ca_client;
pub mod clusterz;
pub mod kube_client;
pub mod tls;
