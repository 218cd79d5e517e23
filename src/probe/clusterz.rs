//! istiod's own view of the remote clusters: `GET /debug/clusterz` on its
//! monitoring port (15014 in its pod, plain HTTP), which lists the config
//! cluster and every cluster its remote-secret controller has loaded:
//! `[{"id":"primary","secretName":"","syncStatus":"synced"},
//!   {"id":"remote","secretName":"istio-system/istio-remote-secret-remote","syncStatus":"synced"}]`
//! (`syncStatus` is one of synced, syncing, timeout, closed).
//!
//! Two ways to reach it: an address given with `--istiod-debug-addr`, asked
//! directly; or, by default, every Running `app=istiod` pod of the primary,
//! through the primary API server's pod proxy (as `kubectl get --raw
//! /api/v1/namespaces/<ns>/pods/<pod>:15014/proxy/debug/clusterz` does).
//! Failures are returned as short reasons, never as errors of the step.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;
use std::time::Duration;

/// istiod's monitoring port when its pod does not name one.
pub const MONITORING_PORT: i32 = 15014;
/// How many istiod pods are asked at most (each replica has its own view).
const MAX_PODS: usize = 5;
/// A clusterz document is a few hundred bytes; anything this large is not one.
const MAX_BODY: usize = 4 << 20;

/// One cluster as istiod's `/debug/clusterz` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterzEntry {
    pub id: String,
    /// `namespace/name` of the remote secret; empty for the config cluster.
    pub secret_name: String,
    /// synced, syncing, timeout or closed; None when istiod did not say.
    pub sync_status: Option<String>,
}

impl ClusterzEntry {
    pub fn is_synced(&self) -> bool {
        self.sync_status.as_deref() == Some("synced")
    }
    /// The status as quoted in text: the value, or that there is none.
    pub fn status_text(&self) -> &str {
        self.sync_status.as_deref().unwrap_or("no syncStatus")
    }
}

/// What one istiod answered, and which one it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `127.0.0.1:15014` (direct) or `pod <name>` (through the pod proxy).
    pub from: String,
    pub result: Result<Vec<ClusterzEntry>, String>,
}

/// istiod's view: one answer per istiod asked, or why none could be asked.
pub type View = Result<Vec<Answer>, String>;

/// Parse a clusterz document. `null` (Go's nil slice) is an empty list.
pub fn parse(body: &str) -> Result<Vec<ClusterzEntry>, String> {
    let text = body.trim();
    if text.is_empty() {
        return Err("the answer is empty, not a clusterz list".into());
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("the answer is not JSON ({e}); it begins {}", snippet(text)))?;
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "the answer is JSON but not a list of clusters; it begins {}",
                snippet(&other.to_string())
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(format!(
                "entry {i} of the clusterz list is not an object: {}",
                snippet(&item.to_string())
            ));
        };
        let id = match obj.get("id") {
            // istiod's text is peer text: cleaned before anything quotes it.
            Some(Value::String(s)) if !s.is_empty() => crate::inspect::sanitize::quote(s),
            _ => {
                return Err(format!(
                    "entry {i} of the clusterz list has no \"id\": {}",
                    snippet(&item.to_string())
                ));
            }
        };
        let text_field = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .map(crate::inspect::sanitize::quote)
        };
        out.push(ClusterzEntry {
            id,
            secret_name: text_field("secretName").unwrap_or_default(),
            sync_status: text_field("syncStatus").filter(|s| !s.is_empty()),
        });
    }
    Ok(out)
}

/// The start of a body for an error message: one line, at most 60
/// characters, and nothing that could be a token.
fn snippet(s: &str) -> String {
    let one_line = crate::inspect::sanitize::quote(s);
    if one_line.contains("eyJ") {
        return "<a body that holds something like a token; not shown>".into();
    }
    let (mut out, cut) = crate::inspect::head(&one_line, 60);
    if cut {
        out.push('…');
    }
    format!("{out:?}")
}

