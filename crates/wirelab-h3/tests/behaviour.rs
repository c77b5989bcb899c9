//! HTTP/3 behaviour beyond the conformance module: the header-size limit, GOAWAY on shutdown
//! with in-flight requests finishing, 0-RTT. Every wait is bounded; ports come from the OS.

use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Method, Request, StatusCode};
use tokio::task::JoinHandle;
use wirelab_core::codec::{self, Kind};
use wirelab_core::tls::ALPN_H3;
use wirelab_core::{Channel, Client, Mode};
use wirelab_h3::{H3Client, H3Server};
use wirelab_quinn::QuicConnector;

const BOUND: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    wirelab_test_support::within(what, BOUND, f).await
}

/// The served server and the client TLS that trusts it (`wirelab_test_support::TlsLab`).
struct Lab(wirelab_test_support::TlsLab);

impl std::ops::Deref for Lab {
    type Target = wirelab_test_support::TlsLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Lab {
    async fn start() -> Self {
        Self(wirelab_test_support::TlsLab::start::<H3Server>(ALPN_H3, |_| {}).await)
    }

    /// A raw h3 connection whose driver the caller polls (or not).
    async fn raw(
        &self,
    ) -> (
        QuicConnector,
        h3::client::Connection<h3_quinn::Connection, Bytes>,
        h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    ) {
        let connector = QuicConnector::new(&self.client(), ALPN_H3, 8).unwrap();
        let (conn, _) = within("connect", connector.connect()).await.unwrap();
        let (driver, sender) = within(
            "h3 set-up",
            h3::client::builder().build::<_, _, Bytes>(h3_quinn::Connection::new(conn)),
        )
        .await
        .unwrap();
        (connector, driver, sender)
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

fn drive(mut driver: h3::client::Connection<h3_quinn::Connection, Bytes>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    })
}

async fn read_body<S: h3::quic::RecvStream>(
    s: &mut h3::client::RequestStream<S, Bytes>,
) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(mut b) = within("body", s.recv_data()).await.unwrap() {
        while b.has_remaining() {
            let c = b.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            b.advance(n);
        }
    }
    out
}

