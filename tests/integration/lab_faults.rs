//! The healthy lab passes every step; each named fault is reported first at
//! the step it breaks, with the fault's finding code, and every other step
//! either passes or says which failure blocked it.

use crate::support::trace_lab;
use meshtrace::engine::TraceOptions;
use meshtrace::lab::faults::{self, FaultId};
use meshtrace::lab::world::Lab;
use meshtrace::model::{STEPS, Status, StepId, TraceEvent, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_lab_passes_every_step() {
    let (r, events) = trace_lab(None, TraceOptions::default()).await;
    for s in &r.steps {
        assert_eq!(
            s.status,
            Status::Pass,
            "{} did not pass: {:?} {:?}",
            s.id,
            s.diagnosis,
            s.evidence
        );
    }
    assert_eq!(r.steps.len(), STEPS.len());
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.first_failure, None);
    // The stream: started first, finished last, one finish per step.
    assert!(matches!(
        events.first(),
        Some(TraceEvent::TraceStarted { .. })
    ));
    assert!(matches!(
        events.last(),
        Some(TraceEvent::TraceFinished { .. })
    ));
    let finished = events
        .iter()
        .filter(|e| matches!(e, TraceEvent::StepFinished { .. }))
        .count();
    assert_eq!(finished, STEPS.len());
    // The chain really was issued for the gateway's identity.
    let chain = r.step(meshtrace::model::StepId::IssuedChain).unwrap();
    assert_eq!(
        chain.evidence["spiffe_id"],
        "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway-service-account"
    );
    // istiod's own view is evidence only when it came in before the chain:
    // an issued certificate is not held up for it (csr_refusals_* read it
    // for certain). Over xDS it is not even asked: a debug stream would take
    // the new-stream slot istiod's rate limit gives the gateway's xDS step.
    let csr = r.step(StepId::Csr).unwrap();
    let view = csr.evidence["istiod_clusters"].as_str().unwrap_or_default();
    let source = csr.evidence["istiod_clusters_source"]
        .as_str()
        .unwrap_or_default();
    assert!(!source.starts_with("istiod's xDS at "), "{source}");
    assert!(
        view.contains("not waited for: istiod answered the CSR first"),
        "{view}"
    );
}

/// The two faults that only istiod's CSR answer reveals get an exact
/// cause from istiod's own list of clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_refusals_are_explained_by_istiods_view() {
    let fault = faults::get(FaultId::IstiodStaleClusters);
    let (r, _) = trace_lab(Some(fault), TraceOptions::default()).await;
    let csr = r.step(StepId::Csr).unwrap();
    let finding = csr.finding.as_ref().expect("a finding");
    assert_eq!(finding.code, "csr/istiod-has-not-loaded-cluster");
    let diag = csr.diagnosis.as_deref().unwrap_or_default();
    // (The pod is the istiod Deployment's: istiod-<pod-template-hash>-<suffix>.)
    assert!(
        diag.contains("istiod's /debug/clusterz (xDS 127.0.0.1:")
            && diag.contains(") lists [\"primary\"], not \"remote\""),
        "{diag}"
    );
    assert_eq!(csr.evidence["istiod_clusters"], "primary synced");
    // The restart names istiod's Deployment once the lab has one; until
    // then the note says how to find it.
    restart_or_how_to_find_it(finding);

    // With --token-audience istio-ca the audience is the operator's, so the
    // trace goes on to the CSR, which istiod (TOKEN_AUDIENCES=other-ca) refuses.
    let fault = faults::get(FaultId::IstiodTokenAudiences);
    let opts = TraceOptions {
        token_audience: Some("istio-ca".into()),
        ..Default::default()
    };
    let (r, _) = trace_lab(Some(fault), opts).await;
    let csr = r.step(StepId::Csr).unwrap();
    let finding = csr.finding.as_ref().expect("a finding");
    assert_eq!(finding.code, "csr/token-audience-not-accepted");
    let diag = csr.diagnosis.as_deref().unwrap_or_default();
    assert!(
        diag.contains("istiod lists \"remote\" synced (Secret istio-system/istio-remote-secret-remote) and meshtrace's TokenReview passed for \"istio-ca\""),
        "{diag}"
    );
    match finding.commands.as_slice() {
        [] => assert!(
            finding
                .note
                .as_deref()
                .is_some_and(|n| n.contains("get deployments -l app=istiod")),
            "{finding:?}"
        ),
        [c] => assert!(
            c.starts_with(
                "kubectl --context lab-primary -n istio-system set env deployment/istiod "
            ) && c.ends_with(",istio-ca"),
            "{c}"
        ),
        more => panic!("{more:?}"),
    }
}