/// `primary synced, remote synced (istio-system/istio-remote-secret-remote)`.
pub fn summary(entries: &[ClusterzEntry]) -> String {
    if entries.is_empty() {
        return "no clusters listed".into();
    }
    entries
        .iter()
        .map(|e| {
            let mut s = format!("{} {}", e.id, e.status_text());
            if !e.secret_name.is_empty() {
                s.push_str(&format!(" ({})", e.secret_name));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The evidence value: the summary, `unknown: <reason>`, or one part per
/// istiod when several were asked.
pub fn evidence(view: &View) -> String {
    let one = |r: &Result<Vec<ClusterzEntry>, String>| match r {
        Ok(e) => summary(e),
        Err(why) => format!("unknown: {why}"),
    };
    match view {
        Err(why) => format!("unknown: {why}"),
        Ok(answers) if answers.len() == 1 => one(&answers[0].result),
        Ok(answers) => answers
            .iter()
            .map(|a| format!("{}: {}", a.from, one(&a.result)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// What istiod's view says about one cluster ID.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// No istiod answered (or not all did, and those that did list the
    /// cluster synced): why.
    Unknown(String),
    /// An istiod does not list the cluster; `listed` is what it lists.
    Missing {
        from: String,
        listed: Vec<ClusterzEntry>,
    },
    /// An istiod lists it, not synced.
    NotSynced { from: String, entry: ClusterzEntry },
    /// Every istiod asked lists it synced.
    Synced { entry: ClusterzEntry },
}

/// Judge the view for `cluster_id`. One istiod that lacks the cluster or has
/// not synced it is enough: the gateway's CSR may have gone to that one.
pub fn judge(view: &View, cluster_id: &str) -> Judgement {
    let answers = match view {
        Err(why) => return Judgement::Unknown(why.clone()),
        Ok(a) => a,
    };
    let mut failed = Vec::new();
    let mut synced = None;
    let mut not_synced = None;
    for a in answers {
        match &a.result {
            Err(why) => failed.push(if answers.len() == 1 {
                why.clone()
            } else {
                format!("{}: {why}", a.from)
            }),
            Ok(entries) => match entries.iter().find(|e| e.id == cluster_id) {
                None => {
                    return Judgement::Missing {
                        from: a.from.clone(),
                        listed: entries.clone(),
                    };
                }
                Some(e) if !e.is_synced() => {
                    not_synced.get_or_insert_with(|| Judgement::NotSynced {
                        from: a.from.clone(),
                        entry: e.clone(),
                    });
                }
                Some(e) => {
                    synced.get_or_insert_with(|| e.clone());
                }
            },
        }
    }
    if let Some(n) = not_synced {
        return n;
    }
    match (synced, failed.is_empty()) {
        (Some(entry), true) => Judgement::Synced { entry },
        (Some(_), false) => Judgement::Unknown(format!(
            "{} (the other istiod(s) list {cluster_id:?} synced)",
            failed.join("; ")
        )),
        (None, _) if failed.is_empty() => Judgement::Unknown("no istiod answered".into()),
        (None, _) => Judgement::Unknown(failed.join("; ")),
    }
}

// ------------------------------------------------------------------ fetching

/// Ask istiod: at `debug_addr` when given, else through the primary API
/// server's proxy to each Running istiod pod in `namespace`. Bounded by `timeout`.
pub async fn fetch(
    debug_addr: Option<&str>,
    primary: &kube::Client,
    namespace: &str,
    timeout: Duration,
) -> View {
    let deadline = tokio::time::Instant::now() + timeout;
    let within = humantime::format_duration(timeout);
    match debug_addr {
        Some(addr) => {
            let result = tokio::time::timeout_at(deadline, get_direct(addr))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer from {} within {within}",
                        host_port(addr)
                    ))
                });
            Ok(vec![Answer {
                from: addr.to_string(),
                result,
            }])
        }
        None => {
            match tokio::time::timeout_at(deadline, via_pod_proxy(primary, namespace, deadline))
                .await
            {
                Ok(v) => v,
                Err(_) => Err(format!(
                    "no list of istiod pods from the primary API server within {within}"
                )),
            }
        }
    }
}

/// Ask istiod over xDS (`istio.io/debug`, resource `clusterz`) on its
/// secure port, as `istioctl x internal-debug clusterz` does: one answer,
/// from the address dialled.
pub async fn fetch_xds(req: &crate::probe::xds_debug::DebugRequest<'_>) -> View {
    fetch_xds_with_error(req).await.0
}

/// [`fetch_xds`], with istiod's error when it refused (the caller may
/// read something into an `Unauthenticated`).
pub async fn fetch_xds_with_error(
    req: &crate::probe::xds_debug::DebugRequest<'_>,
) -> (View, Option<crate::probe::xds_debug::XdsError>) {
    let (result, err) = match crate::probe::xds_debug::get(req).await {
        Ok(body) => (parse(&String::from_utf8_lossy(&body)), None),
        Err(e) => (
            Err(crate::probe::xds_debug::describe(&e, req.namespace)),
            Some(e),
        ),
    };
    let view = Ok(vec![Answer {
        from: format!("xDS {}", req.addr),
        result,
    }]);
    (view, err)
}

/// Did every istiod asked answer with a list?
pub fn answered(view: &View) -> bool {
    view.as_ref()
        .is_ok_and(|a| !a.is_empty() && a.iter().all(|a| a.result.is_ok()))
}

/// Where the view comes from, for the evidence.
pub fn source(debug_addr: Option<&str>, namespace: &str) -> String {
    match debug_addr {
        Some(a) => format!(
            "http://{}/debug/clusterz (--istiod-debug-addr)",
            host_port(a)
        ),
        None => format!(
            "the primary API server's proxy to the app=istiod pods in {namespace} (/api/v1/namespaces/{namespace}/pods/<pod>:<port>/proxy/debug/clusterz)"
        ),
    }
}

/// `HOST:PORT`, tolerating an `http://` prefix and a trailing slash.
fn host_port(addr: &str) -> &str {
    let a = addr.trim();
    let a = a.strip_prefix("http://").unwrap_or(a);
    a.trim_end_matches('/')
}

/// Plain HTTP GET `http://HOST:PORT/debug/clusterz`.
async fn get_direct(addr: &str) -> Result<Vec<ClusterzEntry>, String> {
    let hp = host_port(addr);
    let has_port = hp
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !has_port {
        return Err(format!("--istiod-debug-addr {addr:?} is not HOST:PORT"));
    }
    let req = http::Request::get("/debug/clusterz")
        .header(http::header::HOST, hp)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| format!("--istiod-debug-addr {addr:?}: {e}"))?;
    let resp = crate::probe::http1::request(hp, req, MAX_BODY)
        .await
        .map_err(|e| format!("cannot ask istiod at {hp}: {e}"))?;
    let status = resp.status();
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    if status == http::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "istiod at {hp} answered 401 Unauthorized: it serves /debug/ only to callers on its own loopback (or with a token it accepts); run `kubectl -n <ns> port-forward deploy/istiod 15014` and pass --istiod-debug-addr 127.0.0.1:15014"
        ));
    }
    if !status.is_success() {
        return Err(format!(
            "istiod at {hp} answered {status} to /debug/clusterz{}",
            body_words(&body)
        ));
    }
    parse(&body)
}

