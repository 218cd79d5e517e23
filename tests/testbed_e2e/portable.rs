//! Public faults on every install profile (issue 8: "the public faults
//! that make sense on the profile are flagged at the same step as on the
//! default"). Each test here runs on whatever profile the test bed was
//! brought up with (`tests/testbed/up --profile P`; `.ci/run` runs them on
//! each): the fault is injected with kubectl, meshtrace must flag it at the
//! lab fault's step with its code, `meshtrace lab --profile P --fault F`
//! must agree step by step, the real istiod must answer the profile's
//! gateway as meshtrace says, and meshtrace's printed fix, run with the
//! real kubectl, must turn the trace green.
//!
//! Chosen because nothing in them depends on the install shape: the remote
//! secret, the cluster ID, the reader's RBAC, the gateway's service account
//! and the remote's root are the same objects on every profile. Faults tied
//! to one shape (the remote's istiod Service, the gateway's audience, the
//! CA's keys) stay in faults.rs, on the default profile.

use crate::bed::*;
use crate::check::{Plan, Want, lab, run_portable_case};
use crate::faults::stop_istiod_writing_root;
use crate::probe::GatewayView;
use serde_json::json;

#[test]
fn secret_unlabelled() {
    run_portable_case(lab("secret-unlabelled"), |s| {
        s.save(
            Cluster::Primary,
            "secret",
            Some(NS),
            REMOTE_SECRET,
            Restore::Replace,
        )?;
        s.tb.kubectl(
            Cluster::Primary,
            &[
                "-n",
                NS,
                "label",
                "secret",
                REMOTE_SECRET,
                &format!("{MC_LABEL}-"),
            ],
        )?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("client claims to be in cluster \"remote\""),
        )
    });
}

#[test]
fn cluster_id_mismatch() {
    run_portable_case(lab("cluster-id-mismatch"), |s| {
        let sec = s.save(
            Cluster::Primary,
            "secret",
            Some(NS),
            REMOTE_SECRET,
            Restore::Replace,
        )?;
        let kc = sec["data"][&s.tb.remote_cluster_id].clone();
        let mut new = sec.clone();
        new["data"] = json!({ "remote-1": kc });
        s.write(Cluster::Primary, &new, Restore::Replace)?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
            .log("client claims to be in cluster \"remote\", but we only know about local cluster \"primary\" and remote clusters [remote-1]"))
    });
}

#[test]
fn no_tokenreview_rbac() {
    run_portable_case(lab("no-tokenreview-rbac"), |s| {
        let role = s.save(
            Cluster::Remote,
            "clusterrole",
            None,
            READER_ROLE,
            Restore::Replace,
        )?;
        let mut r = role.clone();
        let rules = r["rules"]
            .as_array_mut()
            .ok_or("ClusterRole without rules")?;
        let before = rules.len();
        rules.retain(|rule| {
            !rule["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == "tokenreviews"))
        });
        assert_eq!(rules.len(), before - 1, "expected one tokenreviews rule");
        s.write(Cluster::Remote, &r, Restore::Replace)?;
        Ok(
            Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Unauthenticated)
                .log("tokenreviews.authentication.k8s.io is forbidden"),
        )
    });
}

#[test]
fn gateway_sa_deleted() {
    run_portable_case(lab("gateway-sa-deleted"), |s| {
        // The gateway still holds the token projected before the deletion.
        let g = GatewayView::healthy(s.tb)?;
        s.delete(Cluster::Remote, "serviceaccount", Some(NS), GATEWAY_SA)?;
        Ok(Plan::new(s.tb, g, Want::Unauthenticated)
            .log("the service account authentication returns an error"))
    });
}

#[test]
fn root_configmap_missing() {
    run_portable_case(lab("root-configmap-missing"), |s| {
        stop_istiod_writing_root(s)?;
        s.delete(Cluster::Remote, "configmap", Some(NS), "istio-ca-root-cert")?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        if s.tb
            .exists(Cluster::Remote, "configmap", Some(NS), "istio-ca-root-cert")?
        {
            return Err(
                "istiod wrote istio-ca-root-cert again although it no longer leads the remote"
                    .into(),
            );
        }
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued))
    });
}
