//! Generic CRUD over the store: list (label and field selectors), get,
//! create, update, patch (merge, strategic, JSON, server-side apply), delete
//! and deletecollection, with kube-apiserver's status codes and messages.

use super::resources::{self, As, ResourceDef, Storage};
use super::{ApiError, ApiResult, Reply, Req, Target};
use crate::lab::store::{ObjectKey, ResourceKey, Store};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::time::Duration;

fn api_version(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.version.to_string()
    } else {
        format!("{}/{}", def.group, def.version)
    }
}

fn key_of(def: &ResourceDef) -> ResourceKey {
    ResourceKey {
        group: def.group.into(),
        version: def.version.into(),
        plural: def.plural.into(),
    }
}

pub(crate) fn handle(
    store: &mut Store,
    t: &Target,
    verb: &str,
    req: &Req,
    now: i64,
) -> ApiResult<Reply> {
    let def = t.def;
    let ns = if def.namespaced {
        t.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let name = t.name.clone().unwrap_or_default();
    // Server-side dry run: do the work on a scratch copy.
    let mut scratch;
    let store: &mut Store = if req.dry_run() && verb != "get" && verb != "list" && verb != "watch" {
        scratch = store.clone();
        &mut scratch
    } else {
        store
    };
    match verb {
        "list" | "watch" | "get" => read(store, t, verb, req, now),
        "create" => {
            let body = req.json_body()?;
            create(store, def, &ns, body).map(Reply::created)
        }
        "update" => update(store, def, &ns, &name, req.json_body()?).map(Reply::ok),
        "patch" => patch(store, def, &ns, &name, req),
        "delete" => delete(store, def, &ns, &name, req),
        "deletecollection" => {
            let items = select(store, def, t.namespace.as_deref(), req)?;
            for o in &items {
                let n = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let on = o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                remove(store, def, &on, &n);
            }
            Ok(Reply::ok(list_doc(def, items, &store.resource_version())))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// get, list and watch: they only read, so the server serves them under
/// its read lock (concurrent reads do not queue behind each other).
pub(crate) fn read(store: &Store, t: &Target, verb: &str, req: &Req, now: i64) -> ApiResult<Reply> {
    let def = t.def;
    match verb {
        "list" => list(store, def, t.namespace.as_deref(), req, now),
        "watch" => watch(store, def, t.namespace.as_deref(), t.name.as_deref(), req),
        "get" => {
            let ns = if def.namespaced {
                t.namespace.as_deref().unwrap_or_default()
            } else {
                ""
            };
            let name = t.name.as_deref().unwrap_or_default();
            let mut obj = store
                .get_raw(&key_of(def), ns, name)
                .ok_or_else(|| not_found(def, name))?;
            apply_defaults(def, &mut obj);
            Ok(match resources::negotiate(req, &[As::Table, As::Partial]) {
                As::Table => table_reply(def, &[obj], &store.resource_version(), req, now),
                As::Partial => Reply::ok(resources::partial(&obj)),
                _ => Reply::ok(obj),
            })
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn not_found(def: &ResourceDef, name: &str) -> ApiError {
    ApiError::not_found(def.plural, def.group, name)
}

/// Matching objects, without their apiVersion/kind (list items carry none).
fn select(store: &Store, def: &ResourceDef, ns: Option<&str>, req: &Req) -> ApiResult<Vec<Value>> {
    Ok(select_page(store, def, ns, req, None, None)?.0)
}

/// One page of matching objects in key order (namespace, name), as
/// kube-apiserver serves a list with `limit`: at most `limit` items after
/// the `after` key, and the key of the last item when more match.
/// Objects are matched before they are cloned (a list of 1,000 pods with a
/// selector clones only what it returns).
fn select_page(
    store: &Store,
    def: &ResourceDef,
    ns: Option<&str>,
    req: &Req,
    limit: Option<usize>,
    after: Option<&ObjectKey>,
) -> ApiResult<(Vec<Value>, Option<ObjectKey>)> {
    let labels = parse_label_selector(req.param("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = parse_field_selector(req.param("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    // A namespace's defaults add a label (kubernetes.io/metadata.name): its
    // labels are matched after the defaults, every other kind's before.
    let defaults_label = def.group.is_empty() && def.plural == "namespaces";
    let mut items = Vec::new();
    let mut last = None;
    for (key, raw) in store.iter_raw(&key_of(def), ns) {
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        if !defaults_label && !labels_match(&labels, &raw["metadata"]["labels"]) {
            continue;
        }
        let mut o = raw.clone();
        apply_defaults(def, &mut o);
        if (defaults_label && !labels_match(&labels, &o["metadata"]["labels"]))
            || !fields_match(&fields, &o)
        {
            continue;
        }
        if limit.is_some_and(|l| items.len() == l) {
            // One more matches: the page ends at the previous item.
            return Ok((items, last));
        }
        last = Some(key.clone());
        items.push(o);
    }
    Ok((items, None))
}

/// `limit` as kube-apiserver reads it: an integer; 0 or negative means all.
fn page_limit(req: &Req) -> ApiResult<Option<usize>> {
    match req.param("limit") {
        None | Some("") => Ok(None),
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Some(n as usize)),
            Ok(_) => Ok(None),
            Err(_) => Err(ApiError::bad_request(format!(
                "invalid limit {l:?}: not an integer"
            ))),
        },
    }
}

/// A continue token as kube-apiserver makes one (base64 of JSON with the
/// resource version and the key to start from); the lab's start is the
/// last key returned, and a list continues after it.
fn continue_token(rv: &str, last: &ObjectKey) -> String {
    use base64::Engine;
    let doc = json!({"v": "meta.k8s.io/v1", "rv": rv.parse::<i64>().unwrap_or(0), "start": format!("{}/{}\u{0}", last.0, last.1)});
    base64::engine::general_purpose::URL_SAFE.encode(doc.to_string())
}

fn parse_continue(req: &Req) -> ApiResult<Option<ObjectKey>> {
    use base64::Engine;
    let Some(token) = req.param("continue").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad("not base64"))?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad("not JSON"))?;
    if doc["v"] != "meta.k8s.io/v1" {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let start = doc["start"].as_str().ok_or_else(|| bad("no start key"))?;
    let start = start.strip_suffix('\u{0}').unwrap_or(start);
    let (ns, name) = start.split_once('/').ok_or_else(|| bad("no start key"))?;
    Ok(Some((ns.to_string(), name.to_string())))
}

fn list_doc(def: &ResourceDef, items: Vec<Value>, rv: &str) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": api_version(def),
        "metadata": {"resourceVersion": rv},
        "items": items,
    })
}

fn table_reply(def: &ResourceDef, items: &[Value], rv: &str, req: &Req, now: i64) -> Reply {
    Reply::Json {
        code: StatusCode::OK,
        body: resources::table(def, items, rv, req.param("includeObject"), now),
        content_type: Some(resources::TABLE_CT.into()),
    }
}

fn list(
    store: &Store,
    def: &ResourceDef,
    ns: Option<&str>,
    req: &Req,
    now: i64,
) -> ApiResult<Reply> {
    let limit = page_limit(req)?;
    let after = parse_continue(req)?;
    let (items, last) = select_page(store, def, ns, req, limit, after.as_ref())?;
    let rv = store.resource_version();
    let mut reply = match resources::negotiate(req, &[As::Table, As::PartialList]) {
        As::Table => table_reply(def, &items, &rv, req, now),
        As::PartialList => Reply::ok(json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "items": items.iter().map(resources::partial).collect::<Vec<_>>(),
        })),
        _ => Reply::ok(list_doc(def, items, &rv)),
    };
    // More than one page: the token the next request continues from.
    if let (Some(last), Reply::Json { body, .. }) = (last, &mut reply) {
        body["metadata"]["continue"] = json!(continue_token(&rv, &last));
    }
    Ok(reply)
}

/// The lab keeps no event history: a watch stays open and silent, except
/// that a streaming list (sendInitialEvents=true) gets its ADDED events and
/// the closing bookmark so kube-rs' streaming watcher can finish its list.
fn watch(
    store: &Store,
    def: &ResourceDef,
    ns: Option<&str>,
    name: Option<&str>,
    req: &Req,
) -> ApiResult<Reply> {
    let mut initial = Vec::new();
    if super::is_true(req.param("sendInitialEvents")) {
        for mut o in select(store, def, ns, req)? {
            if name.is_some_and(|n| o["metadata"]["name"] != n) {
                continue;
            }
            o["apiVersion"] = json!(api_version(def));
            o["kind"] = json!(def.kind);
            initial.push(json!({"type": "ADDED", "object": o}));
        }
        initial.push(json!({"type": "BOOKMARK", "object": {
            "kind": def.kind, "apiVersion": api_version(def),
            "metadata": {"resourceVersion": store.resource_version(),
                         "annotations": {"k8s.io/initial-events-end": "true"}},
        }}));
    }
    let timeout = match req.param("timeoutSeconds") {
        Some(s) => Some(Duration::from_secs(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {s:?}"))
        })?)),
        None => None,
    };
    Ok(Reply::Watch { timeout, initial })
}

