//! HTTP/3 connection set-up: a ClientHello in two Initial packets processed apart (what
//! Chromium sends) is served, and a connection whose HTTP/3 set-up cannot finish does not hold
//! up the server's shutdown. Every wait is bounded; ports come from the OS.

#[path = "../../wirelab-quinn/tests/support/split_initial.rs"]
mod split_initial;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::Request;
use split_initial::{client, split_hello_tls, Relay};
use wirelab_core::tls::{client_config, Identity, Trust, ALPN_H3};
use wirelab_core::{CancellationToken, Server, ServerConfig};
use wirelab_h3::H3Server;
use wirelab_quinn::quinn;

const ROUNDS: usize = 30;
/// Per request: a normal one takes milliseconds on loopback.
const BOUND: Duration = Duration::from_secs(2);
/// The deliberate extra delay of the second Initial in the relay.
const HOLD: Duration = Duration::from_millis(30);

async fn echo_once(
    endpoint: &quinn::Endpoint,
    cc: quinn::ClientConfig,
    to: std::net::SocketAddr,
    body: &'static [u8],
) {
    let conn = endpoint
        .connect_with(cc, to, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut driver, mut sender) = h3::client::builder()
        .build::<_, _, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let url = format!("https://localhost:{}/echo", to.port());
    let mut s = sender
        .send_request(Request::post(url).body(()).unwrap())
        .await
        .unwrap();
    s.send_data(Bytes::from_static(body)).await.unwrap();
    s.finish().await.unwrap();
    assert_eq!(s.recv_response().await.unwrap().status(), 200);
    let mut got = Vec::new();
    while let Some(mut b) = s.recv_data().await.unwrap() {
        while b.has_remaining() {
            let c = b.chunk().to_vec();
            b.advance(c.len());
            got.extend(c);
        }
    }
    assert_eq!(got, body);
    conn.close(0x100u32.into(), b"done");
    drive.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_in_two_initials_processed_apart_is_answered() {
    let _panics = wirelab_test_support::panics::no_panics();
    let id = Identity::self_signed(&["localhost"]).unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.tls = Some(id.server_config(&[ALPN_H3]).unwrap());
    let server = H3Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.serve(stop.clone()));
    let relay = Relay::start(addr, HOLD).await;
    let base = client_config(&Trust::Certificates(vec![id.certificate()]), &[ALPN_H3]).unwrap();
    let tls = split_hello_tls(&base, ALPN_H3);
    let mut hung = 0;
    for _ in 0..ROUNDS {
        let (endpoint, cc) = client(tls.clone());
        if tokio::time::timeout(BOUND, echo_once(&endpoint, cc, relay.addr, b"hello"))
            .await
            .is_err()
        {
            hung += 1;
        }
        endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(BOUND, endpoint.wait_idle()).await;
    }
    let c = &relay.counts;
    assert_eq!(
        c.split_hellos.load(Ordering::SeqCst),
        ROUNDS,
        "ClientHellos in two Initials"
    );
    assert_eq!(
        c.held_until_answer.load(Ordering::SeqCst),
        ROUNDS,
        "second Initials released after the server's answer to the first"
    );
    assert_eq!(hung, 0, "{hung} of {ROUNDS} requests got no answer");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_connection_stuck_in_http3_set_up() {
    let _panics = wirelab_test_support::panics::no_panics();
    let id = Identity::self_signed(&["localhost"]).unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.tls = Some(id.server_config(&[ALPN_H3]).unwrap());
    let grace = Duration::from_secs(4);
    cfg.timeouts.shutdown_grace = grace;
    let server = H3Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.serve(stop.clone()));
    // A client that grants no unidirectional stream: the server cannot open its control
    // stream, so its HTTP/3 set-up waits (a hung connection, as far as shutdown is concerned).
    let tls =
        (*client_config(&Trust::Certificates(vec![id.certificate()]), &[ALPN_H3]).unwrap()).clone();
    let (endpoint, mut cc) = client(tls);
    let mut tc = quinn::TransportConfig::default();
    tc.max_concurrent_uni_streams(0u32.into());
    cc.transport_config(Arc::new(tc));
    let conn = tokio::time::timeout(BOUND, endpoint.connect_with(cc, addr, "localhost").unwrap())
        .await
        .unwrap()
        .unwrap();
    // Our handshake completing means the server has processed our ClientHello and handed the
    // connection to its HTTP/3 task, which now waits for stream credit that never comes.
    let started = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server shutdown")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < grace / 2,
        "shutdown took {took:?} with a connection stuck in set-up (grace {grace:?})"
    );
    // Told, not left to time out (before the server has the client's Finished, an application
    // close travels as a transport close with APPLICATION_ERROR, RFC 9000 §10.2.3).
    let reason = tokio::time::timeout(BOUND, conn.closed()).await.unwrap();
    assert!(
        !matches!(reason, quinn::ConnectionError::TimedOut),
        "{reason:?}"
    );
}
