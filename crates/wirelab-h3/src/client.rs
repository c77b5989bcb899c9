use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h3::client::{RequestStream, SendRequest};
use http::{HeaderValue, Method, Request, Response};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wirelab_core::codec::StreamRequest;
use wirelab_core::tls::ALPN_H3;
use wirelab_core::transport::stream_by_messages;
use wirelab_core::{Channel, Client, ClientConfig, Error, Mode, Received, Result, Sharing};
use wirelab_http::{check_status, collect_messages, read_messages, InOrder, STREAM_HEADER};
use wirelab_quinn::{QuicConnector, ZeroRtt};

use crate::body::{to_bytes, RecvBody};
use crate::server::UNI_STREAMS;

type Sender = SendRequest<h3_quinn::OpenStreams, Bytes>;
type Driver = h3::client::Connection<h3_quinn::Connection, Bytes>;
type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// One QUIC connection and the HTTP/3 connection on it.
///
/// A connection opened with early data builds HTTP/3 (its control and QPACK streams) in 0-RTT.
/// If the server rejects the early data, quinn discards every stream opened in 0-RTT, those
/// included, and numbers new streams from 0 again (RFC 9001 §4.6.2 leaves the client to send
/// again): the driver task then builds a second HTTP/3 connection on the same, now 1-RTT, QUIC
/// connection, and requests that got no answer on the first one are sent again on it (see
/// [`answered`]). The first HTTP/3 connection's driver is never polled before the server's
/// answer to the early data is known, so it cannot take the server's control stream (meant
/// for the second) nor close the QUIC connection; it is dropped before the second is built.
struct Link {
    /// Whether the QUIC connection was opened with early data.
    early: bool,
    /// The current HTTP/3 connection's sender with its generation (0: built first, 1: built
    /// again after a rejection); `None` once the client closes.
    sender: Mutex<Option<(u8, Sender)>>,
    progress: watch::Sender<Progress>,
}

/// What became of a link's early data.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// The server's answer to the early data is known (always, without early data).
    settled: bool,
    /// `Some(accepted)` once known, for a connection opened with early data.
    accepted: Option<bool>,
    /// HTTP/3 was built again after a rejection.
    rebuilt: bool,
    /// Requests in flight on the HTTP/3 connection built first (see [`FirstAttempt`]).
    first_attempts: usize,
}

/// A request in flight on a link's first HTTP/3 connection, counted while it runs.
///
/// quinn numbers the streams opened after a rejection from 0 again and keys the wakers of
/// blocked streams by number only: a discarded 0-RTT stream dropped late removes the waker of
/// the new stream with its number, whose task then never wakes. So a request is sent again
/// only once every request on the first connection has ended (they all fail at once on a
/// rejection: quinn wakes them) and dropped its streams.
struct FirstAttempt<'a>(&'a Link);

impl Drop for FirstAttempt<'_> {
    fn drop(&mut self) {
        self.0.progress.send_modify(|p| p.first_attempts -= 1);
    }
}