fn body_words(body: &str) -> String {
    if body.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", snippet(body))
    }
}

/// `GET /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/debug/clusterz` for
/// each Running `app=istiod` pod (at most a few), at the same time.
async fn via_pod_proxy(primary: &kube::Client, ns: &str, deadline: tokio::time::Instant) -> View {
    let pods: Api<Pod> = Api::namespaced(primary.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels("app=istiod"))
        .await
        .map_err(|e| {
            format!(
                "cannot list istiod pods (app=istiod) in {ns} of the primary: {}",
                crate::probe::kube_error::describe(&e)
            )
        })?;
    let total = list.items.len();
    let mut running: Vec<(String, i32)> = list
        .items
        .iter()
        .filter(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|p| Some((p.metadata.name.clone()?, monitoring_port(p))))
        .collect();
    running.sort();
    running.truncate(MAX_PODS);
    if running.is_empty() {
        return Err(if total == 0 {
            format!(
                "no pod labelled app=istiod in {ns} of the primary (istiod runs elsewhere? then pass --istiod-debug-addr HOST:PORT)"
            )
        } else {
            format!("none of the {total} app=istiod pod(s) in {ns} of the primary is Running")
        });
    }
    let asks = running.iter().map(|(name, port)| async move {
        let result = tokio::time::timeout_at(deadline, get_via_proxy(primary, ns, name, *port))
            .await
            .unwrap_or_else(|_| {
                // kube's client retries a 503 (what the API server answers
                // when it cannot dial the pod) until the deadline.
                Err(format!(
                    "no answer through the primary API server's pod proxy to {name}:{port} in time (it answers 503, which is retried, when it cannot reach the pod's port)"
                ))
            });
        Answer {
            from: format!("pod {name}"),
            result,
        }
    });
    Ok(futures::future::join_all(asks).await)
}

