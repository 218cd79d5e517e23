//! Sans-IO parsers and checks: kubeconfigs, JWT claims, PEM/x509, SPIFFE IDs.
//! Nothing here touches the network, so it is all unit-tested.

pub mod jwt;
pub mod kubeconfig;
pub mod x509;
