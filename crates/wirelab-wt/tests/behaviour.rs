//! WebTransport behaviour beyond the conformance module: datagram echo, the session path, bad
//! input (malformed or foreign CONNECTs, streams past the limit, an oversized message). Every
//! wait is bounded; ports come from the OS.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use http::{Method, Request, StatusCode};
use wirelab_core::codec::{self, Kind};
use wirelab_core::tls::ALPN_H3;
use wirelab_core::{Channel, Client, Error};
use wirelab_quinn::QuicConnector;
use wirelab_wt::{WtClient, WtServer};

const BOUND: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    wirelab_test_support::within(what, BOUND, f).await
}

async fn lab(tune: impl FnOnce(&mut wirelab_core::ServerConfig)) -> wirelab_test_support::TlsLab {
    wirelab_test_support::TlsLab::start::<WtServer>(ALPN_H3, tune).await
}

fn msg(stream: u32, seq: u64, size: usize) -> Bytes {
    codec::encode(stream, seq, seq, Kind::Echo, size).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_are_echoed() {
    let lab = lab(|_| {}).await;
    let client = within("connect", WtClient::connect(&lab.client()))
        .await
        .unwrap();
    let d = client.datagrams().expect("a session");
    let max = d.max_size().expect("the server accepts datagrams");
    assert!(max >= 1000, "max datagram size {max}");
    // Unreliable even on loopback in principle: each is sent until its echo arrives (bounded).
    for i in 0..20u8 {
        let payload = vec![i; 100];
        let mut back = None;
        for _ in 0..5 {
            d.send(&payload).unwrap();
            if let Ok(r) = tokio::time::timeout(Duration::from_secs(2), d.recv()).await {
                back = Some(r.unwrap());
                break;
            }
        }
        let back = back.expect("an echo within 5 tries");
        assert_eq!(&back[..], &payload[..], "echo {i}");
    }
    // Too large for any datagram: refused at once, nothing sent.
    assert!(d.send(&vec![0; 64 << 10]).is_err());
    within("close", client.close()).await.unwrap();
    lab.stop(BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_streams_share_one_session() {
    let lab = lab(|_| {}).await;
    let mut cfg = lab.client();
    cfg.streams = 8;
    let mut client = within("connect", WtClient::connect(&cfg)).await.unwrap();
    let tasks: Vec<_> = client
        .channels()
        .into_iter()
        .map(|mut ch| {
            tokio::spawn(async move {
                for seq in 0..50 {
                    let m = msg(ch.id(), seq, 64);
                    assert_eq!(ch.echo(m.clone()).await.unwrap(), m);
                }
            })
        })
        .collect();
    for t in tasks {
        within("echoes", t).await.unwrap();
    }
    within("close", client.close()).await.unwrap();
    lab.stop(BOUND).await;
}

/// A raw HTTP/3 client (hyperium h3) on our QUIC connector, to send CONNECTs wtransport's client
/// never would.
async fn raw_h3(
    lab: &wirelab_test_support::TlsLab,
) -> (
    QuicConnector,
    tokio::task::JoinHandle<()>,
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
) {
    let connector = QuicConnector::new(&lab.client(), ALPN_H3, 8).unwrap();
    let (conn, _) = within("connect", connector.connect()).await.unwrap();
    let (mut driver, sender) = within(
        "h3 set-up",
        h3::client::builder()
            .enable_extended_connect(true)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(conn)),
    )
    .await
    .unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (connector, drive, sender)
}

/// Sends `req` and returns the response status, or the error text if there is none.
async fn status_of(
    sender: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    req: Request<()>,
) -> Result<StatusCode, String> {
    let mut s = within("send request", sender.send_request(req))
        .await
        .map_err(|e| e.to_string())?;
    within("response", s.recv_response())
        .await
        .map(|r| r.status())
        .map_err(|e| e.to_string())
}

fn connect(
    lab: &wirelab_test_support::TlsLab,
    path: &str,
    proto: Option<h3::ext::Protocol>,
) -> Request<()> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost:{}{path}", lab.addr.port()))
        .body(())
        .unwrap();
    if let Some(p) = proto {
        req.extensions_mut().insert(p);
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_are_answered_by_path_and_protocol() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = lab(|_| {}).await;

    // A WebTransport CONNECT to the session path: 200.
    let (c, drive, mut sender) = raw_h3(&lab).await;
    let ok = status_of(
        &mut sender,
        connect(&lab, "/wt", Some(h3::ext::Protocol::WEB_TRANSPORT)),
    )
    .await;
    assert_eq!(ok, Ok(StatusCode::OK));
    drop(sender);
    drive.abort();
    c.close(BOUND).await;

    // Another path: 404 (one session per connection, so a new one).
    let (c, drive, mut sender) = raw_h3(&lab).await;
    let nf = status_of(
        &mut sender,
        connect(&lab, "/nope", Some(h3::ext::Protocol::WEB_TRANSPORT)),
    )
    .await;
    assert_eq!(nf, Ok(StatusCode::NOT_FOUND));
    drop(sender);
    drive.abort();
    c.close(BOUND).await;

    // Malformed for WebTransport: another :protocol (connect-udp), or a plain CONNECT without
    // :protocol/:scheme/:path. RFC 9114 §4.1.2 makes a malformed request a stream error
    // (H3_MESSAGE_ERROR), not a status: wtransport stops the request stream with it and ends
    // the stream without response headers, which hyperium's h3 client reports as
    // H3_FRAME_UNEXPECTED "Stream finished without receiving response headers".
    for (what, proto) in [
        ("connect-udp", Some(h3::ext::Protocol::CONNECT_UDP)),
        ("no :protocol", None),
    ] {
        let (c, drive, mut sender) = raw_h3(&lab).await;
        let mut req = connect(&lab, "/wt", proto);
        if proto.is_none() {
            // A classic CONNECT names only the authority.
            *req.uri_mut() = format!("localhost:{}", lab.addr.port()).parse().unwrap();
        }
        let r = status_of(&mut sender, req).await;
        let e = r.expect_err(&format!("{what}: a malformed CONNECT gets no status"));
        assert!(
            e.contains("without receiving response headers") || e.contains("H3_MESSAGE_ERROR"),
            "{what}: {e}"
        );
        drop(sender);
        drive.abort();
        c.close(BOUND).await;
    }

    // The server still serves sessions.
    let mut client = within("connect", WtClient::connect(&lab.client()))
        .await
        .unwrap();
    let mut ch = client.channels().remove(0);
    within("echo", ch.echo(msg(0, 1, 64))).await.unwrap();
    drop(ch);
    within("close", client.close()).await.unwrap();
    lab.stop(BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wtransport_client_on_another_path_is_rejected() {
    let lab = lab(|_| {}).await;
    // Our client always asks for /wt; wtransport's own client asks for another path.
    let mut cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_custom_tls((*lab.client_tls).clone())
        .build();
    let _ = &mut cfg;
    let ep = wtransport::Endpoint::client(cfg).unwrap();
    let r = within(
        "connect",
        ep.connect(format!("https://127.0.0.1:{}/other", lab.addr.port())),
    )
    .await;
    assert!(
        matches!(r, Err(wtransport::error::ConnectingError::SessionRejected)),
        "{:?}",
        r.map(|_| ())
    );
    lab.stop(BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_wait_for_credit() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = lab(|c| c.quic.max_concurrent_streams = 4).await;
    let mut cfg = lab.client();
    cfg.quic.max_concurrent_streams = 4;
    // Our client refuses a session it knows cannot open its streams at once.
    cfg.streams = 5;
    let e = WtClient::connect(&cfg).await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");

    // wtransport's own client opens a fifth stream past the server's limit of four: it waits
    // for credit, the four keep working, and it opens once one of them is closed.
    let wcfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_custom_tls((*lab.client_tls).clone())
        .build();
    let ep = wtransport::Endpoint::client(wcfg).unwrap();
    let session = within(
        "session",
        ep.connect(format!("https://127.0.0.1:{}/wt", lab.addr.port())),
    )
    .await
    .unwrap();
    let mut streams = Vec::new();
    for _ in 0..4 {
        let s = within("open", async { session.open_bi().await.unwrap().await })
            .await
            .unwrap();
        streams.push(s);
    }
    let session = std::sync::Arc::new(session);
    let fifth = {
        let s = session.clone();
        tokio::spawn(async move { s.open_bi().await.unwrap().await.unwrap() })
    };
    for (i, (send, recv)) in streams.iter_mut().enumerate() {
        let m = msg(i as u32, 1, 64);
        let mut framed = BytesMut::new();
        framed.put_u32(m.len() as u32);
        framed.extend_from_slice(&m);
        within("write", send.write_all(&framed)).await.unwrap();
        let mut back = vec![0u8; framed.len()];
        within("read", recv.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, framed.to_vec());
    }
    // Every credit is in use (4 streams + the CONNECT stream): the fifth cannot have opened.
    let mut fifth = fifth;
    assert!(
        (&mut fifth).now_or_never().is_none(),
        "opened past the limit"
    );
    // Close one stream both ways; the server's answer ends, and it grants one more.
    let (mut send, recv) = streams.remove(0);
    within("finish", send.finish()).await.unwrap();
    drop(recv);
    let (mut send5, mut recv5) = within("fifth opens", fifth).await.unwrap();
    let m = msg(5, 1, 64);
    let mut framed = BytesMut::new();
    framed.put_u32(m.len() as u32);
    framed.extend_from_slice(&m);
    within("write", send5.write_all(&framed)).await.unwrap();
    let mut back = vec![0u8; framed.len()];
    within("read", recv5.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, framed.to_vec());
    drop((send5, recv5, streams));
    session.close(wtransport::VarInt::from_u32(0), b"");
    lab.stop(BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_ends_only_its_stream() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = lab(|c| c.limits.max_message = 1024).await;
    let mut cfg = lab.client();
    cfg.streams = 2;
    let mut client = within("connect", WtClient::connect(&cfg)).await.unwrap();
    let mut chans = client.channels();
    // The client's own limit is the default 16 MiB, so it sends the 2 KiB message.
    let big = msg(0, 1, 2048);
    let r = within("oversized", async {
        chans[0].send(big).await?;
        chans[0].recv().await
    })
    .await;
    assert!(r.is_err(), "an oversized message was answered");
    // The other stream of the session is unaffected.
    let m = msg(1, 1, 512);
    assert_eq!(within("echo", chans[1].echo(m.clone())).await.unwrap(), m);
    drop(chans);
    within("close", client.close()).await.unwrap();
    lab.stop(BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_config_is_a_clear_error() {
    let lab = lab(|_| {}).await;
    let mut cfg = lab.client();
    cfg.tls = None;
    let e = WtClient::connect(&cfg).await.unwrap_err();
    assert!(
        matches!(e, Error::Config(ref m) if m.contains("TLS")),
        "{e:?}"
    );
    lab.stop(BOUND).await;
}