/// The container port named `http-monitoring` (as istioctl looks for it), else 15014.
fn monitoring_port(p: &Pod) -> i32 {
    p.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|port| port.name.as_deref() == Some("http-monitoring"))
        .map(|port| port.container_port)
        .unwrap_or(MONITORING_PORT)
}

async fn get_via_proxy(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    port: i32,
) -> Result<Vec<ClusterzEntry>, String> {
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/debug/clusterz");
    let req = http::Request::get(&path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| format!("{path}: {e}"))?;
    // send(), not request_text(): a non-2xx answer must be told apart by who
    // gave it (the API server's Status JSON, or istiod's own reply).
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .map_err(|e| {
            format!(
                "GET {path} failed: {}",
                crate::probe::kube_error::describe(&e)
            )
        })?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| format!("GET {path}: reading the answer: {e}"))?;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        return parse(&body);
    }
    proxy_error(status, &body, ns, pod, port)
}

/// A non-2xx answer through the pod proxy, in words: the API server's own
/// Status (403 on pods/proxy, 404 pod, 503 dial), or istiod's reply.
fn proxy_error(
    status: http::StatusCode,
    body: &str,
    ns: &str,
    pod: &str,
    port: i32,
) -> Result<Vec<ClusterzEntry>, String> {
    let api_status = serde_json::from_str::<Value>(body)
        .ok()
        .filter(|v| v["kind"] == "Status");
    if let Some(s) = api_status {
        let reason = s["reason"].as_str().unwrap_or_default();
        let message = s["message"].as_str().unwrap_or_default();
        let code = s["code"].as_u64().unwrap_or(status.as_u16() as u64);
        let why = format!("{code} {reason}: {message}");
        return Err(match code {
            403 => format!(
                "the primary API server refuses the pod proxy ({why}); the --primary context needs get on pods/proxy in {ns}, or pass --istiod-debug-addr"
            ),
            503 => format!(
                "the primary API server cannot reach istiod's pod {pod} on port {port} ({why})"
            ),
            _ => format!("the primary API server's proxy to {pod}:{port} answered {why}"),
        });
    }
    if status == http::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "istiod ({pod}) answered 401 Unauthorized through the pod proxy: istiod serves /debug/ only to callers on its own loopback (or with a token it accepts), and the API server's proxy forwards no credentials; run `kubectl -n {ns} port-forward pod/{pod} {port}` and pass --istiod-debug-addr 127.0.0.1:{port}"
        ));
    }
    Err(format!(
        "istiod ({pod}:{port}) answered {status} to /debug/clusterz{}",
        body_words(body)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, secret: &str, status: Option<&str>) -> ClusterzEntry {
        ClusterzEntry {
            id: id.into(),
            secret_name: secret.into(),
            sync_status: status.map(str::to_string),
        }
    }

    const REAL: &str = r#"[{"id":"primary","secretName":"","syncStatus":"synced"},{"id":"remote","secretName":"istio-system/istio-remote-secret-remote","syncStatus":"synced"}]"#;

    #[test]
    fn parses_what_a_real_istiod_serves() {
        let got = parse(REAL).unwrap();
        assert_eq!(
            got,
            vec![
                e("primary", "", Some("synced")),
                e(
                    "remote",
                    "istio-system/istio-remote-secret-remote",
                    Some("synced")
                )
            ]
        );
        assert_eq!(
            summary(&got),
            "primary synced, remote synced (istio-system/istio-remote-secret-remote)"
        );
    }

    #[test]
    fn parses_pretty_printed_json() {
        // What istiod serves with ?pretty: indented, one field per line.
        let pretty = "[\n  {\n    \"id\": \"primary\",\n    \"secretName\": \"\",\n    \"syncStatus\": \"synced\"\n  },\n  {\n    \"id\": \"remote\",\n    \"secretName\": \"istio-system/istio-remote-secret-remote\",\n    \"syncStatus\": \"timeout\"\n  }\n]\n";
        let got = parse(pretty).unwrap();
        assert_eq!(got, {
            let mut v = parse(REAL).unwrap();
            v[1].sync_status = Some("timeout".into());
            v
        });
        assert_eq!(
            summary(&got),
            "primary synced, remote timeout (istio-system/istio-remote-secret-remote)"
        );
    }

    #[test]
    fn empty_list_and_null_are_no_clusters() {
        assert_eq!(parse("[]").unwrap(), vec![]);
        assert_eq!(parse(" null\n").unwrap(), vec![]);
        assert_eq!(summary(&[]), "no clusters listed");
    }

    #[test]
    fn garbage_is_an_error_quoting_the_answer() {
        let err = parse("404 page not found\n").unwrap_err();
        assert!(err.starts_with("the answer is not JSON ("), "{err}");
        assert!(err.ends_with("it begins \"404 page not found\""), "{err}");
        assert_eq!(
            parse("  \n").unwrap_err(),
            "the answer is empty, not a clusterz list"
        );
        assert_eq!(
            parse(r#"{"id":"primary"}"#).unwrap_err(),
            "the answer is JSON but not a list of clusters; it begins \"{\\\"id\\\":\\\"primary\\\"}\""
        );
        assert_eq!(
            parse(r#"["primary"]"#).unwrap_err(),
            "entry 0 of the clusterz list is not an object: \"\\\"primary\\\"\""
        );
        // Long garbage is cut; anything like a token is never quoted.
        let long = format!("<html>{}</html>", "x".repeat(200));
        let err = parse(&long).unwrap_err();
        assert!(err.ends_with("…\""), "{err}");
        assert!(err.len() < 200, "{err}");
        let err = parse("Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln").unwrap_err();
        assert!(!err.contains("eyJ"), "{err}");
    }

    #[test]
    fn missing_fields() {
        // No id: not a cluster istiod could have loaded.
        assert_eq!(
            parse(r#"[{"secretName":"istio-system/s","syncStatus":"synced"}]"#).unwrap_err(),
            "entry 0 of the clusterz list has no \"id\": \"{\\\"secretName\\\":\\\"istio-system/s\\\",\\\"syncStatus\\\":\\\"synced\\\"}\""
        );
        assert!(parse(r#"[{"id":"","syncStatus":"synced"}]"#).is_err());
        // No secretName or syncStatus: kept, and said so.
        let got = parse(r#"[{"id":"primary"},{"id":"remote","secretName":"ns/s"}]"#).unwrap();
        assert_eq!(got, vec![e("primary", "", None), e("remote", "ns/s", None)]);
        assert!(!got[1].is_synced());
        assert_eq!(
            summary(&got),
            "primary no syncStatus, remote no syncStatus (ns/s)"
        );
    }

    fn answer(from: &str, r: Result<Vec<ClusterzEntry>, &str>) -> Answer {
        Answer {
            from: from.into(),
            result: r.map_err(str::to_string),
        }
    }

    #[test]
    fn judgement_for_one_istiod() {
        let synced = parse(REAL).unwrap();
        let view: View = Ok(vec![answer("istiod-a", Ok(synced.clone()))]);
        assert_eq!(
            judge(&view, "remote"),
            Judgement::Synced {
                entry: synced[1].clone()
            }
        );
        assert_eq!(
            evidence(&view),
            "primary synced, remote synced (istio-system/istio-remote-secret-remote)"
        );
        // The hung secret controller: only the config cluster is listed.
        let only_primary = vec![e("primary", "", Some("synced"))];
        let view: View = Ok(vec![answer("istiod-a", Ok(only_primary.clone()))]);
        assert_eq!(
            judge(&view, "remote"),
            Judgement::Missing {
                from: "istiod-a".into(),
                listed: only_primary
            }
        );
        let mut timeout = synced.clone();
        timeout[1].sync_status = Some("timeout".into());
        let view: View = Ok(vec![answer("istiod-a", Ok(timeout.clone()))]);
        assert_eq!(
            judge(&view, "remote"),
            Judgement::NotSynced {
                from: "istiod-a".into(),
                entry: timeout[1].clone()
            }
        );
        let view: View = Ok(vec![answer("127.0.0.1:15014", Err("connection refused"))]);
        assert_eq!(
            judge(&view, "remote"),
            Judgement::Unknown("connection refused".into())
        );
        assert_eq!(evidence(&view), "unknown: connection refused");
        let view: View = Err("no pod labelled app=istiod".into());
        assert_eq!(
            judge(&view, "remote"),
            Judgement::Unknown("no pod labelled app=istiod".into())
        );
        assert_eq!(evidence(&view), "unknown: no pod labelled app=istiod");
    }

    #[test]
    fn judgement_for_several_istiods() {
        let synced = parse(REAL).unwrap();
        let only_primary = vec![e("primary", "", Some("synced"))];
        // One replica lacking the cluster decides, whatever the others say.
        let view: View = Ok(vec![
            answer("istiod-a", Ok(synced.clone())),
            answer("istiod-b", Ok(only_primary.clone())),
        ]);
        assert_eq!(
            judge(&view, "remote"),
            Judgement::Missing {
                from: "istiod-b".into(),
                listed: only_primary
            }
        );
        assert_eq!(
            evidence(&view),
            "istiod-a: primary synced, remote synced (istio-system/istio-remote-secret-remote); istiod-b: primary synced"
        );
        // Synced where known, but one replica did not answer: not conclusive.
        let view: View = Ok(vec![
            answer("istiod-a", Ok(synced.clone())),
            answer("istiod-b", Err("401 Unauthorized")),
        ]);
        assert_eq!(
            judge(&view, "remote"),
            Judgement::Unknown(
                "istiod-b: 401 Unauthorized (the other istiod(s) list \"remote\" synced)".into()
            )
        );
        let both_synced: View = Ok(vec![
            answer("istiod-a", Ok(synced.clone())),
            answer("istiod-b", Ok(synced.clone())),
        ]);
        assert_eq!(
            judge(&both_synced, "remote"),
            Judgement::Synced {
                entry: synced[1].clone()
            }
        );
    }

    #[test]
    fn pod_proxy_errors_say_who_answered() {
        let forbidden = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"istiod-a:15014\" is forbidden: User \"bob\" cannot get resource \"pods/proxy\" in API group \"\" in the namespace \"istio-system\"","reason":"Forbidden","details":{"name":"istiod-a:15014","kind":"pods"},"code":403}"#;
        let err = proxy_error(
            http::StatusCode::FORBIDDEN,
            forbidden,
            "istio-system",
            "istiod-a",
            15014,
        )
        .unwrap_err();
        assert!(
            err.starts_with("the primary API server refuses the pod proxy (403 Forbidden: pods \"istiod-a:15014\" is forbidden: User \"bob\" cannot get resource \"pods/proxy\""),
            "{err}"
        );
        assert!(err.contains("get on pods/proxy in istio-system"), "{err}");
        // Measured against a real kube-apiserver and istiod: istiod's own
        // 401 (empty body) for a caller that is not on its loopback.
        let err = proxy_error(
            http::StatusCode::UNAUTHORIZED,
            "",
            "istio-system",
            "istiod-a",
            15014,
        )
        .unwrap_err();
        assert!(
            err.starts_with("istiod (istiod-a) answered 401 Unauthorized through the pod proxy"),
            "{err}"
        );
        assert!(
            err.contains("kubectl -n istio-system port-forward pod/istiod-a 15014"),
            "{err}"
        );
        let unreachable = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"error trying to reach service: dial tcp 10.0.0.5:15014: connect: connection refused","reason":"ServiceUnavailable","code":503}"#;
        assert_eq!(
            proxy_error(
                http::StatusCode::SERVICE_UNAVAILABLE,
                unreachable,
                "istio-system",
                "istiod-a",
                15014
            )
            .unwrap_err(),
            "the primary API server cannot reach istiod's pod istiod-a on port 15014 (503 ServiceUnavailable: error trying to reach service: dial tcp 10.0.0.5:15014: connect: connection refused)"
        );
        assert_eq!(
            proxy_error(
                http::StatusCode::NOT_FOUND,
                "404 page not found\n",
                "istio-system",
                "istiod-a",
                15014
            )
            .unwrap_err(),
            "istiod (istiod-a:15014) answered 404 Not Found to /debug/clusterz: \"404 page not found\""
        );
    }

    /// A one-shot plain-HTTP server answering `reply` to the first request.
    async fn one_shot(reply: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&got);
            assert!(
                head.starts_with("GET /debug/clusterz HTTP/1.1\r\n"),
                "{head}"
            );
            s.write_all(reply.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn direct_get_reads_plain_and_chunked_answers() {
        let client = dummy_client();
        let addr = one_shot("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 149\r\n\r\n[{\"id\":\"primary\",\"secretName\":\"\",\"syncStatus\":\"synced\"},{\"id\":\"remote\",\"secretName\":\"istio-system/istio-remote-secret-remote\",\"syncStatus\":\"synced\"}]").await;
        let v = fetch(Some(&addr), &client, "istio-system", Duration::from_secs(5)).await;
        assert_eq!(
            v,
            Ok(vec![Answer {
                from: addr.clone(),
                result: Ok(parse(REAL).unwrap())
            }])
        );
        let addr = one_shot("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{\"id\r\n10\r\n\":\"primary\"}]   \r\n0\r\n\r\n").await;
        let v = fetch(
            Some(&format!("http://{addr}/")),
            &client,
            "istio-system",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(v.unwrap()[0].result, Ok(vec![e("primary", "", None)]));
        let addr = one_shot("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n").await;
        let v = fetch(Some(&addr), &client, "istio-system", Duration::from_secs(5)).await;
        let err = v.unwrap()[0].result.clone().unwrap_err();
        assert!(
            err.starts_with(&format!("istiod at {addr} answered 401 Unauthorized: it serves /debug/ only to callers on its own loopback")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn direct_get_failures_are_reasons() {
        let client = dummy_client();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let v = fetch(
            Some(&closed),
            &client,
            "istio-system",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            v.unwrap()[0].result,
            Err(format!("cannot ask istiod at {closed}: connection refused"))
        );
        let v = fetch(
            Some("istiod"),
            &client,
            "istio-system",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            v.unwrap()[0].result,
            Err("--istiod-debug-addr \"istiod\" is not HOST:PORT".into())
        );
        // A listener that never answers: bounded by the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let v = fetch(
            Some(&addr),
            &client,
            "istio-system",
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(
            v.unwrap()[0].result,
            Err(format!("no answer from {addr} within 300ms"))
        );
        drop(silent);
    }

    /// A client for a server that is never called (the direct path ignores it).
    fn dummy_client() -> kube::Client {
        crate::install_crypto_provider();
        let cfg = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        kube::Client::try_from(cfg).unwrap()
    }
}
