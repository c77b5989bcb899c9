//! HTTP/3 server shutdown with requests in flight: every request the server accepted (stream id
//! below the final GOAWAY's) is answered in full, every other one is refused, and the client is
//! told which by the GOAWAY (RFC 9114 §5.2). The test's h3 client reads the server's control
//! stream through a tap to learn the GOAWAY id. Every wait is bounded; ports come from the OS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId};
use http::Request;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use wirelab_core::codec::{self, Kind};
use wirelab_core::tls::ALPN_H3;
use wirelab_h3::H3Server;
use wirelab_quinn::{quinn, QuicConnector};

const BOUND: Duration = Duration::from_secs(10);
/// The largest client-initiated bidirectional stream id: the first GOAWAY's.
const MAX_REQUEST_ID: u64 = (1 << 62) - 4;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    wirelab_test_support::within(what, BOUND, f).await
}

// ---- a tap on the server's control stream -------------------------------------------------

/// h3-quinn, with the server's unidirectional streams read through [`TapRecv`].
struct Tap {
    inner: h3_quinn::Connection,
    goaway: watch::Sender<Option<u64>>,
}

impl quic::OpenStreams<Bytes> for Tap {
    type BidiStream = h3_quinn::BidiStream<Bytes>;
    type SendStream = h3_quinn::SendStream<Bytes>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        quic::OpenStreams::<Bytes>::poll_open_bidi(&mut self.inner, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        quic::OpenStreams::<Bytes>::poll_open_send(&mut self.inner, cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.inner, code, reason)
    }
}

impl quic::Connection<Bytes> for Tap {
    type RecvStream = TapRecv;
    type OpenStreams = h3_quinn::OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<TapRecv, ConnectionErrorIncoming>> {
        quic::Connection::<Bytes>::poll_accept_recv(&mut self.inner, cx).map(|r| {
            r.map(|inner| TapRecv {
                inner,
                seen: Vec::new(),
                goaway: self.goaway.clone(),
            })
        })
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        quic::Connection::<Bytes>::poll_accept_bidi(&mut self.inner, cx)
    }

    fn opener(&self) -> Self::OpenStreams {
        quic::Connection::<Bytes>::opener(&self.inner)
    }
}

struct TapRecv {
    inner: h3_quinn::RecvStream,
    seen: Vec<u8>,
    goaway: watch::Sender<Option<u64>>,
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    if b.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for x in &b[1..len] {
        v = (v << 8) | u64::from(*x);
    }
    Some((v, len))
}

/// The id of the last complete GOAWAY frame on a control stream (type 0x00), if any.
fn last_goaway(stream: &[u8]) -> Option<u64> {
    let (ty, mut at) = varint(stream)?;
    if ty != 0x00 {
        return None;
    }
    let mut found = None;
    while let Some((frame, n)) = varint(&stream[at..]) {
        let Some((len, m)) = varint(&stream[at + n..]) else {
            break;
        };
        let start = at + n + m;
        let end = start + len as usize;
        if end > stream.len() {
            break;
        }
        if frame == 0x07 {
            found = varint(&stream[start..end]).map(|(id, _)| id);
        }
        at = end;
    }
    found
}

impl quic::RecvStream for TapRecv {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let r = self.inner.poll_data(cx);
        if let Poll::Ready(Ok(Some(b))) = &r {
            self.seen.extend_from_slice(b);
            if let Some(id) = last_goaway(&self.seen) {
                self.goaway.send_replace(Some(id));
            }
        }
        r
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

// ---- the lab -------------------------------------------------------------------------------

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// The served server and the client TLS that trusts it (`wirelab_test_support::TlsLab`).
struct Lab(wirelab_test_support::TlsLab);

impl std::ops::Deref for Lab {
    type Target = wirelab_test_support::TlsLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

struct H3 {
    _connector: QuicConnector,
    conn: quinn::Connection,
    sender: Sender,
    goaway: watch::Receiver<Option<u64>>,
    _driver: JoinHandle<()>,
}

impl Lab {
    async fn start() -> Self {
        Self(
            wirelab_test_support::TlsLab::start::<H3Server>(ALPN_H3, |c| {
                c.timeouts.shutdown_grace = Duration::from_secs(5)
            })
            .await,
        )
    }

