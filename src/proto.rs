//! Generated gRPC types: istiod's `istio.v1.auth.IstioCertificateService`
//! at the top level, envoy's ADS (meshtrace's minimal subset) in [`ads`].
#![allow(clippy::all)]
tonic::include_proto!("istio.v1.auth");

/// `envoy.service.discovery.v3`: the ADS stream istiod's debug types ride on.
pub mod ads {
    #![allow(clippy::all)]
    tonic::include_proto!("envoy.service.discovery.v3");
}
