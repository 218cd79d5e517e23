//! Network probes: TLS handshakes and the istiod CA client. They return facts,
//! never touch UI state.
pub mod ca_client;
pub mod tls;
