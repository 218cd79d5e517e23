//! Faults the test bed can express but the real istiod does not survive
//! (ISTIOD_HANG in faults.rs): istiod's remote-secret controller hangs after
//! the revert, and the revert guard restarts istiod
//! (`tests/testbed/restart-istiod`). The module name sorts last, so with
//! one test at a time these run after every other test.

use crate::bed::{Cluster, NS, READER_SA, Restore};
use crate::check::{Plan, Want, lab, run_case};
use crate::faults::{edit_remote_kubeconfig, set_token};
use crate::probe::GatewayView;
use serde_json::json;

/// A TokenRequest token from the PRIMARY, for an account of the same name,
/// in the remote secret. Compared with the lab.
///
/// Measured: the remote API server rejects it (401) and istiod refuses the
/// gateway (`failed to validate the JWT from cluster "remote": Unauthorized`);
/// meshtrace's first failure is remote-identity, as in the lab, but its
/// diagnosis blames "an earlier service account" (the uid differs, which it
/// checks before the issuer) instead of another cluster's token, until
/// meshtrace compared the token's issuer with the remote's OIDC discovery.
/// Afterwards istiod's secret controller is often hung (4 of 8 runs
/// measured), and the guard restarts istiod.
#[test]
fn reader_token_other_cluster() {
    run_case(lab("reader-token-other-cluster"), |s| {
        s.istiod_may_hang("a remote cluster whose token the remote rejects, deleted again");
        s.create(Cluster::Primary, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": READER_SA, "namespace": NS}}))?;
        let t = s.tb.token(Cluster::Primary, READER_SA, None, None, "24h")?;
        edit_remote_kubeconfig(s, Restore::Recreate, |kc| set_token(kc, &t))?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("failed to validate the JWT from cluster \"remote\": Unauthorized"),
        )
    });
}

/// The remote secret's own reader token, re-signed with the remote's
/// service-account key and its times moved back: a token the remote API
/// server issued, expired an hour ago (TokenRequest cannot mint one: its
/// shortest life is 10 minutes).
fn expired_reader_token(tb: &crate::bed::Testbed) -> Result<crate::bed::Token, String> {
    let sec = tb
        .get(
            Cluster::Primary,
            "secret",
            Some(NS),
            crate::bed::REMOTE_SECRET,
        )?
        .ok_or("the remote secret is gone")?;
    let kc = crate::faults::b64d(&sec["data"][&tb.remote_cluster_id])?;
    let jwt = kc
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("token:"))
        .ok_or("no token in the remote secret's kubeconfig")?;
    let token =
        meshtrace::inspect::jwt::decode(jwt).map_err(|e| format!("the reader token: {e}"))?;
    let mut claims = serde_json::Value::Object(token.claims);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    claims["iat"] = json!(now - 7200);
    claims["nbf"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    let pem = std::fs::read(tb.state.join("pki/remote/sa.key"))
        .map_err(|e| format!("the remote's service-account key: {e}"))?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
        .map_err(|e| format!("the remote's service-account key: {e}"))?;
    let mut hdr = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    hdr.kid = token
        .header
        .get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_string);
    jsonwebtoken::encode(&hdr, &claims, &key)
        .map(crate::bed::Token)
        .map_err(|e| format!("signing: {e}"))
}

/// The reader token in the remote secret expired (catalogue row 8). The
/// remote API server refuses it (401), so, as with a token from another
/// cluster, istiod's secret controller may hang after the revert.
#[test]
fn reader_token_expired() {
    run_case(lab("reader-token-expired"), |s| {
        s.istiod_may_hang("a remote cluster whose token the remote rejects, deleted again");
        let t = expired_reader_token(s.tb)?;
        edit_remote_kubeconfig(s, Restore::Recreate, |kc| set_token(kc, &t))?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("failed to validate the JWT from cluster \"remote\": Unauthorized"),
        )
    });
}