    async fn connect(&self) -> H3 {
        let c = self.client();
        let connector = QuicConnector::new(&c, ALPN_H3, 8).unwrap();
        let (conn, _) = within("connect", connector.connect()).await.unwrap();
        let (tx, goaway) = watch::channel(None);
        let tap = Tap {
            inner: h3_quinn::Connection::new(conn.clone()),
            goaway: tx,
        };
        let (mut driver, sender) =
            within("h3 set-up", h3::client::builder().build::<_, _, Bytes>(tap))
                .await
                .unwrap();
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        H3 {
            _connector: connector,
            conn,
            sender,
            goaway,
            _driver: driver,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn stopped(self) {
        self.0.stopped(BOUND).await;
    }
}

impl H3 {
    /// Waits for the final GOAWAY (the first one may name the largest id).
    async fn final_goaway(&mut self) -> u64 {
        let g = within(
            "final GOAWAY",
            self.goaway
                .wait_for(|g| g.is_some_and(|id| id < MAX_REQUEST_ID)),
        )
        .await
        .expect("the connection ended without a final GOAWAY");
        g.unwrap()
    }
}

type ClientStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn read_body(s: &mut ClientStream) -> Result<Vec<u8>, h3::error::StreamError> {
    let mut out = Vec::new();
    while let Some(mut b) = s.recv_data().await? {
        while b.has_remaining() {
            let c = b.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            b.advance(n);
        }
    }
    Ok(out)
}

/// Finishes a request (if `rest` is given, sends it first) and reads the answer: the body of a
/// 200, or `None` if the request failed.
async fn answer(s: &mut ClientStream, rest: Option<&[u8]>) -> Option<Vec<u8>> {
    if let Some(rest) = rest {
        s.send_data(Bytes::copy_from_slice(rest)).await.ok()?;
    }
    s.finish().await.ok()?;
    let resp = s.recv_response().await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    read_body(s).await.ok()
}

// ---- the tests -----------------------------------------------------------------------------

#[tokio::test]
async fn requests_in_flight_at_shutdown_are_answered_or_refused_by_the_goaway_id() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start().await;
    let mut h3 = lab.connect().await;
    let url = lab.url("/echo");
    // Eight requests the server has accepted but cannot answer yet: half of each body sent.
    let mut open = Vec::new();
    for i in 0..8 {
        let mut s = h3
            .sender
            .send_request(Request::post(&url).body(()).unwrap())
            .await
            .unwrap();
        s.send_data(Bytes::from(format!("open {i}, first half; ")))
            .await
            .unwrap();
        open.push(s);
    }
    // Request streams are accepted in order: once this one is answered, all eight are accepted.
    let mut marker = h3
        .sender
        .send_request(Request::post(&url).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        within("marker", answer(&mut marker, Some(b"marker"))).await,
        Some(b"marker".to_vec())
    );
    // Eight more, complete, sent just before the shutdown: in flight, unanswered.
    let mut racing = Vec::new();
    for i in 0..8 {
        let mut s = h3
            .sender
            .send_request(Request::post(&url).body(()).unwrap())
            .await
            .unwrap();
        s.send_data(Bytes::from(format!("racing {i}")))
            .await
            .unwrap();
        s.finish().await.unwrap();
        racing.push(s);
    }
    lab.stop.cancel();
    let goaway = h3.final_goaway().await;
    // The accepted ones finish after the shutdown began and are answered in full.
    for (i, s) in open.iter_mut().enumerate() {
        let id = s.id().into_inner();
        assert!(
            id < goaway,
            "accepted request {id} at or above GOAWAY {goaway}"
        );
        let got = within("accepted request", answer(s, Some(b"second half"))).await;
        assert_eq!(
            got.as_deref(),
            Some(format!("open {i}, first half; second half").as_bytes()),
            "accepted request {id} (GOAWAY {goaway})"
        );
    }
    // The racing ones: answered below the GOAWAY id, refused at or above it.
    let mut answered = 0;
    for (i, s) in racing.iter_mut().enumerate() {
        let id = s.id().into_inner();
        let resp = within("racing request", async {
            let resp = s.recv_response().await.ok()?;
            read_body(s).await.ok().filter(|_| resp.status() == 200)
        })
        .await;
        if id < goaway {
            assert_eq!(
                resp.as_deref(),
                Some(format!("racing {i}").as_bytes()),
                "request {id} below GOAWAY {goaway} not answered"
            );
            answered += 1;
        } else {
            assert!(
                resp.is_none(),
                "request {id} at or above GOAWAY {goaway} was served"
            );
        }
    }
    eprintln!("GOAWAY {goaway}: {answered} of 8 racing requests accepted and answered");
    // A request after the GOAWAY is not served.
    let late = async {
        let mut s = h3
            .sender
            .send_request(Request::post(&url).body(()).unwrap())
            .await
            .ok()?;
        answer(&mut s, Some(b"late")).await
    };
    assert_eq!(within("late request", late).await, None);
    let reason = within("close", h3.conn.closed()).await;
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), 0x100, "H3_NO_ERROR")
        }
        other => panic!("closed with {other:?}"),
    }
    lab.stopped().await;
}

