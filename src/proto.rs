//! Generated gRPC types for istiod's `istio.v1.auth.IstioCertificateService`.
#![allow(clippy::all)]
tonic::include_proto!("istio.v1.auth");