fn restart_or_how_to_find_it(finding: &meshtrace::model::Finding) {
    match finding.commands.as_slice() {
        [] => assert!(
            finding.note.as_deref().is_some_and(|n| n.contains(
                "kubectl --context lab-primary -n istio-system get deployments -l app=istiod"
            )),
            "{finding:?}"
        ),
        cmds => assert_eq!(
            cmds,
            ["kubectl --context lab-primary -n istio-system rollout restart deployment/istiod"]
        ),
    }
}

/// `--istiod-debug-addr` comes after xDS: the lab's istiod answers over
/// xDS, so whatever the monitoring address (istiod's, or one nothing
/// answers on), the view is istiod's, from xDS, and names the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_debug_addr_is_asked_directly() {
    let fault = faults::get(FaultId::IstiodTokenAudiences);
    let lab = Lab::start(Some(fault)).await.expect("lab starts");
    let direct = lab.istiod.monitoring_addr.to_string();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for addr in [direct, closed] {
        let opts = TraceOptions {
            istiod_debug_addr: Some(addr.clone()),
            token_audience: Some("istio-ca".into()),
            ..Default::default()
        };
        let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts)
            .await
            .expect("lab clients");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let r = meshtrace::engine::run(clusters, opts, target, tx).await;
        assert_eq!(r.first_failure, Some(StepId::Csr), "{addr}");
        let csr = r.step(StepId::Csr).unwrap();
        assert_eq!(
            csr.evidence["istiod_clusters"],
            "primary synced, remote synced (istio-system/istio-remote-secret-remote)"
        );
        assert!(
            csr.evidence["istiod_clusters_source"]
                .as_str()
                .is_some_and(|s| s.starts_with("istiod's xDS at ")),
            "{:?}",
            csr.evidence["istiod_clusters_source"]
        );
        let code = csr.finding.as_ref().map(|f| f.code.as_str());
        let diag = csr.diagnosis.as_deref().unwrap_or_default();
        assert_eq!(code, Some("csr/token-audience-not-accepted"), "{diag}");
    }
    lab.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_mode_sends_no_csr() {
    let opts = TraceOptions {
        no_csr: true,
        ..Default::default()
    };
    let (r, _) = trace_lab(None, opts).await;
    let csr = r.step(meshtrace::model::StepId::Csr).unwrap();
    assert_eq!(csr.status, Status::Skipped);
    assert!(csr.diagnosis.as_deref().unwrap_or("").contains("--no-csr"));
    let chain = r.step(meshtrace::model::StepId::IssuedChain).unwrap();
    assert_eq!(chain.status, Status::Skipped);
    assert_eq!(r.verdict, Verdict::Pass);
}

async fn check_fault(id: FaultId) {
    let fault = faults::get(id);
    let name = fault.name;
    let (r, _) = trace_lab(Some(fault), TraceOptions::default()).await;
    let first = r
        .first_failure
        .unwrap_or_else(|| panic!("{name}: every step passed"));
    let step = r.step(first).unwrap();
    assert_eq!(
        first, fault.step,
        "{name}: first failing step is {first}: {:?}",
        step.diagnosis
    );
    assert_eq!(step.status, fault.status, "{name}: {:?}", step.diagnosis);
    assert!(
        step.hint.as_deref().is_some_and(|h| !h.is_empty()),
        "{name}: no hint"
    );
    assert_eq!(step.link, format!("docs/checks.md#{}", fault.step));
    // Only the faulty step fails; the others pass or name it as their blocker.
    for s in &r.steps {
        if s.id == fault.step {
            continue;
        }
        if fault.also_fails.contains(&s.id) {
            assert_eq!(s.status, Status::Fail, "{name}: {} should fail too", s.id);
            continue;
        }
        match s.status {
            Status::Pass => {}
            Status::Skipped => assert!(
                s.blocked_by.contains(&fault.step)
                    || s.blocked_by.iter().any(|b| fault.also_fails.contains(b)),
                "{name}: {} skipped but blocked by {:?}",
                s.id,
                s.blocked_by
            ),
            other => panic!("{name}: {} is {other:?} too: {:?}", s.id, s.diagnosis),
        }
    }
    // No token or key material leaks into the report.
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains("PRIVATE KEY"),
        "{name}: private key in report"
    );
    for part in json.split('"') {
        let dots = part.matches('.').count();
        let segs: Vec<_> = part.split('.').collect();
        assert!(
            !(dots == 2
                && segs.len() == 3
                && segs.iter().all(|s| s.len() > 20 && !s.contains(' '))),
            "{name}: something that looks like a JWT in the report"
        );
    }
    // The finding's code is the contract, not words of the diagnosis
    // (checked last, so the checks above hold whatever the code).
    let got = step.finding.as_ref().map(|f| f.code.as_str());
    assert_eq!(
        got,
        Some(fault.code),
        "fault {name}: expected code {}, got {}",
        fault.code,
        got.unwrap_or("no finding")
    );
}