/// apiVersion/kind in a body must be this resource's; missing ones are filled.
fn check_type(def: &ResourceDef, body: &mut Value) -> ApiResult<()> {
    let Some(m) = body.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body of a {} must be a JSON object",
            def.kind
        )));
    };
    let want_av = api_version(def);
    if let Some(av) = m
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if av != want_av {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    if let Some(k) = m
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if k != def.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    m.insert("apiVersion".into(), json!(want_av));
    m.insert("kind".into(), json!(def.kind));
    match m.get("metadata") {
        None | Some(Value::Null) => {
            m.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: metadata must be an object, not {other}",
                def.kind, def.version, def.kind
            )));
        }
    }
    Ok(())
}

fn meta_mut(body: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let bad = || {
        ApiError::bad_request("the object must be a JSON object with an object \"metadata\"".into())
    };
    let obj = body.as_object_mut().ok_or_else(bad)?;
    let m = obj.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().ok_or_else(bad)
}

/// What kube-apiserver's registry strategies do to an object on write,
/// before it is stored: a Secret's write-only `stringData` folded into
/// `data`; `metadata.generation` of apps objects bumped when the spec changes.
fn prepare_for_write(store: &Store, def: &ResourceDef, body: &mut Value, ns: &str, name: &str) {
    match (def.group, def.plural) {
        ("", "secrets") => {
            use base64::Engine;
            let Some(m) = body.as_object_mut() else {
                return;
            };
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                let data = m.entry("data").or_insert_with(|| json!({}));
                if !data.is_object() {
                    *data = json!({});
                }
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or_default().as_bytes().to_vec();
                    data[&k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
        }
        ("apps", "deployments" | "replicasets") => {
            apply_defaults(def, body);
            let old = store.get_raw(&key_of(def), ns, name);
            let generation = match &old {
                None => 1,
                Some(o) => {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    if o["spec"] != body["spec"] { g + 1 } else { g }
                }
            };
            if let Some(m) = body["metadata"].as_object_mut() {
                m.insert("generation".into(), json!(generation));
            }
        }
        _ => {}
    }
}

fn store_put(
    store: &mut Store,
    def: &ResourceDef,
    mut body: Value,
    ns: &str,
    name: &str,
) -> ApiResult<Value> {
    let Storage::Stored(put) = def.storage else {
        return Err(ApiError::method_not_allowed());
    };
    prepare_for_write(store, def, &mut body, ns, name);
    put(store, body).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            def.kind, def.version, def.kind
        ))
    })?;
    // Defaults go into the stored object (its shape is now known good), as
    // kube-apiserver stores them.
    let stored = store
        .objects
        .get_mut(&key_of(def))
        .and_then(|m| m.get_mut(&(ns.to_string(), name.to_string())))
        .ok_or_else(|| not_found(def, name))?;
    apply_defaults(def, stored);
    Ok(stored.clone())
}

