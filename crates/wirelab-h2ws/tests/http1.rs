//! The h2ws port over ALPN `http/1.1`: what a browser's "cold" WebSocket (one with no HTTP/2
//! connection to the origin yet) offers. Bounded waits; OS-chosen ports.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use wirelab_core::codec::{self, Kind};
use wirelab_core::tls::{self, Trust};
use wirelab_h2ws::H2wsServer;

const BOUND: Duration = Duration::from_secs(10);

async fn tls_h1(
    addr: std::net::SocketAddr,
    cert: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = tls::client_config(&Trust::Certificates(vec![cert]), &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = TlsConnector::from(Arc::clone(&cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    io
}

#[tokio::test]
async fn alpn_http11_gets_the_rfc6455_upgrade_and_the_same_session() {
    let _panics = wirelab_test_support::panics::no_panics();
    let t = wirelab_test_support::test_tls(b"h2");
    let mut cfg = wirelab_test_support::local();
    cfg.tls = Some(t.server);
    let s = wirelab_test_support::start::<H2wsServer>(cfg).await;
    let io = tls_h1(s.addr, t.identity.certificate()).await;
    let url = format!("wss://localhost:{}/ws", s.addr.port());
    let (mut ws, resp) =
        wirelab_test_support::within("handshake", BOUND, tokio_tungstenite::client_async(url, io))
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    let echo = codec::encode(0, 1, 0, Kind::Echo, 100).unwrap();
    for m in [
        Message::Binary(echo.clone()),
        Message::Text("typed by hand".into()),
    ] {
        ws.send(m.clone()).await.unwrap();
        let back = wirelab_test_support::within("echo", BOUND, ws.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, m);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn alpn_http11_serves_the_page_and_refuses_a_bad_handshake() {
    let _panics = wirelab_test_support::panics::no_panics();
    let t = wirelab_test_support::test_tls(b"h2");
    let mut cfg = wirelab_test_support::local();
    cfg.tls = Some(t.server);
    let s = wirelab_test_support::start::<H2wsServer>(cfg).await;
    for (req, want) in [
        ("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 "),
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            "HTTP/1.1 426 ",
        ),
        ("GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404 "),
    ] {
        let mut io = tls_h1(s.addr, t.identity.certificate()).await;
        io.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let _ = tokio::time::timeout(BOUND, async {
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
                if want.contains("200") {
                    if out.ends_with(b"</html>\n") {
                        break;
                    }
                } else if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        })
        .await;
        let r = String::from_utf8_lossy(&out);
        assert!(r.starts_with(want), "{req}: {r}");
        if want.contains("200") {
            assert!(r.contains("const SERVER = \"h2ws\";"));
        }
    }
}
