use meshtrace::engine::{self, TraceOptions};
use meshtrace::lab::{faults::Fault, world::Lab};
use meshtrace::model::{TraceEvent, TraceReport};
use tokio::sync::mpsc;

/// Start a lab (optionally with a fault), trace it through the same client
/// code as real clusters, stop it, and return the report and the events.
pub async fn trace_lab(
    fault: Option<&'static Fault>,
    opts: TraceOptions,
) -> (TraceReport, Vec<TraceEvent>) {
    let lab = Lab::start(fault).await.expect("lab starts");
    let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts)
        .await
        .expect("lab clients");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let report = engine::run(clusters, opts, target, tx).await;
    lab.shutdown();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (report, events)
}

/// The last `n` characters of a text, for a failure message.
pub fn tail(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// A peer that completes TCP and then says nothing, holding every connection
/// until the returned task is aborted.
pub async fn silent_peer() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (addr, holder)
}
