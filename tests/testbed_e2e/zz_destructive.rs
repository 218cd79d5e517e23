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
