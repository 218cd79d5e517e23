//! istiod-exposure on the real test bed: the primary's east-west gateway
//! Service, Gateway and VirtualService that tests/testbed/expose-istiod
//! applies (Istio's expose-istiod sample) against real kube-apiservers with
//! Istio's real CRDs, each broken with kubectl and restored by the guard.

use crate::bed::*;
use crate::check::{Plan, Want, lab, run_case};
use crate::probe::GatewayView;
use meshtrace::model::StepId;
use serde_json::json;

const EASTWEST: &str = "istio-eastwestgateway";

/// The east-west gateway Service without its 15012 -> 15017 port.
#[test]
fn exposure_no_webhook_port() {
    run_case(lab("exposure-no-webhook-port"), |s| {
        let svc = s.save(
            Cluster::Primary,
            "service",
            Some(NS),
            EASTWEST,
            Restore::Replace,
        )?;
        let mut n = svc.clone();
        n["spec"]["ports"]
            .as_array_mut()
            .ok_or("no ports")?
            .retain(|p| p["name"] != "tls-webhook");
        s.write(Cluster::Primary, &n, Restore::Replace)?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).says("none for 15017"))
    });
}

/// The expose-istiod VirtualService deleted.
#[test]
fn exposure_virtualservice_missing() {
    run_case(lab("exposure-virtualservice-missing"), |s| {
        // The fault tests run on the default profile: expose-istiod.yaml's name.
        s.delete(
            Cluster::Primary,
            "virtualservice.networking.istio.io",
            Some(NS),
            "istiod-vs",
        )?;
        Ok(Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued)
            .says("no VirtualService bound to Gateway"))
    });
}

/// The remote's EndpointSlice names a port the east-west gateway does not
/// expose istiod on.
#[test]
fn exposure_address_mismatch() {
    run_case(lab("exposure-address-mismatch"), |s| {
        let name = crate::faults::istiod_slice_name(s.tb)?;
        let slice = s.save(
            Cluster::Remote,
            "endpointslice",
            Some(NS),
            &name,
            Restore::Replace,
        )?;
        let mut n = slice.clone();
        for p in n["ports"].as_array_mut().ok_or("no ports")? {
            if p["name"] == "tcp-istiod" {
                p["port"] = json!(15013);
            }
        }
        s.write(Cluster::Remote, &n, Restore::Replace)?;
        let mut plan = Plan::new(s.tb, GatewayView::healthy(s.tb)?, Want::Issued).says("not 15013");
        // On the network hosts meshtrace dials the slice's 15013 at the load
        // balancer and istiod-tls fails as in the lab; on the loopback bed the
        // slice's address (192.0.2.10) leads nowhere, meshtrace dials istiod by
        // --istiod-addr, so istiod-tls passes there.
        if s.tb.net.is_none() {
            plan.lab_differs.push((
                StepId::IstiodTls,
                "the loopback test bed dials istiod by --istiod-addr, the lab by the slice",
            ));
        }
        Ok(plan)
    });
}