pub(crate) fn random_suffix() -> String {
    // generateName: five characters from kube's alphabet (no vowels).
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    (0..5)
        .map(|_| {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ALPHA[((n >> 33) % ALPHA.len() as u64) as usize] as char
        })
        .collect()
}

pub(crate) fn create(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    mut body: Value,
) -> ApiResult<Value> {
    check_type(def, &mut body)?;
    let meta = meta_mut(&mut body)?;
    if def.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        if let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            name = format!("{prefix}{}", random_suffix());
            meta.insert("name".into(), json!(name));
        }
    }
    if name.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} {:?} is invalid: metadata.name: Required value: name or generateName is required",
                def.kind, ""
            ),
        ));
    }
    // The server owns these.
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "selfLink",
    ] {
        meta.remove(k);
    }
    if store.get_raw(&key_of(def), ns, &name).is_some() {
        return Err(ApiError::already_exists(def.plural, def.group, &name));
    }
    store_put(store, def, body, ns, &name)
}

/// Server-owned fields of `existing` carried over to its replacement.
fn keep_server_fields(
    body: &mut Value,
    existing: &Value,
    ns: &str,
    name: &str,
    namespaced: bool,
) -> ApiResult<()> {
    let old = &existing["metadata"];
    let meta = meta_mut(body)?;
    meta.insert("name".into(), json!(name));
    if namespaced {
        meta.insert("namespace".into(), json!(ns));
    }
    for k in ["uid", "creationTimestamp"] {
        match old.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    meta.remove("resourceVersion");
    Ok(())
}

fn check_rv(def: &ResourceDef, body: &Value, existing: &Value, name: &str) -> ApiResult<()> {
    let want = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if !want.is_empty() && existing["metadata"]["resourceVersion"].as_str() != Some(want) {
        return Err(ApiError::conflict(
            def.plural,
            def.group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

fn update(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    mut body: Value,
) -> ApiResult<Value> {
    check_type(def, &mut body)?;
    let body_name = body["metadata"]["name"].as_str().unwrap_or_default();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let existing = store
        .get_raw(&key_of(def), ns, name)
        .ok_or_else(|| not_found(def, name))?;
    check_rv(def, &body, &existing, name)?;
    keep_server_fields(&mut body, &existing, ns, name, def.namespaced)?;
    store_put(store, def, body, ns, name)
}

fn patch(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
) -> ApiResult<Reply> {
    let ct = req
        .content_type()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let patch_body = req.json_body()?;
    let existing = store.get_raw(&key_of(def), ns, name);
    if ct == "application/apply-patch+yaml" {
        // Server-side apply, approximated: create if absent, else a
        // strategic merge of the applied configuration (no field ownership).
        let Some(existing) = existing else {
            let mut body = patch_body;
            meta_mut(&mut body)?.insert("name".into(), json!(name));
            return create(store, def, ns, body).map(Reply::created);
        };
        let mut merged = existing.clone();
        strategic_merge(&mut merged, &patch_body);
        check_type(def, &mut merged)?;
        keep_server_fields(&mut merged, &existing, ns, name, def.namespaced)?;
        return store_put(store, def, merged, ns, name).map(Reply::ok);
    }
    let existing = existing.ok_or_else(|| not_found(def, name))?;
    let mut merged = existing.clone();
    match ct.as_str() {
        "application/merge-patch+json" => merge_patch(&mut merged, &patch_body),
        "application/strategic-merge-patch+json" => strategic_merge(&mut merged, &patch_body),
        "application/json-patch+json" => {
            json_patch(&mut merged, &patch_body).map_err(|e| ApiError::new(422, "Invalid", e))?
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    if patch_body.is_object() {
        check_rv(def, &patch_body, &existing, name)?;
    }
    check_type(def, &mut merged)?;
    keep_server_fields(&mut merged, &existing, ns, name, def.namespaced)?;
    store_put(store, def, merged, ns, name).map(Reply::ok)
}

/// The `scale` subresource (autoscaling/v1 Scale) of a Deployment:
/// `kubectl scale` reads and patches it; a write sets `spec.replicas`.
pub(crate) fn scale(store: &mut Store, t: &Target, verb: &str, req: &Req) -> ApiResult<Reply> {
    let def = t.def;
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let existing = store
        .get_raw(&key_of(def), &ns, &name)
        .ok_or_else(|| not_found(def, &name))?;
    let replicas = existing["spec"]["replicas"].as_i64().unwrap_or(1);
    let selector = existing["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let current = json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name, "namespace": ns,
            "uid": existing["metadata"]["uid"],
            "resourceVersion": existing["metadata"]["resourceVersion"],
            "creationTimestamp": existing["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": existing["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    });
    let mut wanted = current.clone();
    match verb {
        "get" => return Ok(Reply::ok(current)),
        "update" => wanted = req.json_body()?,
        "patch" => {
            let body = req.json_body()?;
            match req.content_type().split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" => merge_patch(&mut wanted, &body),
                "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
                    strategic_merge(&mut wanted, &body)
                }
                "application/json-patch+json" => {
                    json_patch(&mut wanted, &body).map_err(|e| ApiError::new(422, "Invalid", e))?
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            }
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let Some(n) = wanted["spec"]["replicas"].as_i64().filter(|n| *n >= 0) else {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            &name,
            "spec.replicas",
            &wanted["spec"]["replicas"].to_string(),
            "must be greater than or equal to 0",
        ));
    };
    if req.dry_run() {
        return Ok(Reply::ok(wanted));
    }
    let mut obj = existing.clone();
    obj["spec"]["replicas"] = json!(n);
    let stored = store_put(store, def, obj, &ns, &name)?;
    let mut out = current;
    out["spec"]["replicas"] = json!(n);
    out["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    Ok(Reply::ok(out))
}

fn remove(store: &mut Store, def: &ResourceDef, ns: &str, name: &str) -> Option<Value> {
    let removed = store
        .objects
        .get_mut(&key_of(def))
        .and_then(|m| m.remove(&(ns.to_string(), name.to_string())));
    // The lab has no namespace controller: a namespace takes its contents
    // with it at once instead of going through Terminating.
    if removed.is_some() && def.plural == "namespaces" && def.group.is_empty() {
        for objs in store.objects.values_mut() {
            objs.retain(|(n, _), _| n != name);
        }
    }
    removed
}

fn delete(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
) -> ApiResult<Reply> {
    let existing = store
        .get_raw(&key_of(def), ns, name)
        .ok_or_else(|| not_found(def, name))?;
    let uid = existing["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !req.body.is_empty() {
        let opts = req.json_body()?;
        let pre = &opts["preconditions"];
        if let Some(want) = pre["uid"].as_str().filter(|s| !s.is_empty()) {
            if want != uid {
                return Err(ApiError::conflict(
                    def.plural,
                    def.group,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                ));
            }
        }
        if let Some(want) = pre["resourceVersion"].as_str().filter(|s| !s.is_empty()) {
            let have = existing["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            if want != have {
                return Err(ApiError::conflict(
                    def.plural,
                    def.group,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}"
                    ),
                ));
            }
        }
    }
    remove(store, def, ns, name);
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !def.group.is_empty() {
        details.insert("group".into(), json!(def.group));
    }
    details.insert("kind".into(), json!(def.plural));
    details.insert("uid".into(), json!(uid));
    Ok(Reply::ok(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details,
    })))
}

// ---- selectors ----

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Split on commas outside parentheses ("a in (x,y),b").
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub(crate) fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut out = Vec::new();
    for term in split_top(s)
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let bad = |why: &str| format!("unable to parse requirement: {why} in label selector {s:?}");
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            if valid_key(k) {
                Ok(k.to_string())
            } else {
                Err(bad(&format!("invalid label key {k:?}")))
            }
        };
        let value = |v: &str| -> Result<String, String> {
            let v = v.trim();
            if valid_value(v) {
                Ok(v.to_string())
            } else {
                Err(bad(&format!("invalid label value {v:?}")))
            }
        };
        let req = if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(key(k)?)
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelReq::Ne(key(k)?, value(v)?)
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(key(k)?, value(v)?)
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(key(k)?, value(v)?)
        } else if let Some(open) = term.find('(') {
            let close = term
                .rfind(')')
                .filter(|c| *c > open)
                .ok_or_else(|| bad("missing ')'"))?;
            let vals = term[open + 1..close]
                .split(',')
                .map(value)
                .collect::<Result<Vec<_>, _>>()?;
            let head: Vec<&str> = term[..open].split_whitespace().collect();
            match head.as_slice() {
                [k, "in"] => LabelReq::In(key(k)?, vals),
                [k, "notin"] => LabelReq::NotIn(key(k)?, vals),
                _ => return Err(bad(&format!("unknown operator in {term:?}"))),
            }
        } else {
            LabelReq::Exists(key(term)?)
        };
        out.push(req);
    }
    Ok(out)
}

pub(crate) fn labels_match(reqs: &[LabelReq], labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
        LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
        LabelReq::Exists(k) => get(k).is_some(),
        LabelReq::NotExists(k) => get(k).is_none(),
        LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
    })
}