macro_rules! fault_tests {
    ($($fn:ident => $id:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $fn() { check_fault(FaultId::$id).await; }
        )*
        /// Every fault the lab knows has a test above.
        #[test]
        fn every_fault_has_a_test() {
            let tested = [$(FaultId::$id),*];
            for f in faults::FAULTS {
                assert!(tested.contains(&f.id), "fault {} has no test", f.name);
            }
        }
    };
}

fault_tests! {
    no_remote_secret => NoRemoteSecret,
    secret_unlabelled => SecretUnlabelled,
    secret_wrong_namespace => SecretWrongNamespace,
    cluster_id_mismatch => ClusterIdMismatch,
    cluster_id_is_primary => ClusterIdIsPrimary,
    kubeconfig_empty => KubeconfigEmpty,
    kubeconfig_not_yaml => KubeconfigNotYaml,
    kubeconfig_no_current_context => KubeconfigNoCurrentContext,
    kubeconfig_exec => KubeconfigExec,
    kubeconfig_token_file => KubeconfigTokenFile,
    secret_points_at_primary => SecretPointsAtPrimary,
    api_server_unreachable => ApiServerUnreachable,
    wrong_ca_data => WrongCaData,
    reader_token_expired => ReaderTokenExpired,
    reader_sa_deleted => ReaderSaDeleted,
    reader_token_other_cluster => ReaderTokenOtherCluster,
    reader_token_expiring => ReaderTokenExpiring,
    no_tokenreview_rbac => NoTokenreviewRbac,
    istiod_service_missing => IstiodServiceMissing,
    istiod_service_selector => IstiodServiceSelector,
    istiod_no_endpoints => IstiodNoEndpoints,
    istiod_unreachable => IstiodUnreachable,
    exposure_no_webhook_port => ExposureNoWebhookPort,
    exposure_address_mismatch => ExposureAddressMismatch,
    exposure_gateway_missing => ExposureGatewayMissing,
    exposure_virtualservice_missing => ExposureVirtualserviceMissing,
    exposure_lb_pending => ExposureLbPending,
    gateway_no_cluster_id => GatewayNoClusterId,
    gateway_audience => GatewayAudience,
    gateway_no_projected_token => GatewayNoProjectedToken,
    gateway_sa_deleted => GatewaySaDeleted,
    root_configmap_missing => RootConfigmapMissing,
    stale_root => StaleRoot,
    partial_cacerts => PartialCacerts,
    root_expiring => RootExpiring,
    istiod_cert_wrong_san => IstiodCertWrongSan,
    istiod_token_audiences => IstiodTokenAudiences,
    istiod_stale_clusters => IstiodStaleClusters,
    chain_single_element => ChainSingleElement,
    chain_wrong_trust_domain => ChainWrongTrustDomain,
    chain_clock_skew => ChainClockSkew,
    network_mismatch => NetworkMismatch,
    xds_discovery_address_missing => XdsDiscoveryAddressMissing,
    xds_node_namespace => XdsNodeNamespace,
    xds_root_ca_mismatch => XdsRootCaMismatch,
    xds_not_ready => XdsNotReady,
    webhook_missing => WebhookMissing,
    webhook_ca_bundle_mismatch => WebhookCaBundleMismatch,
    webhook_wrong_service => WebhookWrongService,
    webhook_port_closed => WebhookPortClosed,
}
