//! RFC 8441 misuse, each asserting the answer. h2c throughout; bounded waits; OS-chosen ports.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wirelab_core::codec::{self, Kind};
use wirelab_core::{Client, ClientConfig, Error};
use wirelab_h2ws::{H2wsClient, H2wsServer};

const BOUND: Duration = Duration::from_secs(10);

async fn server() -> SocketAddr {
    // The server runs until the test's runtime ends.
    wirelab_test_support::start::<H2wsServer>(wirelab_test_support::local())
        .await
        .addr
}

/// A raw hyper HTTP/2 client connection, waiting for the server's extended-CONNECT setting.
async fn h2(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let sock = TcpStream::connect(addr).await.unwrap();
    let (sender, mut conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(sock))
            .await
            .unwrap();
    tokio::time::timeout(BOUND, async {
        while !conn.is_extended_connect_protocol_enabled() {
            tokio::select! {
                _ = &mut conn => panic!("connection ended"),
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    })
    .await
    .expect("no SETTINGS_ENABLE_CONNECT_PROTOCOL");
    tokio::spawn(conn);
    sender
}

fn connect(
    addr: SocketAddr,
    protocol: &'static str,
    version: Option<&str>,
) -> Request<Empty<Bytes>> {
    let mut b = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(format!("http://127.0.0.1:{}/ws", addr.port()))
        .extension(hyper::ext::Protocol::from_static(protocol));
    if let Some(v) = version {
        b = b.header("sec-websocket-version", v);
    }
    b.body(Empty::new()).unwrap()
}

async fn send(
    s: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> Response<hyper::body::Incoming> {
    s.ready().await.unwrap();
    tokio::time::timeout(BOUND, s.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn unknown_protocol_gets_400() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server().await;
    let mut s = h2(addr).await;
    let resp = send(&mut s, connect(addr, "chat-v2", Some("13"))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_or_wrong_websocket_version_gets_400_naming_13() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server().await;
    let mut s = h2(addr).await;
    for version in [None, Some("8")] {
        let resp = send(&mut s, connect(addr, "websocket", version)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{version:?}");
        assert_eq!(resp.headers()["sec-websocket-version"], "13");
    }
}

#[tokio::test]
async fn plain_requests_get_405() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server().await;
    let mut s = h2(addr).await;
    let req = Request::builder()
        .uri(format!("http://127.0.0.1:{}/ws", addr.port()))
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        send(&mut s, req).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn server_without_the_setting_gives_the_client_a_clear_error() {
    let _panics = wirelab_test_support::panics::no_panics();
    // A plain HTTP/2 server that never sends SETTINGS_ENABLE_CONNECT_PROTOCOL.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(sock), svc)
            .await;
    });
    let mut cfg = ClientConfig::new(addr);
    cfg.timeouts.handshake = Duration::from_millis(300);
    let e = tokio::time::timeout(BOUND, H2wsClient::connect(&cfg))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Protocol(m) if m.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL")),
        "{e}"
    );
}

#[tokio::test]
async fn a_stream_reset_mid_message_leaves_the_others_serving() {
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server().await;
    let mut s = h2(addr).await;
    // Two WebSockets on one connection.
    let mut a = send(&mut s, connect(addr, "websocket", Some("13"))).await;
    let mut b = send(&mut s, connect(addr, "websocket", Some("13"))).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let mut a = TokioIo::new(hyper::upgrade::on(&mut a).await.unwrap());
    let b = TokioIo::new(hyper::upgrade::on(&mut b).await.unwrap());
    // A: the first 10 bytes of a frame announcing 64 masked bytes, then the stream is dropped
    // without END_STREAM, which resets it.
    a.write_all(&[0x82, 0x80 | 64, 1, 2, 3, 4, 0, 0, 0, 0])
        .await
        .unwrap();
    a.flush().await.unwrap();
    drop(a);
    // B still echoes.
    let mut ws = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
    let m = codec::encode(0, 7, 0, Kind::Echo, 64).unwrap();
    ws.send(Message::Binary(m.clone())).await.unwrap();
    let back = tokio::time::timeout(BOUND, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::Binary(m));
    // And the connection still takes new WebSockets.
    let c = send(&mut s, connect(addr, "websocket", Some("13"))).await;
    assert_eq!(c.status(), StatusCode::OK);
}

/// Over HTTP/2, `GET /` is the browser page: a page loaded there opens its WebSockets as
/// streams of the same connection (RFC 8441).
#[tokio::test]
async fn the_browser_page_is_served_at_slash() {
    use http_body_util::BodyExt;
    let _panics = wirelab_test_support::panics::no_panics();
    let addr = server().await;
    let mut s = h2(addr).await;
    let req = Request::builder()
        .uri(format!("http://127.0.0.1:{}/", addr.port()))
        .body(Empty::new())
        .unwrap();
    let resp = send(&mut s, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let body = tokio::time::timeout(BOUND, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("const SERVER = \"h2ws\";"));
}