/// (dotted field path, wanted value, equal?)
type FieldReq = (String, String, bool);

/// Field selectors are evaluated on any dotted path of the object, which
/// covers metadata.name/namespace and each resource's extra fields
/// (involvedObject.name for describe's events, spec.nodeName, ...).
fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v, eq) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, true)
        } else {
            return Err(format!(
                "invalid selector: {s:?}; can't understand {term:?}"
            ));
        };
        out.push((k.trim().to_string(), v.trim().to_string(), eq));
    }
    Ok(out)
}

fn fields_match(reqs: &[FieldReq], obj: &Value) -> bool {
    reqs.iter().all(|(path, want, eq)| {
        let mut cur = obj;
        for p in path.split('.') {
            cur = &cur[p];
        }
        let have = match cur {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (have == *want) == *eq
    })
}

// ---- patches ----

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn named_objects(a: &[Value]) -> bool {
    !a.is_empty()
        && a.iter()
            .all(|e| e.get("name").is_some_and(Value::is_string))
}

/// Strategic merge patch, approximated: a JSON merge patch where lists of
/// objects that all carry `name` (containers, ports, volumes, env) merge by
/// name, `$patch: replace|delete` and `$deleteFromPrimitiveList/` are
/// honoured, and other `$` directives are dropped.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = strip_directives(patch);
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(cur)), Value::Array(new))
                if named_objects(cur) && named_objects(new) =>
            {
                for e in new {
                    let pos = cur.iter().position(|c| c["name"] == e["name"]);
                    let del = e.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, del) {
                        (Some(i), true) => {
                            cur.remove(i);
                        }
                        (Some(i), false) => strategic_merge(&mut cur[i], e),
                        (None, true) => {}
                        (None, false) => cur.push(strip_directives(e)),
                    }
                }
            }
            (Some(cur), _) => strategic_merge(cur, v),
            (None, _) => {
                t.insert(k.clone(), strip_directives(v));
            }
        }
    }
}

