//! Bad HTTP/1.1 input as raw bytes, each asserting the exact answer.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wirelab_core::ServerConfig;
use wirelab_h1::H1Server;

const BOUND: Duration = Duration::from_secs(10);

async fn server(tweak: impl FnOnce(&mut ServerConfig)) -> SocketAddr {
    let mut cfg = wirelab_test_support::local();
    tweak(&mut cfg);
    // The server runs until the test's runtime ends.
    wirelab_test_support::start::<H1Server>(cfg).await.addr
}

/// Sends `raw` and reads until the first response's head is complete (or the server closes).
async fn head(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(BOUND, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn declared_body_over_the_limit_gets_413() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|c| c.limits.max_message = 1024).await;
    let r = head(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
}

#[tokio::test]
async fn chunked_body_over_the_limit_gets_413() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|c| c.limits.max_message = 1024).await;
    let mut req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'a'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = head(addr, &req).await;
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
}

#[tokio::test]
async fn echo_and_keep_alive() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|_| {}).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for body in ["hello", "again"] {
        let req = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with(body) {
            let n = tokio::time::timeout(BOUND, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed: keep-alive broken");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|c| c.timeouts.handshake = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t0 = std::time::Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(BOUND, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the server kept a slowloris connection open");
    // Cut off by the head timeout, not at once.
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "closed after {waited:?} for a 300 ms head timeout"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        out.is_empty() || text.starts_with("HTTP/1.1 408 "),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|c| c.limits.max_header_bytes = 8192).await;
    let req = format!(
        "GET /stream?count=1&size=64 HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = head(addr, req.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
}

#[tokio::test]
async fn routes_and_methods() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|_| {}).await;
    let r = head(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = head(addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 405 ") && r.contains("allow: POST"),
        "{r}"
    );
    let r = head(addr, b"GET /stream?count=x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let r = head(
        addr,
        b"GET /stream?count=1&size=8 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
}

/// A page of another origin can use the routes: a preflight gets 204 with the allowed methods,
/// and every answer carries `Access-Control-Allow-Origin: *`.
#[tokio::test]
async fn cors_preflight_and_allow_origin() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|_| {}).await;
    let r = head(
        addr,
        b"OPTIONS /echo HTTP/1.1\r\nHost: x\r\nOrigin: http://elsewhere\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(r.starts_with("http/1.1 204 "), "{r}");
    assert!(r.contains("\r\naccess-control-allow-origin: *\r\n"), "{r}");
    assert!(
        r.contains("\r\naccess-control-allow-methods: get, post, options\r\n"),
        "{r}"
    );
    assert!(r.contains("\r\naccess-control-allow-headers: *\r\n"), "{r}");
    let r = head(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nOrigin: http://elsewhere\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await
    .to_ascii_lowercase();
    assert!(r.starts_with("http/1.1 200 "), "{r}");
    assert!(r.contains("\r\naccess-control-allow-origin: *\r\n"), "{r}");
    let r = head(addr, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .to_ascii_lowercase();
    assert!(r.starts_with("http/1.1 404 "), "{r}");
    assert!(r.contains("\r\naccess-control-allow-origin: *\r\n"), "{r}");
}

/// `GET /` is the browser page, named after the server's HTTP version, cross-origin isolated.
#[tokio::test]
async fn the_browser_page_is_served_at_slash() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server(|_| {}).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, s.read_to_end(&mut out))
        .await
        .expect("the page in time")
        .unwrap();
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    let lower = r.to_ascii_lowercase();
    assert!(lower.contains("\r\ncontent-type: text/html; charset=utf-8\r\n"));
    assert!(lower.contains("\r\ncross-origin-embedder-policy: require-corp\r\n"));
    assert!(r.contains("const SERVER = \"h1\";"));
    assert!(r.trim_end().ends_with("</html>"));
}
