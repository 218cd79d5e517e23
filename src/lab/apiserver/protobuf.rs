//! Just enough Kubernetes protobuf to read the request bodies kubectl's typed
//! clients send as `application/vnd.kubernetes.protobuf` (auth can-i, auth
//! whoami, create token|secret|configmap|namespace|serviceaccount|role|
//! clusterrole|rolebinding|clusterrolebinding). kubectl 1.32 does not retry
//! in JSON after a 415, so the lab decodes these kinds into JSON; everything
//! else gets the 415.
//! Field numbers are from k8s.io/api's generated.proto files.

use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum F {
    Str,
    Strs,
    I64,
    Bool,
    /// map<string, string>
    MapStr,
    /// map<string, bytes>, base64 in JSON
    MapBytes,
    Msg(&'static [Field]),
    /// repeated message
    Msgs(&'static [Field]),
}

type Field = (u32, &'static str, F);

const META: &[Field] = &[
    (1, "name", F::Str),
    (2, "generateName", F::Str),
    (3, "namespace", F::Str),
    (11, "labels", F::MapStr),
    (12, "annotations", F::MapStr),
];
const SECRET: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (2, "data", F::MapBytes),
    (3, "type", F::Str),
    (4, "stringData", F::MapStr),
    (5, "immutable", F::Bool),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (2, "data", F::MapStr),
    (3, "binaryData", F::MapBytes),
    (4, "immutable", F::Bool),
];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (4, "automountServiceAccountToken", F::Bool),
];
const NAMESPACE: &[Field] = &[(1, "metadata", F::Msg(META))];
const RA: &[Field] = &[
    (1, "namespace", F::Str),
    (2, "verb", F::Str),
    (3, "group", F::Str),
    (4, "version", F::Str),
    (5, "resource", F::Str),
    (6, "subresource", F::Str),
    (7, "name", F::Str),
];
const NRA: &[Field] = &[(1, "path", F::Str), (2, "verb", F::Str)];
const SSAR: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "resourceAttributes", F::Msg(RA)),
            (2, "nonResourceAttributes", F::Msg(NRA)),
        ]),
    ),
];
const SAR: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "resourceAttributes", F::Msg(RA)),
            (2, "nonResourceAttributes", F::Msg(NRA)),
            (3, "user", F::Str),
            (4, "groups", F::Strs),
            (6, "uid", F::Str),
        ]),
    ),
];
const SSRR: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (2, "spec", F::Msg(&[(1, "namespace", F::Str)])),
];
const SSR: &[Field] = &[(1, "metadata", F::Msg(META))];
const BOUND: &[Field] = &[
    (1, "kind", F::Str),
    (2, "apiVersion", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
];
const TOKEN_REQUEST: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "audiences", F::Strs),
            (3, "boundObjectRef", F::Msg(BOUND)),
            (4, "expirationSeconds", F::I64),
        ]),
    ),
];
const TOKEN_REVIEW: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (
        2,
        "spec",
        F::Msg(&[(1, "token", F::Str), (2, "audiences", F::Strs)]),
    ),
];
// k8s.io/api/rbac/v1/generated.proto
const POLICY_RULE: &[Field] = &[
    (1, "verbs", F::Strs),
    (2, "apiGroups", F::Strs),
    (3, "resources", F::Strs),
    (4, "resourceNames", F::Strs),
    (5, "nonResourceURLs", F::Strs),
];
const REQUIREMENT: &[Field] = &[
    (1, "key", F::Str),
    (2, "operator", F::Str),
    (3, "values", F::Strs),
];
const LABEL_SELECTOR: &[Field] = &[
    (1, "matchLabels", F::MapStr),
    (2, "matchExpressions", F::Msgs(REQUIREMENT)),
];
const ROLE: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (2, "rules", F::Msgs(POLICY_RULE)),
];
const CLUSTER_ROLE: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (2, "rules", F::Msgs(POLICY_RULE)),
    (
        3,
        "aggregationRule",
        F::Msg(&[(1, "clusterRoleSelectors", F::Msgs(LABEL_SELECTOR))]),
    ),
];
const SUBJECT: &[Field] = &[
    (1, "kind", F::Str),
    (2, "apiGroup", F::Str),
    (3, "name", F::Str),
    (4, "namespace", F::Str),
];
const ROLE_REF: &[Field] = &[
    (1, "apiGroup", F::Str),
    (2, "kind", F::Str),
    (3, "name", F::Str),
];
/// RoleBinding and ClusterRoleBinding share their fields.
const BINDING: &[Field] = &[
    (1, "metadata", F::Msg(META)),
    (2, "subjects", F::Msgs(SUBJECT)),
    (3, "roleRef", F::Msg(ROLE_REF)),
];
const TYPE_META: &[Field] = &[(1, "apiVersion", F::Str), (2, "kind", F::Str)];

fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SSAR,
        ("authorization.k8s.io/v1", "SubjectAccessReview" | "LocalSubjectAccessReview") => SAR,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => SSRR,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SSR,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "TokenReview") => TOKEN_REVIEW,
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Namespace") => NAMESPACE,
        ("rbac.authorization.k8s.io/v1", "Role") => ROLE,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => CLUSTER_ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        _ => return None,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or("truncated protobuf varint")?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("protobuf varint too long".into())
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "protobuf length out of range")?;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated protobuf field")?;
        let out = &self.b[self.i..end];
        self.i = end;
        Ok(out)
    }
    fn skip(&mut self, wire: u8) -> Result<(), String> {
        let n = match wire {
            0 => return self.varint().map(|_| ()),
            1 => 8,
            2 => return self.bytes().map(|_| ()),
            5 => 4,
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        self.i = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated protobuf field")?;
        Ok(())
    }
}

fn message(b: &[u8], schema: &[Field]) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    while r.i < b.len() {
        let key = r.varint()?;
        let (num, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| "protobuf string is not UTF-8".to_string())
        };
        match schema.iter().find(|f| f.0 == num) {
            Some((_, name, F::Str)) if wire == 2 => {
                out.insert(name.to_string(), json!(text(r.bytes()?)?));
            }
            Some((_, name, F::Strs)) if wire == 2 => {
                let s = text(r.bytes()?)?;
                let entry = out.entry(name.to_string()).or_insert_with(|| json!([]));
                if let Value::Array(a) = entry {
                    a.push(json!(s));
                }
            }
            Some((_, name, F::I64)) if wire == 0 => {
                out.insert(name.to_string(), json!(r.varint()? as i64));
            }
            Some((_, name, F::Bool)) if wire == 0 => {
                out.insert(name.to_string(), json!(r.varint()? != 0));
            }
            Some((_, name, kind @ (F::MapStr | F::MapBytes))) if wire == 2 => {
                // A map entry is a message {key = 1, value = 2}.
                let mut e = Reader {
                    b: r.bytes()?,
                    i: 0,
                };
                let (mut k, mut v) = (String::new(), Vec::new());
                while e.i < e.b.len() {
                    let key = e.varint()?;
                    match (key >> 3, (key & 7) as u8) {
                        (1, 2) => k = text(e.bytes()?)?,
                        (2, 2) => v = e.bytes()?.to_vec(),
                        (_, w) => e.skip(w)?,
                    }
                }
                let value = match kind {
                    F::MapBytes => {
                        use base64::Engine;
                        json!(base64::engine::general_purpose::STANDARD.encode(&v))
                    }
                    _ => json!(text(&v)?),
                };
                let entry = out.entry(name.to_string()).or_insert_with(|| json!({}));
                if let Value::Object(m) = entry {
                    m.insert(k, value);
                }
            }
            Some((_, name, F::Msg(s))) if wire == 2 => {
                out.insert(name.to_string(), message(r.bytes()?, s)?);
            }
            Some((_, name, F::Msgs(s))) if wire == 2 => {
                let m = message(r.bytes()?, s)?;
                let entry = out.entry(name.to_string()).or_insert_with(|| json!([]));
                if let Value::Array(a) = entry {
                    a.push(m);
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(Value::Object(out))
}

/// Decode a `k8s\0` + runtime.Unknown envelope of a supported kind to JSON.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("not a Kubernetes protobuf envelope")?;
    let mut r = Reader { b: rest, i: 0 };
    let (mut type_meta, mut raw) = (Value::Null, &[][..]);
    while r.i < rest.len() {
        let key = r.varint()?;
        match (key >> 3, (key & 7) as u8) {
            (1, 2) => type_meta = message(r.bytes()?, TYPE_META)?,
            (2, 2) => raw = r.bytes()?,
            (_, wire) => r.skip(wire)?,
        }
    }
    let api_version = type_meta["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = type_meta["kind"].as_str().unwrap_or_default().to_string();
    let schema = schema(&api_version, &kind).ok_or_else(|| {
        format!("the lab API server cannot decode {kind} ({api_version}) from protobuf; send JSON")
    })?;
    let mut v = message(raw, schema)?;
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_self_subject_access_review() {
        let ra = [
            field(2, b"create"),
            field(3, b"authentication.k8s.io"),
            field(5, b"tokenreviews"),
        ]
        .concat();
        let spec = field(1, &ra);
        let raw = field(2, &spec);
        let tm = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [
            b"k8s\0".to_vec(),
            field(1, &tm),
            field(2, &raw),
            field(4, b"application/vnd.kubernetes.protobuf"),
        ]
        .concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(v["spec"]["resourceAttributes"]["resource"], "tokenreviews");
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "create");
        assert!(decode(b"k8s\0\x0a\xff").is_err());
        assert!(decode(b"{}").is_err());
        let other = [
            b"k8s\0".to_vec(),
            field(1, &[field(1, b"v1"), field(2, b"Pod")].concat()),
        ]
        .concat();
        assert!(decode(&other).unwrap_err().contains("cannot decode Pod"));
        // A Secret with a label and binary data.
        let meta = [
            field(1, b"s1"),
            field(11, &[field(1, b"app"), field(2, b"x")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, &[0xff, 0x00])].concat()),
            vec![0x28, 1],
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let v = decode(&[b"k8s\0".to_vec(), field(1, &tm), field(2, &raw)].concat()).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "s1", "labels": {"app": "x"}}, "data": {"k": "/wA="}, "immutable": true, "apiVersion": "v1", "kind": "Secret"})
        );
    }

    #[test]
    fn decodes_rbac_objects_with_repeated_messages() {
        let subject = |name: &[u8]| {
            [
                field(1, b"ServiceAccount"),
                field(3, name),
                field(4, b"istio-system"),
            ]
            .concat()
        };
        let raw = [
            field(1, &field(1, b"b1")),
            field(2, &subject(b"a")),
            field(2, &subject(b"b")),
            field(
                3,
                &[
                    field(1, b"rbac.authorization.k8s.io"),
                    field(2, b"ClusterRole"),
                    field(3, b"view"),
                ]
                .concat(),
            ),
        ]
        .concat();
        let tm = [
            field(1, b"rbac.authorization.k8s.io/v1"),
            field(2, b"ClusterRoleBinding"),
        ]
        .concat();
        let v = decode(&[b"k8s\0".to_vec(), field(1, &tm), field(2, &raw)].concat()).unwrap();
        assert_eq!(v["subjects"][1]["name"], "b");
        assert_eq!(v["subjects"][0]["namespace"], "istio-system");
        assert_eq!(v["roleRef"]["name"], "view");
        let rule = [
            field(1, b"create"),
            field(2, b"authentication.k8s.io"),
            field(3, b"tokenreviews"),
        ]
        .concat();
        let raw = [field(1, &field(1, b"r1")), field(2, &rule), field(2, &rule)].concat();
        let tm = [
            field(1, b"rbac.authorization.k8s.io/v1"),
            field(2, b"ClusterRole"),
        ]
        .concat();
        let v = decode(&[b"k8s\0".to_vec(), field(1, &tm), field(2, &raw)].concat()).unwrap();
        let one = json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"]});
        assert_eq!(v["rules"], json!([one, one]));
    }
}
