//! Install profiles in the lab (docs/profiles.md): every healthy profile
//! passes every step through the same client code as real clusters, with
//! the evidence saying which rule meshtrace followed; and the faults that
//! make sense on a profile are flagged where they are on the default one.

use meshtrace::engine::{self, TraceOptions};
use meshtrace::lab::faults::{self, FaultId};
use meshtrace::lab::profiles::Profile;
use meshtrace::lab::world::Lab;
use meshtrace::model::{Status, StepId, TraceReport};
use serde_json::Value;

async fn trace(profile: Profile, fault: Option<FaultId>) -> TraceReport {
    let lab = Lab::start_profile(profile, fault.map(faults::get), |_| {})
        .await
        .expect("lab starts");
    let mut opts = TraceOptions::default();
    meshtrace::cli::lab_profile_options(&lab, &mut opts);
    let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts)
        .await
        .expect("lab clients");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let report = engine::run(clusters, opts, target, tx).await;
    lab.shutdown();
    report
}

fn ev(r: &TraceReport, id: StepId) -> Value {
    serde_json::to_value(&r.step(id).expect("step ran").evidence).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_healthy_profile_passes_every_step_for_its_own_reasons() {
    for p in Profile::ALL {
        let r = trace(*p, None).await;
        for s in &r.steps {
            assert_eq!(
                s.status,
                Status::Pass,
                "profile {}: {} is {:?}: {:?}",
                p.name(),
                s.id,
                s.status,
                s.diagnosis
            );
        }
        let cp = ev(&r, StepId::ControlPlane);
        let ep = ev(&r, StepId::RemoteIstiodEndpoint);
        let tls = ev(&r, StepId::IstiodTls);
        let chain = ev(&r, StepId::IssuedChain);
        let name = p.name();
        assert_eq!(cp["istiod"]["revision"]["value"], p.revision(), "{name}");
        assert_eq!(cp["istiod"]["deployment"], p.istiod_deployment(), "{name}");
        let auds: Vec<&str> = p.token_audiences().split(',').collect();
        assert_eq!(
            cp["istiod"]["TOKEN_AUDIENCES"]["value"],
            serde_json::json!(auds),
            "{name}"
        );
        assert_eq!(
            ev(&r, StepId::TokenReview)["audiences"],
            serde_json::json!(auds),
            "{name}: the TokenReview asks for istiod's audiences"
        );
        assert_eq!(
            ev(&r, StepId::GatewayToken)["audience"],
            p.gateway_audience(),
            "{name}"
        );
        match p.remote_service() {
            Some(svc) => assert!(
                ep["service"]["name"].as_str() == Some(&format!("istio-system/{svc}")),
                "{name}: {ep}"
            ),
            None => assert!(
                ep["note"].as_str().unwrap().contains("directly"),
                "{name}: {ep}"
            ),
        }
        let dialed = ep["gateway_dials"]["from"].as_str().unwrap();
        if *p == Profile::NoCaAddr {
            assert!(dialed.contains("PROXY_CONFIG"), "{name}: {dialed}");
        } else {
            assert_eq!(dialed, "the gateway's env CA_ADDR", "{name}");
        }
        let sni = tls["server_name"].as_str().unwrap();
        match p.ca_addr() {
            Some(a) => assert_eq!(Some(sni), a.strip_suffix(":15012"), "{name}"),
            None => assert_eq!(sni, "istiod-remote.istio-system.svc", "{name}"),
        }
        let roots = tls["roots"].as_str().unwrap();
        assert_eq!(
            roots.contains("platform"),
            *p == Profile::ExternalIstiod,
            "{name}: {roots}"
        );
        assert!(
            chain["spiffe_id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("spiffe://{}/", p.trust_domain())),
            "{name}: {chain}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_flagged_at_the_same_step_on_other_profiles() {
    // (profile, fault): each flagged with the fault's own step and code.
    let rows = [
        (Profile::Revision, FaultId::IstiodServiceMissing),
        (Profile::Revision, FaultId::IstiodTokenAudiences),
        (Profile::NoCaAddr, FaultId::IstiodNoEndpoints),
        (Profile::Audiences, FaultId::GatewayAudience),
        (Profile::CertManagerCa, FaultId::StaleRoot),
        (Profile::TrustDomain, FaultId::ChainWrongTrustDomain),
        (Profile::ExternalIstiod, FaultId::NoTokenreviewRbac),
    ];
    for (p, id) in rows {
        let f = faults::get(id);
        let r = trace(p, Some(id)).await;
        let first = r
            .steps
            .iter()
            .find(|s| matches!(s.status, Status::Fail | Status::Warn))
            .unwrap_or_else(|| panic!("{} on {}: nothing flagged", f.name, p.name()));
        assert_eq!(
            first.id,
            f.step,
            "{} on {}: {:?}",
            f.name,
            p.name(),
            first.diagnosis
        );
        assert_eq!(
            first.finding.as_ref().map(|x| x.code.as_str()),
            Some(f.code),
            "{} on {}",
            f.name,
            p.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_the_gateway_does_not_name_is_asked_for() {
    // The revision profile with --revision default: no istiod of that revision.
    let lab = Lab::start_profile(Profile::Revision, None, |_| {})
        .await
        .unwrap();
    let opts = TraceOptions {
        revision: Some("default".into()),
        ..Default::default()
    };
    let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts).await.unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let r = engine::run(clusters, opts, target, tx).await;
    lab.shutdown();
    let cp = r.step(StepId::ControlPlane).unwrap();
    assert_eq!(cp.status, Status::Fail);
    assert_eq!(
        cp.finding.as_ref().map(|f| f.code.as_str()),
        Some("control-plane/unknown-revision")
    );
    assert!(
        cp.diagnosis.as_deref().unwrap().contains("canary"),
        "{:?}",
        cp.diagnosis
    );
}