fn pointer_tokens(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| format!("JSON pointer {p:?} must start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn navigate<'a>(doc: &'a mut Value, toks: &[String], path: &str) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {path:?}"))?;
    }
    Ok(cur)
}

fn jp_add(doc: &mut Value, path: &str, val: Value) -> Result<(), String> {
    let toks = pointer_tokens(path)?;
    let Some((last, parent)) = toks.split_last() else {
        *doc = val;
        return Ok(());
    };
    match navigate(doc, parent, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), val);
        }
        Value::Array(a) if last == "-" => a.push(val),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i <= a.len() => a.insert(i, val),
            _ => return Err(format!("invalid array index in path {path:?}")),
        },
        _ => return Err(format!("doc is missing path: {path:?}")),
    }
    Ok(())
}

fn jp_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let toks = pointer_tokens(path)?;
    let (last, parent) = toks
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_string())?;
    let missing = || format!("doc is missing path: {path:?}");
    match navigate(doc, parent, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let path = op["path"]
            .as_str()
            .ok_or("a JSON patch operation needs a \"path\"")?;
        let from = || {
            op["from"]
                .as_str()
                .ok_or_else(|| format!("operation {op} needs \"from\""))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {op} needs \"value\""))
        };
        match op["op"].as_str() {
            Some("add") => jp_add(doc, path, value()?)?,
            Some("remove") => {
                jp_remove(doc, path)?;
            }
            Some("replace") => {
                jp_remove(doc, path)?;
                jp_add(doc, path, value()?)?;
            }
            Some("test") => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path:?} failed"));
                }
            }
            Some("move") => {
                let v = jp_remove(doc, from()?)?;
                jp_add(doc, path, v)?;
            }
            Some("copy") => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| format!("doc is missing path: {op}"))?;
                jp_add(doc, path, v)?;
            }
            other => return Err(format!("unexpected JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

// ---- defaults ----

/// `v[key]` as an object, created when absent; None when it is something else.
fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let c = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if c.is_null() {
        *c = json!({});
    }
    c.as_object_mut()
}

fn default_field(m: &mut Map<String, Value>, key: &str, val: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), val);
    }
}

