//! One plain HTTP/1.1 request on a fresh connection, the whole answer in
//! memory. Shared by istiod's monitoring port (probe::clusterz) and the
//! lab's pod proxy, so that neither reaches into the other.

use hyper::body::Bytes;

/// Send `req` to `addr` (`HOST:PORT`) and read at most `max_body` bytes of
/// the answer; an error is a short reason in words.
pub async fn request(
    addr: &str,
    req: http::Request<Vec<u8>>,
    max_body: usize,
) -> Result<http::Response<Vec<u8>>, String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        })?;
    // A request of one small write: do not let Nagle hold it for an ACK.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    // The connection task ends when the sender is dropped after the answer.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = req.map(|b| http_body_util::Full::new(Bytes::from(b)));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(http::Response::from_parts(parts, bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every connection's first request with `reply`.
    async fn serve(reply: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            }
        });
        addr
    }

    fn get() -> http::Request<Vec<u8>> {
        http::Request::get("/x")
            .header(http::header::HOST, "peer")
            .body(Vec::new())
            .unwrap()
    }

    #[tokio::test]
    async fn reads_the_answer_within_the_limit_and_refuses_more() {
        let addr = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        let resp = super::request(&addr, get(), 5).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body(), b"hello");
        let err = super::request(&addr, get(), 4).await.unwrap_err();
        assert!(err.starts_with("reading the answer: "), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_said_in_words() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        assert_eq!(
            super::request(&closed, get(), 1024).await.unwrap_err(),
            "connection refused"
        );
    }
}
