//! The object store behind one simulated API server: Kubernetes objects kept
//! as JSON, keyed by resource and name, so the server can serve any resource
//! generically while lab builders and faults work with k8s-openapi types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::collections::BTreeMap;

/// Identifies a resource type as the API server routes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    /// Plural, lowercase: "secrets", "endpointslices".
    pub plural: String,
}

impl ResourceKey {
    pub fn of<K: Resource>() -> Self {
        ResourceKey {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
        }
    }
}

/// (namespace or "" for cluster-scoped, name)
pub type ObjectKey = (String, String);

#[derive(Debug, Clone, Default)]
pub struct Store {
    pub objects: BTreeMap<ResourceKey, BTreeMap<ObjectKey, Value>>,
    next_uid: u64,
    next_version: u64,
}

impl Store {
    /// Insert or replace an object; fills apiVersion, kind, uid, resourceVersion
    /// and creationTimestamp the way an API server would.
    pub fn put<K>(&mut self, mut obj: K) -> K
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned,
    {
        self.next_version += 1;
        let meta = obj.metadata_mut();
        if meta.uid.is_none() {
            self.next_uid += 1;
            meta.uid = Some(format!("00000000-0000-4000-8000-{:012x}", self.next_uid));
        }
        meta.resource_version = Some(self.next_version.to_string());
        if meta.creation_timestamp.is_none() {
            meta.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let mut value = serde_json::to_value(&obj).expect("k8s objects serialize");
        value["apiVersion"] = Value::String(K::API_VERSION.to_string());
        value["kind"] = Value::String(K::KIND.to_string());
        self.objects
            .entry(ResourceKey::of::<K>())
            .or_default()
            .insert((ns, name), value);
        obj
    }

    pub fn get<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: Resource + DeserializeOwned,
    {
        let v = self
            .objects
            .get(&ResourceKey::of::<K>())?
            .get(&(ns.to_string(), name.to_string()))?;
        serde_json::from_value(v.clone()).ok()
    }

    pub fn list<K>(&self) -> Vec<K>
    where
        K: Resource + DeserializeOwned,
    {
        self.objects
            .get(&ResourceKey::of::<K>())
            .map(|m| {
                m.values()
                    .filter_map(|v| serde_json::from_value(v.clone()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Change an object in place; returns false when it does not exist.
    pub fn modify<K>(&mut self, ns: &str, name: &str, f: impl FnOnce(&mut K)) -> bool
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned,
    {
        match self.get::<K>(ns, name) {
            Some(mut obj) => {
                f(&mut obj);
                self.put(obj);
                true
            }
            None => false,
        }
    }

    pub fn remove<K: Resource>(&mut self, ns: &str, name: &str) -> bool {
        self.objects
            .get_mut(&ResourceKey::of::<K>())
            .map(|m| m.remove(&(ns.to_string(), name.to_string())).is_some())
            .unwrap_or(false)
    }

    // Generic access by resource key, for the HTTP layer.
    pub fn list_raw(&self, key: &ResourceKey, ns: Option<&str>) -> Vec<Value> {
        self.iter_raw(key, ns).map(|(_, v)| v.clone()).collect()
    }

    /// The objects of one resource (in one namespace), in key order
    /// (namespace, name) as etcd lists them, borrowed: a caller filters
    /// before it clones, and a namespace is a range, not a scan.
    pub fn iter_raw<'a>(
        &'a self,
        key: &ResourceKey,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
        let from = (ns.unwrap_or_default().to_string(), String::new());
        self.objects
            .get(key)
            .into_iter()
            .flat_map(move |m| m.range(from.clone()..))
            .take_while(move |((n, _), _)| ns.is_none_or(|want| want == n))
    }

    pub fn get_raw(&self, key: &ResourceKey, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn resource_version(&self) -> String {
        self.next_version.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;

    #[test]
    fn put_get_modify_remove() {
        let mut s = Store::default();
        s.put(Secret {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let got: Secret = s.get("ns", "a").unwrap();
        assert!(got.metadata.uid.is_some());
        let raw = s.get_raw(&ResourceKey::of::<Secret>(), "ns", "a").unwrap();
        assert_eq!(raw["kind"], "Secret");
        assert_eq!(raw["apiVersion"], "v1");
        assert!(s.modify::<Secret>("ns", "a", |x| x.type_ = Some("Opaque".into())));
        assert_eq!(
            s.get::<Secret>("ns", "a").unwrap().type_.as_deref(),
            Some("Opaque")
        );
        assert!(s.remove::<Secret>("ns", "a"));
        assert!(s.get::<Secret>("ns", "a").is_none());
        assert!(!s.modify::<Secret>("ns", "a", |_| {}));
    }
}
