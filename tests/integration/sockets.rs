//! TCP_NODELAY on every connection of a trace, both ends (issue 10).
//!
//! A trace's requests and answers are small writes; with Nagle's algorithm
//! on, the first one on each connection waits ~40 ms for a delayed ACK.
//! The lab runs in this process, so both ends of every connection a lab
//! trace opens are in this process's descriptor table: the test samples it
//! during the trace and reads the option the kernel has on each socket.

use meshtrace::engine::{self, TraceOptions};
use meshtrace::lab::world::Lab;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// (local port, peer port, TCP_NODELAY) of each IPv4 TCP socket of this process.
#[allow(unsafe_code)]
fn tcp_sockets() -> Vec<(u16, u16, bool)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let port_of = |peer: bool| {
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let p = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
            // SAFETY: an out-pointer of the size given; a non-socket fd fails with ENOTSOCK.
            let rc = unsafe {
                if peer {
                    libc::getpeername(fd, p, &mut len)
                } else {
                    libc::getsockname(fd, p, &mut len)
                }
            };
            (rc == 0 && i32::from(addr.sin_family) == libc::AF_INET)
                .then(|| u16::from_be(addr.sin_port))
        };
        let (Some(local), Some(peer)) = (port_of(false), port_of(true)) else {
            continue;
        };
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int out-pointer for an int option.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &mut on as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        if rc == 0 {
            out.push((local, peer, on != 0));
        }
    }
    out
}

fn port(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_lab_trace_sets_tcp_nodelay() {
    let lab = Lab::start(None).await.expect("lab starts");
    let servers: BTreeSet<u16> = [
        port(&lab.primary.url),
        port(&lab.remote.url),
        lab.istiod_addr.port(),
    ]
    .into();
    let opts = TraceOptions::default();
    let (clusters, target) = meshtrace::cli::lab_target(&lab, &opts)
        .await
        .expect("lab clients");
    let (tx, _rx) = mpsc::unbounded_channel();
    let trace = tokio::spawn(engine::run(clusters, opts, target, tx));
    // (server port, client port) -> [client end, server end], each as
    // (samples with TCP_NODELAY on, samples with it off). A socket can be
    // sampled between connect (or accept) and the set_nodelay right after
    // it, so an end counts as off only when it was never seen on and was
    // seen off in two samples or more.
    let mut seen: BTreeMap<(u16, u16), [(u32, u32); 2]> = BTreeMap::new();
    let mut count = |key, end: usize, on: bool| {
        let e: &mut [(u32, u32); 2] = seen.entry(key).or_default();
        if on {
            e[end].0 += 1;
        } else {
            e[end].1 += 1;
        }
    };
    while !trace.is_finished() {
        for (local, peer, on) in tcp_sockets() {
            if servers.contains(&peer) {
                count((peer, local), 0, on);
            } else if servers.contains(&local) {
                count((local, peer), 1, on);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let report = trace.await.expect("trace task");
    lab.shutdown();
    assert_eq!(
        report.count(meshtrace::model::Status::Fail),
        0,
        "a healthy lab trace passes"
    );
    for server in &servers {
        assert!(
            seen.iter()
                .any(|((s, _), ends)| s == server && ends[0] != (0, 0)),
            "a connection to the lab's server on port {server} was seen: {seen:?}"
        );
    }
    let off: Vec<_> = seen
        .iter()
        // Both ends seen: a connection of this lab's, not another test's
        // socket that happens to share a port number.
        .filter(|(_, ends)| ends.iter().all(|e| *e != (0, 0)))
        .filter(|(_, ends)| ends.iter().any(|&(on, off)| on == 0 && off >= 2))
        .collect();
    assert!(
        off.is_empty(),
        "connections (server port, client port) -> [client end, server end] as (samples on, samples off), with Nagle on: {off:?}"
    );
}

/// A fresh client's first requests, sent together (the preflight beside the
/// trace's first reads), ride one connection: the others wait for the
/// first answer instead of each dialling its own (every extra TLS
/// handshake is CPU on the API server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_of_a_client_share_one_connection() {
    use k8s_openapi::api::core::v1::Namespace;
    let lab = Lab::start(None).await.expect("lab starts");
    let server = port(&lab.primary.url);
    let opts = TraceOptions::default();
    let (clusters, _) = meshtrace::cli::lab_target(&lab, &opts)
        .await
        .expect("lab clients");
    let api: kube::Api<Namespace> = kube::Api::all(clusters.primary.clone());
    let answers = futures::future::join_all((0..8).map(|_| api.get_opt("istio-system"))).await;
    let conns: BTreeSet<u16> = tcp_sockets()
        .into_iter()
        .filter(|(_, peer, _)| *peer == server)
        .map(|(local, _, _)| local)
        .collect();
    lab.shutdown();
    for a in &answers {
        assert!(matches!(a, Ok(Some(_))), "{a:?}");
    }
    assert_eq!(
        conns.len(),
        1,
        "client connections to the primary: {conns:?}"
    );
}
