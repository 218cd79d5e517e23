//! Istio's config kinds the lab serves (networking.istio.io/v1 Gateway and
//! VirtualService, as Istio's CRDs in manifests/charts/base define them):
//! metadata typed, spec kept as JSON, since the API server stores a CRD's
//! spec without knowing its schema beyond the CRD's own validation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! istio_kind {
    ($ty:ident, $kind:literal, $plural:literal) => {
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $ty {
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default, skip_serializing_if = "Value::is_null")]
            pub spec: Value,
        }
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = "networking.istio.io/v1";
            const GROUP: &'static str = "networking.istio.io";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }
        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

istio_kind!(Gateway, "Gateway", "gateways");
istio_kind!(VirtualService, "VirtualService", "virtualservices");