#[tokio::test]
async fn a_duplex_request_answers_its_messages_in_flight_then_ends_cleanly() {
    let _panics = wirelab_test_support::panics::no_panics();
    let lab = Lab::start().await;
    let mut h3 = lab.connect().await;
    let mut s = h3
        .sender
        .send_request(Request::post(lab.url("/duplex")).body(()).unwrap())
        .await
        .unwrap();
    let first = codec::encode(0, 0, 0, Kind::Echo, 64).unwrap();
    s.send_data(first.clone()).await.unwrap();
    assert_eq!(
        within("response", s.recv_response())
            .await
            .unwrap()
            .status(),
        200
    );
    // Sixteen messages sent, none read, then the shutdown.
    let mut sent = vec![first];
    for seq in 1..=16u64 {
        let m = codec::encode(0, seq, seq, Kind::Echo, 256).unwrap();
        s.send_data(m.clone()).await.unwrap();
        sent.push(m);
    }
    lab.stop.cancel();
    let body = within("response body", read_body(&mut s))
        .await
        .expect("the response must end cleanly, not be reset");
    let expected: Vec<u8> = sent.iter().flat_map(|m| m.to_vec()).collect();
    assert_eq!(body.len(), expected.len(), "messages answered");
    assert!(body == expected, "answers differ from the messages sent");
    // The server stopped reading the request: a further message is refused.
    let refused = within("send after the end", async {
        let m = codec::encode(0, 99, 99, Kind::Echo, 64).unwrap();
        for _ in 0..100 {
            s.send_data(m.clone()).await?;
        }
        Ok::<_, h3::error::StreamError>(())
    })
    .await;
    assert!(
        refused.is_err(),
        "the server kept reading after its shutdown"
    );
    let _ = h3.final_goaway().await;
    let reason = within("close", h3.conn.closed()).await;
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code.into_inner() == 0x100),
        "{reason:?}"
    );
    lab.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_shutdowns_under_load_lose_no_accepted_request() {
    let _panics = wirelab_test_support::panics::no_panics();
    let (mut total, mut answered, mut refused, mut lost) = (0, 0, 0, 0);
    for round in 0..10 {
        let lab = Lab::start().await;
        let mut h3 = lab.connect().await;
        let url = lab.url("/echo");
        let done = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(Notify::new());
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (mut sender, url) = (h3.sender.clone(), url.clone());
                let (done, busy) = (done.clone(), busy.clone());
                tokio::spawn(async move {
                    // (stream id or None if never opened, answered correctly)
                    let mut outcomes = Vec::new();
                    for seq in 0.. {
                        let body = format!("round {round} task {t} seq {seq}");
                        let Ok(mut s) = sender
                            .send_request(Request::post(&url).body(()).unwrap())
                            .await
                        else {
                            outcomes.push((None, false));
                            break;
                        };
                        let id = s.id().into_inner();
                        let ok = answer(&mut s, Some(body.as_bytes())).await.as_deref()
                            == Some(body.as_bytes());
                        outcomes.push((Some(id), ok));
                        if !ok {
                            break;
                        }
                        if done.fetch_add(1, Ordering::SeqCst) == 100 {
                            busy.notify_one();
                        }
                    }
                    outcomes
                })
            })
            .collect();
        within("clients busy", busy.notified()).await;
        lab.stop.cancel();
        let goaway = h3.final_goaway().await;
        for t in tasks {
            for (id, ok) in within("client task", t).await.unwrap() {
                total += 1;
                match (id, ok) {
                    (_, true) => answered += 1,
                    (Some(id), false) if id < goaway => {
                        eprintln!("round {round}: request {id} below GOAWAY {goaway} lost");
                        lost += 1;
                    }
                    _ => refused += 1,
                }
            }
        }
        lab.stopped().await;
    }
    eprintln!("{total} requests: {answered} answered, {refused} refused, {lost} lost");
    assert_eq!(lost, 0, "accepted requests lost across 10 shutdowns");
}