#[tokio::test]
async fn a_header_section_over_16k_is_answered_431() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start().await;
    let (connector, driver, mut sender) = lab.raw().await;
    // The driver is not polled yet, so the client has not read the server's SETTINGS and does
    // not hold itself to the server's limit: the oversized request goes out.
    let req = Request::builder()
        .method(Method::POST)
        .uri(lab.url("/echo"))
        .header("x-big", "a".repeat(20 << 10))
        .body(())
        .unwrap();
    let mut s = within("send", sender.send_request(req)).await.unwrap();
    let _driver = drive(driver);
    let _ = s.finish().await;
    let resp = within("response", s.recv_response()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // The connection still serves a normal request.
    let mut s = sender
        .send_request(Request::post(lab.url("/echo")).body(()).unwrap())
        .await
        .unwrap();
    s.send_data(Bytes::from_static(b"still here"))
        .await
        .unwrap();
    s.finish().await.unwrap();
    assert_eq!(
        within("response", s.recv_response())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(read_body(&mut s).await, b"still here");
    drop(sender);
    connector.close(BOUND).await;
    lab.stop.cancel();
    within("server shutdown", lab.0.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_sends_goaway_and_lets_accepted_requests_finish() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start().await;
    let (connector, driver, mut sender) = lab.raw().await;
    let _driver = drive(driver);
    // Request A: headers and half of the body.
    let mut a = sender
        .send_request(Request::post(lab.url("/echo")).body(()).unwrap())
        .await
        .unwrap();
    a.send_data(Bytes::from_static(b"first half, "))
        .await
        .unwrap();
    // Request B, complete. The server accepts request streams in order, so once B is answered,
    // A (the lower stream id) has been accepted too.
    let mut b = sender
        .send_request(Request::post(lab.url("/echo")).body(()).unwrap())
        .await
        .unwrap();
    b.send_data(Bytes::from_static(b"b")).await.unwrap();
    b.finish().await.unwrap();
    assert_eq!(within("B", b.recv_response()).await.unwrap().status(), 200);
    assert_eq!(read_body(&mut b).await, b"b");
    lab.stop.cancel();
    // A finishes after the shutdown began and is answered in full.
    a.send_data(Bytes::from_static(b"second half"))
        .await
        .unwrap();
    a.finish().await.unwrap();
    assert_eq!(within("A", a.recv_response()).await.unwrap().status(), 200);
    assert_eq!(read_body(&mut a).await, b"first half, second half");
    // After the GOAWAY no new request is served.
    let late = async {
        let mut c = sender
            .send_request(Request::post(lab.url("/echo")).body(()).unwrap())
            .await?;
        c.finish().await?;
        c.recv_response().await
    };
    assert!(
        within("late request", late).await.is_err(),
        "a request after GOAWAY was served"
    );
    within("server shutdown", lab.0.task)
        .await
        .unwrap()
        .unwrap();
    drop(sender);
    connector.close(BOUND).await;
}

#[tokio::test]
async fn zero_rtt_resumes_in_both_modes() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start().await;
    for mode in [Mode::Rr, Mode::Duplex] {
        let mut cfg = lab.client();
        cfg.mode = mode;
        for zero_rtt in [false, true] {
            cfg.zero_rtt = zero_rtt;
            let mut c = within("connect", H3Client::connect(&cfg)).await.unwrap();
            let mut ch = c.channels().remove(0);
            let m = codec::encode(0, 1, 1, Kind::Echo, 100).unwrap();
            assert!(within("echo", ch.echo(m.clone())).await.unwrap() == m);
            let early = within("early data", c.early_data()).await;
            // The first session of all leaves a ticket; every later one resumes.
            assert_eq!(early, zero_rtt.then_some(true), "{mode:?} 0-RTT {zero_rtt}");
            drop(ch);
            within("close", c.close()).await.unwrap();
        }
    }
    lab.stop.cancel();
    within("server shutdown", lab.0.task)
        .await
        .unwrap()
        .unwrap();
}

/// A server that refuses the client's early data (a second instance with the same
/// certificate but its own session cache): the client reports `Some(false)` and its echoes,
/// sent in 0-RTT, still arrive, in both modes. quinn discards every stream opened in 0-RTT,
/// HTTP/3's control and QPACK streams included; the client builds HTTP/3 again on the now
/// 1-RTT connection and sends every request that had no answer again: here two logical
/// streams on one connection, each with three echoes in flight (`rr`: six `POST /echo`
/// requests; `duplex`: the two `POST /duplex` requests). Before that fix the first echo
/// failed with "0-RTT rejected".
#[tokio::test]
async fn early_data_a_server_refuses_is_reported_and_the_echo_still_arrives() {
    let _panics = wirelab_test_support::panics::no_panics();
    let tls = wirelab_test_support::test_tls(ALPN_H3);
    let serve = |tls: std::sync::Arc<rustls::ServerConfig>| async move {
        let mut cfg = wirelab_test_support::local();
        cfg.tls = Some(tls);
        wirelab_test_support::start::<H3Server>(cfg).await
    };
    let a = serve(tls.server.clone()).await;
    for mode in [Mode::Rr, Mode::Duplex] {
        // B: the same certificate, its own rustls server config, so its own session cache.
        let b = serve(tls.identity.server_config(&[ALPN_H3]).unwrap()).await;
        for (addr, zero_rtt, want) in [
            (a.addr, false, None),
            (a.addr, true, Some(true)),
            (b.addr, true, Some(false)),
        ] {
            let mut cfg = wirelab_core::ClientConfig::new(addr);
            cfg.tls = Some(tls.client.clone());
            cfg.mode = mode;
            cfg.zero_rtt = zero_rtt;
            cfg.streams = 2;
            let mut c = within("connect", H3Client::connect(&cfg)).await.unwrap();
            let mut chs = c.channels();
            let msgs = |id: u32| -> Vec<Bytes> {
                (1..=3)
                    .map(|seq| codec::encode(id, seq, seq, Kind::Echo, 100).unwrap())
                    .collect()
            };
            for ch in &mut chs {
                for m in msgs(ch.id()) {
                    within("send", ch.send(m)).await.unwrap();
                }
            }
            for ch in &mut chs {
                for m in msgs(ch.id()) {
                    let back = within("echo", ch.recv()).await;
                    assert!(
                        back.as_ref().ok() == Some(&m),
                        "{mode:?} {want:?} stream {}: {back:?}",
                        ch.id()
                    );
                }
            }
            assert_eq!(within("early data", c.early_data()).await, want, "{mode:?}");
            drop(chs);
            within("close", c.close()).await.unwrap();
        }
        b.stop.cancel();
        within("server B shutdown", b.task).await.unwrap().unwrap();
    }
    a.stop.cancel();
    within("server A shutdown", a.task).await.unwrap().unwrap();
}