fn each(v: Option<&mut Value>) -> impl Iterator<Item = &mut Map<String, Value>> {
    v.and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The defaults kube-apiserver fills in on write, applied to what the lab
/// serves, so objects look alike whether a client created them or a lab
/// builder put them straight into the store (kubectl describe dereferences
/// some of them, e.g. an EndpointSlice port's protocol).
pub(crate) fn apply_defaults(def: &ResourceDef, o: &mut Value) {
    match (def.group, def.plural) {
        ("", "secrets") => {
            if let Some(m) = o.as_object_mut() {
                default_field(m, "type", json!("Opaque"));
            }
        }
        ("", "namespaces") => {
            let name = o["metadata"]["name"].clone();
            if let Some(m) = child(o, "spec") {
                default_field(m, "finalizers", json!(["kubernetes"]));
            }
            if let Some(m) = child(o, "status") {
                default_field(m, "phase", json!("Active"));
            }
            if let Some(labels) = child(o, "metadata").and_then(|m| {
                default_field(m, "labels", json!({}));
                m.get_mut("labels").and_then(Value::as_object_mut)
            }) {
                labels.insert("kubernetes.io/metadata.name".into(), name);
            }
        }
        ("", "services") => {
            if let Some(spec) = child(o, "spec") {
                let external = spec.get("type").and_then(Value::as_str) == Some("ExternalName");
                default_field(spec, "type", json!("ClusterIP"));
                default_field(spec, "sessionAffinity", json!("None"));
                for p in each(spec.get_mut("ports")) {
                    default_field(p, "protocol", json!("TCP"));
                    if !external {
                        let port = p.get("port").cloned().unwrap_or(Value::Null);
                        default_field(p, "targetPort", port);
                    }
                }
            }
        }
        ("", "endpoints") => {
            for s in each(o.get_mut("subsets")) {
                for p in each(s.get_mut("ports")) {
                    default_field(p, "protocol", json!("TCP"));
                }
            }
        }
        ("discovery.k8s.io", "endpointslices") => {
            for p in each(o.get_mut("ports")) {
                default_field(p, "protocol", json!("TCP"));
            }
        }
        ("apps", "deployments") => {
            if let Some(spec) = child(o, "spec") {
                default_field(spec, "replicas", json!(1));
                default_field(spec, "revisionHistoryLimit", json!(10));
                default_field(spec, "progressDeadlineSeconds", json!(600));
                default_field(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                );
            }
        }
        ("", "pods") => {
            if let Some(status) = child(o, "status") {
                default_field(status, "phase", json!("Pending"));
            }
            if let Some(spec) = child(o, "spec") {
                for c in each(spec.get_mut("containers")) {
                    for p in each(c.get_mut("ports")) {
                        default_field(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
        _ => {}
    }
}