impl Link {
    fn new(early: bool, sender: Sender) -> Self {
        Self {
            early,
            sender: Mutex::new(Some((0, sender))),
            progress: watch::Sender::new(Progress {
                settled: !early,
                ..Progress::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u8, Sender)>> {
        self.sender.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current sender; with a guard if it belongs to an HTTP/3 connection built in 0-RTT
    /// (whose requests may have to be sent again).
    fn current(&self) -> Result<(Option<FirstAttempt<'_>>, Sender)> {
        let cur = self.lock();
        let Some((generation, sender)) = &*cur else {
            return Err(Error::ConnectionClosed);
        };
        let first = (self.early && *generation == 0).then(|| {
            self.progress.send_modify(|p| p.first_attempts += 1);
            FirstAttempt(self)
        });
        Ok((first, sender.clone()))
    }

    /// Waits until the server's answer to the early data is known.
    async fn settled(&self) -> Progress {
        let mut rx = self.progress.subscribe();
        let p = rx.wait_for(|p| p.settled).await.map(|p| *p);
        p.unwrap_or_default()
    }

    /// After a request on the first HTTP/3 connection failed: the rebuilt connection's sender
    /// if the server rejected the early data (once no request on the first connection is left,
    /// see [`FirstAttempt`]), else `None` (the failure stands).
    async fn rebuilt_sender(&self) -> Option<Sender> {
        let mut rx = self.progress.subscribe();
        let p = rx
            .wait_for(|p| p.settled && (!p.rebuilt || p.first_attempts == 0))
            .await
            .ok()?;
        if !p.rebuilt {
            return None;
        }
        drop(p);
        self.current().ok().map(|(_, s)| s)
    }

    /// Installs the sender of the HTTP/3 connection built again; false if the client closed.
    fn replace(&self, sender: Sender) -> bool {
        let mut cur = self.lock();
        if cur.is_none() {
            return false;
        }
        *cur = Some((1, sender));
        true
    }

    fn settle(&self, accepted: bool, rebuilt: bool) {
        self.progress.send_modify(|p| {
            p.settled = true;
            p.accepted = Some(accepted);
            p.rebuilt = rebuilt;
        });
    }

    /// Drops the link's sender: once no request holds one, h3 closes the connection with
    /// `H3_NO_ERROR`.
    fn release(&self) {
        let sender = self.lock().take();
        drop(sender);
    }
}

/// An HTTP/3 client connection on `conn`.
async fn build(conn: quinn::Connection, max_field: u64) -> Result<(Driver, Sender)> {
    h3::client::builder()
        .max_field_section_size(max_field)
        .build::<_, _, Bytes>(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| Error::Protocol(format!("HTTP/3 set-up: {e}")))
}

/// Drives a link's HTTP/3 connection. With early data, first waits for the server's answer to
/// it and, on a rejection, builds HTTP/3 again on the same QUIC connection (see [`Link`]).
/// Holds the link weakly: a client dropped without `close` still drops its senders, and h3
/// then closes the connection.
async fn drive(
    link: Weak<Link>,
    conn: quinn::Connection,
    driver: Driver,
    mut zero_rtt: ZeroRtt,
    max_field: u64,
) {
    let mut driver = driver;
    if zero_rtt.is_early() {
        let accepted = zero_rtt.outcome().await == Some(true);
        let mut rebuilt = false;
        if !accepted && conn.close_reason().is_none() {
            drop(driver);
            match build(conn.clone(), max_field).await {
                Ok((d, sender)) => {
                    driver = d;
                    rebuilt = link.upgrade().is_some_and(|l| l.replace(sender));
                }
                Err(e) => {
                    tracing::debug!("h3: building HTTP/3 again after 0-RTT was rejected: {e}");
                    if let Some(l) = link.upgrade() {
                        l.settle(false, false);
                    }
                    return;
                }
            }
        }
        if let Some(l) = link.upgrade() {
            l.settle(accepted, rebuilt);
        }
    }
    let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
}

/// Sends a request and waits for its response head, with `attempt` (given the link's
/// sender). If it fails before an answer on an HTTP/3 connection built in 0-RTT and the server
/// turns out to have rejected the early data, the request never reached it: `attempt` runs
/// once more on the HTTP/3 connection built again. A response received proves the stream was
/// not discarded (it can only arrive once the handshake is complete), so nothing after it is
/// ever sent twice.
async fn answered<F, Fut>(link: &Link, mut attempt: F) -> Result<(Stream, Response<()>)>
where
    F: FnMut(Sender) -> Fut,
    Fut: Future<Output = Result<(Stream, Response<()>)>>,
{
    let (first, sender) = link.current()?;
    let r = attempt(sender).await;
    // The attempt's streams are gone: it no longer counts.
    let retry = match first {
        Some(guard) => {
            drop(guard);
            true
        }
        None => false,
    };
    match r {
        Err(e) if retry => match link.rebuilt_sender().await {
            Some(sender) => attempt(sender).await,
            None => Err(e),
        },
        r => r,
    }
}

/// An h3 client session: K logical streams on one HTTP/3 connection (`shared`) or one
/// connection each (`pool`), in `rr` or `duplex` mode.
///
/// With 0-RTT, if the server rejects the early data, HTTP/3 is built again on the same QUIC
/// connection and every request that had no answer is sent again (see `Client::early_data`
/// for what happened).
pub struct H3Client {
    connector: QuicConnector,
    links: Vec<Arc<Link>>,
    drivers: Vec<JoinHandle<()>>,
    channels: Vec<H3Channel>,
    /// Duplex response readers; each ends when the server ends its response.
    readers: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client")
            .field("connector", &self.connector)
            .field("connections", &self.links.len())
            .finish_non_exhaustive()
    }
}

/// One logical stream of an h3 session.
pub struct H3Channel {
    id: u32,
    link: Arc<Link>,
    base: String,
    max: usize,
    kind: Kind,
}

impl std::fmt::Debug for H3Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Channel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

enum Kind {
    Rr(InOrder),
    Duplex {
        // Boxed: the h3 send half is large and the channel moves between tasks.
        send: Box<SendHalf>,
        rx: mpsc::Receiver<Result<Bytes>>,
    },
}

fn stream_err(e: h3::error::StreamError) -> Error {
    Error::Protocol(format!("HTTP/3: {e}"))
}

fn request(method: Method, uri: &str, stream_id: Option<u32>) -> Result<Request<()>> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(id) = stream_id {
        b = b.header(STREAM_HEADER, HeaderValue::from(id));
    }
    b.body(())
        .map_err(|e| Error::Config(format!("bad request {uri}: {e}")))
}

fn recv_body(s: RecvHalf) -> RecvBody<RecvHalf> {
    RecvBody::new(s, |s, cx| {
        s.poll_recv_data(cx).map(|r| r.map(|o| o.map(to_bytes)))
    })
}

/// Opens a request stream on `link`, waits for a `200`, and returns the two halves.
async fn open_request(
    link: &Link,
    method: Method,
    uri: &str,
    stream_id: Option<u32>,
) -> Result<(SendHalf, RecvHalf)> {
    let (s, resp) = answered(link, |mut sender| {
        let req = request(method.clone(), uri, stream_id);
        async move {
            let mut s = sender.send_request(req?).await.map_err(stream_err)?;
            let resp = s.recv_response().await.map_err(stream_err)?;
            Ok((s, resp))
        }
    })
    .await?;
    check_status(&resp)?;
    Ok(s.split())
}

async fn echo_request(link: Arc<Link>, uri: String, msg: Bytes, max: usize) -> Result<Bytes> {
    let (mut s, resp) = answered(&link, |mut sender| {
        let (req, msg) = (request(Method::POST, &uri, None), msg.clone());
        async move {
            let mut s = sender.send_request(req?).await.map_err(stream_err)?;
            s.send_data(msg).await.map_err(stream_err)?;
            s.finish().await.map_err(stream_err)?;
            let resp = s.recv_response().await.map_err(stream_err)?;
            Ok((s, resp))
        }
    })
    .await?;
    check_status(&resp)?;
    let mut out = BytesMut::new();
    while let Some(chunk) = s.recv_data().await.map_err(stream_err)? {
        if out.len() + chunk.remaining() > max {
            return Err(Error::Protocol(format!("echo over the {max}-byte limit")));
        }
        out.put(chunk);
    }
    Ok(out.freeze())
}

impl H3Channel {
    async fn open(
        id: u32,
        link: Arc<Link>,
        cfg: &ClientConfig,
        readers: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self> {
        let base = format!("https://{}:{}", cfg.server_name, cfg.addr.port());
        let max = cfg.limits.max_message;
        let kind = match cfg.mode {
            Mode::Rr => Kind::Rr(InOrder::default()),
            Mode::Duplex => {
                let uri = format!("{base}/duplex");
                let (send, recv, answered) = if link.early {
                    // Opened in 0-RTT: a rejection discards the stream and everything sent on
                    // it, so the first message waits for the answer, which proves acceptance
                    // (see `answered`).
                    let (send, recv) = open_request(&link, Method::POST, &uri, Some(id)).await?;
                    (send, recv, true)
                } else {
                    // Nothing in HTTP/3 asks a client to wait for the response head before it
                    // sends request data (RFC 9114 §4.1): the HEADERS are sent and the first
                    // message may follow at once. The reader takes the response head; a refusal
                    // reaches the channel's next `recv`.
                    let (_, mut sender) = link.current()?;
                    let req = request(Method::POST, &uri, Some(id))?;
                    let s = sender.send_request(req).await.map_err(stream_err)?;
                    let (send, recv) = s.split();
                    (send, recv, false)
                };
                let (in_tx, rx) = mpsc::channel(256);
                readers.push(tokio::spawn(async move {
                    let r = async {
                        let mut recv = recv;
                        if !answered {
                            let resp = recv.recv_response().await.map_err(stream_err)?;
                            check_status(&resp)?;
                        }
                        let fwd = in_tx.clone();
                        read_messages(recv_body(recv), max, move |r| {
                            let fwd = fwd.clone();
                            async move { fwd.send(Ok(r.msg)).await.is_ok() }
                        })
                        .await
                    }
                    .await;
                    let _ = in_tx
                        .send(Err(r.err().unwrap_or(Error::ConnectionClosed)))
                        .await;
                }));
                Kind::Duplex {
                    send: Box::new(send),
                    rx,
                }
            }
        };
        Ok(Self {
            id,
            link,
            base,
            max,
            kind,
        })
    }
}

impl Client for H3Client {
    type Channel = H3Channel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        let connector = QuicConnector::new(cfg, ALPN_H3, UNI_STREAMS)?;
        let n_conns = match cfg.sharing {
            Sharing::Shared => 1,
            Sharing::Pool => cfg.streams.max(1) as usize,
        };
        let max_field = cfg.limits.max_header_bytes as u64;
        let (mut links, mut drivers) = (Vec::new(), Vec::new());
        for _ in 0..n_conns {
            let (conn, zero_rtt) = connector.connect().await?;
            let (driver, sender) = build(conn.clone(), max_field).await?;
            let link = Arc::new(Link::new(zero_rtt.is_early(), sender));
            let weak = Arc::downgrade(&link);
            drivers.push(tokio::spawn(drive(weak, conn, driver, zero_rtt, max_field)));
            links.push(link);
        }
        let (mut channels, mut readers) = (Vec::new(), Vec::new());
        for id in 0..cfg.streams {
            let link = links[id as usize % links.len()].clone();
            let open = H3Channel::open(id, link, cfg, &mut readers);
            let ch = tokio::time::timeout(cfg.timeouts.handshake, open)
                .await
                .map_err(|_| Error::Timeout("opening an HTTP/3 duplex request"))??;
            channels.push(ch);
        }
        Ok(Self {
            connector,
            links,
            drivers,
            channels,
            readers,
            grace: cfg.timeouts.shutdown_grace,
        })
    }

    fn channels(&mut self) -> Vec<H3Channel> {
        std::mem::take(&mut self.channels)
    }

    async fn migrate(&mut self) -> Result<bool> {
        self.connector.migrate()?;
        Ok(true)
    }

    async fn early_data(&mut self) -> Option<bool> {
        let link = self.links.first()?;
        if !link.early {
            return None;
        }
        link.settled().await.accepted
    }

    async fn close(self) -> Result<()> {
        // Dropping a duplex channel ends its request body (FIN); the server then ends the
        // response. Channels the caller took must have been dropped by now.
        drop(self.channels);
        for r in self.readers {
            tokio::time::timeout(self.grace, r)
                .await
                .map_err(|_| Error::Timeout("waiting for duplex responses to end"))?
                .map_err(|e| Error::Protocol(format!("reader task: {e}")))?;
        }
        // The last sender dropped closes the HTTP/3 connection with H3_NO_ERROR.
        for link in &self.links {
            link.release();
        }
        for d in self.drivers {
            let _ = tokio::time::timeout(self.grace, d).await;
        }
        self.connector.close(self.grace).await;
        Ok(())
    }
}

impl Channel for H3Channel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        match &mut self.kind {
            Kind::Duplex { send, .. } => send.send_data(msg).await.map_err(stream_err),
            Kind::Rr(pending) => {
                let uri = format!("{}/echo", self.base);
                pending.push(tokio::spawn(echo_request(
                    self.link.clone(),
                    uri,
                    msg,
                    self.max,
                )));
                Ok(())
            }
        }
    }

    async fn recv(&mut self) -> Result<Bytes> {
        match &mut self.kind {
            Kind::Duplex { rx, .. } => rx.recv().await.unwrap_or(Err(Error::ConnectionClosed)),
            Kind::Rr(pending) => pending.next().await,
        }
    }

    async fn server_stream(&mut self, req: StreamRequest) -> Result<Vec<Received>> {
        if matches!(self.kind, Kind::Duplex { .. }) {
            return stream_by_messages(self, req).await;
        }
        let uri = format!("{}/stream?{}", self.base, req.to_query());
        let (_send, recv) = open_request(&self.link, Method::GET, &uri, Some(self.id)).await?;
        collect_messages(recv_body(recv), self.max, req.count).await
    }
}
