use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use sse_stream::SseByteStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use wirelab_core::codec::StreamRequest;
use wirelab_core::transport::stream_by_messages;
use wirelab_core::{net, Channel, Client, ClientConfig, Error, Received, Result, Sharing};

use crate::event::{self, LineGuard};
use crate::SessionId;

type H1Sender = http1::SendRequest<Full<Bytes>>;
type H2Sender = http2::SendRequest<Full<Bytes>>;

/// Event streams that end three times in a row without an event end the channel.
const EMPTY_RECONNECTS: u32 = 3;
/// The reconnection delay until the server's `retry:` says otherwise (the HTML standard leaves
/// it to the user agent; browsers use about 3 s, the server sends 500 ms by default).
const DEFAULT_RETRY: Duration = Duration::from_millis(500);

/// How requests reach the server: HTTP/1.1 (a connection per event stream, a keep-alive pool
/// for `POST`s) or HTTP/2 (one connection for everything, or one per logical stream).
#[derive(Debug)]
enum Http {
    H1 {
        posts: Mutex<Vec<H1Sender>>,
        permits: Semaphore,
    },
    H2(Vec<H2Sender>),
}

#[derive(Debug)]
struct Conn {
    cfg: ClientConfig,
    session: SessionId,
    /// `http://host:port` or `https://host:port`.
    origin: String,
    http: Http,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn hyper_err(e: hyper::Error) -> Error {
    wirelab_http::protocol_error(e)
}

impl Conn {
    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let mut conn = Self {
            cfg: cfg.clone(),
            session: SessionId::random(),
            origin: format!("{scheme}://{}:{}", cfg.server_name, cfg.addr.port()),
            http: Http::H2(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        };
        conn.http = if cfg.tls.is_some() {
            cfg.h2.validate().map_err(Error::Config)?;
            let n = match cfg.sharing {
                Sharing::Shared => 1,
                Sharing::Pool => cfg.streams.max(1) as usize,
            };
            let mut senders = Vec::with_capacity(n);
            for _ in 0..n {
                senders.push(conn.h2().await?);
            }
            Http::H2(senders)
        } else {
            let size = match cfg.sharing {
                Sharing::Shared => 1,
                Sharing::Pool => cfg.pool_size.max(1),
            };
            // One connection now, so that connection errors surface at connect time.
            let first = conn.h1().await?;
            Http::H1 {
                posts: Mutex::new(vec![first]),
                permits: Semaphore::new(size),
            }
        };
        Ok(conn)
    }

    fn keep(&self, task: JoinHandle<()>) {
        if let Ok(mut t) = self.tasks.lock() {
            t.push(task);
        }
    }

    async fn h1(&self) -> Result<H1Sender> {
        let io = net::connect_io(&self.cfg, None).await?;
        let (sender, conn) = tokio::time::timeout(
            self.cfg.timeouts.handshake,
            http1::handshake(TokioIo::new(io)),
        )
        .await
        .map_err(|_| Error::Timeout("HTTP/1.1 handshake"))?
        .map_err(hyper_err)?;
        self.keep(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok(sender)
    }

    async fn h2(&self) -> Result<H2Sender> {
        let io = net::connect_io(&self.cfg, Some(b"h2")).await?;
        let (sender, conn) = tokio::time::timeout(
            self.cfg.timeouts.handshake,
            wirelab_http::h2::client_builder(&self.cfg.h2).handshake(TokioIo::new(io)),
        )
        .await
        .map_err(|_| Error::Timeout("HTTP/2 handshake"))?
        .map_err(hyper_err)?;
        self.keep(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok(sender)
    }

    fn request(
        &self,
        method: Method,
        route: &str,
        stream: u32,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>> {
        let path = format!("{route}?{}", event::query(self.session, stream));
        let b = Request::builder().method(method);
        let b = if matches!(self.http, Http::H1 { .. }) {
            // HTTP/1.1 takes the origin form and a Host header, HTTP/2 the absolute form.
            let host = format!("{}:{}", self.cfg.server_name, self.cfg.addr.port());
            b.uri(path).header(header::HOST, host)
        } else {
            b.uri(format!("{}{path}", self.origin))
        };
        b.body(Full::new(body))
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// Opens logical stream `stream`'s event stream, resuming after `last` if given.
    async fn events(&self, stream: u32, last: Option<u64>) -> Result<Response<Incoming>> {
        let mut req = self.request(Method::GET, "/events", stream, Bytes::new())?;
        let h = req.headers_mut();
        h.insert(
            header::ACCEPT,
            header::HeaderValue::from_static("text/event-stream"),
        );
        if let Some(l) = last {
            h.insert("last-event-id", header::HeaderValue::from(l));
        }
        match &self.http {
            Http::H1 { .. } => {
                // An event stream holds its connection for as long as it lasts.
                let mut sender = self.h1().await?;
                sender.ready().await.map_err(hyper_err)?;
                sender.send_request(req).await.map_err(hyper_err)
            }
            Http::H2(senders) => {
                let mut sender = senders[stream as usize % senders.len()].clone();
                sender.ready().await.map_err(hyper_err)?;
                sender.send_request(req).await.map_err(hyper_err)
            }
        }
    }

    /// Posts `body` (service messages) for logical stream `stream`; returns the status.
    async fn post(&self, stream: u32, body: Bytes) -> Result<StatusCode> {
        let req = self.request(Method::POST, "/send", stream, body)?;
        // The answer is empty (202) or a short error text; read it so the connection can be
        // reused.
        let read = |resp: Response<Incoming>| async move {
            let status = resp.status();
            let _ = Limited::new(resp.into_body(), 4096).collect().await;
            status
        };
        match &self.http {
            Http::H1 { posts, permits } => {
                let _permit = permits
                    .acquire()
                    .await
                    .map_err(|_| Error::ConnectionClosed)?;
                let reused = posts.lock().ok().and_then(|mut v| v.pop());
                let mut sender = match reused {
                    Some(s) if !s.is_closed() => s,
                    _ => self.h1().await?,
                };
                sender.ready().await.map_err(hyper_err)?;
                let resp = sender.send_request(req).await.map_err(hyper_err)?;
                let status = read(resp).await;
                if let Ok(mut idle) = posts.lock() {
                    idle.push(sender);
                }
                Ok(status)
            }
            Http::H2(senders) => {
                let mut sender = senders[stream as usize % senders.len()].clone();
                sender.ready().await.map_err(hyper_err)?;
                let resp = sender.send_request(req).await.map_err(hyper_err)?;
                Ok(read(resp).await)
            }
        }
    }
}

/// An sse client session: K logical streams, each with its event stream and its `POST`s.
#[derive(Debug)]
pub struct SseClient {
    conn: Arc<Conn>,
    channels: Vec<SseChannel>,
    closing: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

/// One logical stream: `send` queues a message for the next `POST`, `recv` takes the next
/// event of this stream's event stream.
#[derive(Debug)]
pub struct SseChannel {
    id: u32,
    out: mpsc::Sender<Bytes>,
    inbox: mpsc::Receiver<Result<Bytes>>,
}

impl Client for SseClient {
    type Channel = SseChannel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        let conn = Arc::new(Conn::connect(cfg).await?);
        let closing = CancellationToken::new();
        let (mut channels, mut workers) = (Vec::new(), Vec::new());
        for id in 0..cfg.streams {
            // Subscribed before any POST, so no answer can precede the event stream.
            let first = tokio::time::timeout(cfg.timeouts.handshake, conn.events(id, None))
                .await
                .map_err(|_| Error::Timeout("opening the event stream"))??;
            if first.status() != StatusCode::OK {
                return Err(Error::Status(first.status().as_u16()));
            }
            let (in_tx, inbox) = mpsc::channel(256);
            let (out, out_rx) = mpsc::channel(256);
            let reader = Reader {
                conn: conn.clone(),
                id,
                inbox: in_tx.clone(),
                closing: closing.clone(),
            };
            workers.push(tokio::spawn(reader.run(first)));
            workers.push(tokio::spawn(writer(conn.clone(), id, out_rx, in_tx)));
            channels.push(SseChannel { id, out, inbox });
        }
        Ok(Self {
            conn,
            channels,
            closing,
            workers,
        })
    }

    fn channels(&mut self) -> Vec<SseChannel> {
        std::mem::take(&mut self.channels)
    }

    async fn close(self) -> Result<()> {
        // Writers finish the POST in flight and end once their channel is dropped; readers end
        // now (dropping an event stream's response closes its HTTP/1.1 connection or resets
        // its HTTP/2 stream). Then the connections close once their last sender is gone.
        drop(self.channels);
        self.closing.cancel();
        let grace = self.conn.cfg.timeouts.shutdown_grace;
        for w in self.workers {
            tokio::time::timeout(grace, w)
                .await
                .map_err(|_| Error::Timeout("ending the event streams"))?
                .map_err(|e| Error::Protocol(format!("worker task: {e}")))?;
        }
        let tasks = self
            .conn
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        drop(self.conn);
        for t in tasks {
            let _ = tokio::time::timeout(grace, t).await;
        }
        Ok(())
    }
}

impl Channel for SseChannel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        self.out
            .send(msg)
            .await
            .map_err(|_| Error::ConnectionClosed)
    }

    async fn recv(&mut self) -> Result<Bytes> {
        self.inbox
            .recv()
            .await
            .unwrap_or(Err(Error::ConnectionClosed))
    }

    async fn server_stream(&mut self, req: StreamRequest) -> Result<Vec<Received>> {
        stream_by_messages(self, req).await
    }
}

/// Sends a channel's messages in order: whatever is queued goes in one `POST` (at most the
/// message limit, or one larger message alone), one `POST` at a time, so the server receives
/// them in the order they were sent.
async fn writer(
    conn: Arc<Conn>,
    id: u32,
    mut out: mpsc::Receiver<Bytes>,
    inbox: mpsc::Sender<Result<Bytes>>,
) {
    let max = conn.cfg.limits.max_message;
    let mut carry: Option<Bytes> = None;
    loop {
        let Some(first) = carry.take().or(out.recv().await) else {
            return;
        };
        let mut batch = BytesMut::from(&first[..]);
        while let Ok(m) = out.try_recv() {
            if batch.len() + m.len() > max {
                carry = Some(m);
                break;
            }
            batch.extend_from_slice(&m);
        }
        let err = match conn.post(id, batch.freeze()).await {
            Ok(StatusCode::ACCEPTED) => continue,
            Ok(s) => Error::Status(s.as_u16()),
            Err(e) => {
                // The connection went away (at a server's shutdown, a refused reconnection or
                // a request the closing connection never read): nothing more can be sent.
                debug!("sse: POST on stream {id} failed: {e}");
                Error::ConnectionClosed
            }
        };
        let _ = inbox.send(Err(err)).await;
        return;
    }
}

/// A line over the limit, or the body failing under the parser.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("an event-stream line of {0}+ bytes is over the limit")]
    LineTooLong(usize),
    #[error("{0}")]
    Body(String),
}

struct Reader {
    conn: Arc<Conn>,
    id: u32,
    inbox: mpsc::Sender<Result<Bytes>>,
    closing: CancellationToken,
}

/// What ended one event stream.
enum Ended {
    /// The client is closing or the channel is gone.
    Stop,
    /// The stream ended or broke: reconnect.
    Lost,
    /// A protocol error: report it and stop.
    Fatal(Error),
}

impl Reader {
    async fn run(self, first: Response<Incoming>) {
        let (mut last, mut retry, mut empty) = (None, DEFAULT_RETRY, 0);
        let mut resp = Some(first);
        loop {
            let r = match resp.take() {
                Some(r) => r,
                None => {
                    tokio::select! {
                        _ = self.closing.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    let again = tokio::select! {
                        _ = self.closing.cancelled() => return,
                        r = self.conn.events(self.id, last) => r,
                    };
                    match again {
                        Ok(r) => r,
                        Err(e) => {
                            debug!("sse: reconnecting stream {} failed: {e}", self.id);
                            let _ = self.inbox.send(Err(Error::ConnectionClosed)).await;
                            return;
                        }
                    }
                }
            };
            match r.status() {
                StatusCode::OK => {}
                // "HTTP 204 No Content ... must prevent the user agent from reconnecting".
                StatusCode::NO_CONTENT => {
                    let _ = self.inbox.send(Err(Error::ConnectionClosed)).await;
                    return;
                }
                s => {
                    let _ = self.inbox.send(Err(Error::Status(s.as_u16()))).await;
                    return;
                }
            }
            let before = last;
            match self.read(r, &mut last, &mut retry).await {
                Ended::Stop => return,
                Ended::Fatal(e) => {
                    let _ = self.inbox.send(Err(e)).await;
                    return;
                }
                Ended::Lost => {}
            }
            empty = if last == before { empty + 1 } else { 0 };
            if empty >= EMPTY_RECONNECTS {
                let _ = self.inbox.send(Err(Error::ConnectionClosed)).await;
                return;
            }
        }
    }

    /// Reads one event stream until it ends.
    async fn read(
        &self,
        resp: Response<Incoming>,
        last: &mut Option<u64>,
        retry: &mut Duration,
    ) -> Ended {
        let max = self.conn.cfg.limits.max_message;
        let idle = self.conn.cfg.timeouts.idle;
        let mut guard = LineGuard::new(event::max_line(max));
        let bytes = BodyDataStream::new(resp.into_body()).map(move |r| match r {
            Ok(b) => guard.check(&b).map(|_| b).map_err(ReadError::LineTooLong),
            Err(e) => Err(ReadError::Body(wirelab_http::describe(&e))),
        });
        let mut events = SseByteStream::new(bytes);
        loop {
            let next = tokio::select! {
                _ = self.closing.cancelled() => return Ended::Stop,
                n = tokio::time::timeout(idle, events.next()) => n,
            };
            let ev = match next {
                // Not even a keep-alive comment for the idle timeout: the stream is dead.
                Err(_) => return Ended::Lost,
                Ok(None) => return Ended::Lost,
                Ok(Some(Err(sse_stream::Error::Body(e)))) => {
                    return match e.downcast_ref::<ReadError>() {
                        Some(ReadError::LineTooLong(_)) => {
                            Ended::Fatal(Error::Protocol(e.to_string()))
                        }
                        _ => Ended::Lost,
                    }
                }
                Ok(Some(Err(e))) => return Ended::Fatal(Error::Protocol(e.to_string())),
                Ok(Some(Ok(ev))) => ev,
            };
            if let Some(ms) = ev.retry {
                *retry = Duration::from_millis(ms);
            }
            let Some(data) = ev.data else { continue };
            let Some(id) = ev.id.as_deref().and_then(|i| i.parse::<u64>().ok()) else {
                return Ended::Fatal(Error::Protocol("an event without a numeric id".into()));
            };
            if let Some(l) = *last {
                if id != l + 1 {
                    return Ended::Fatal(Error::Protocol(format!(
                        "event {id} after {l} on stream {}: events missing",
                        self.id
                    )));
                }
            }
            let msg = match event::decode(&data, max) {
                Ok(m) => m,
                Err(e) => return Ended::Fatal(Error::Protocol(e)),
            };
            *last = Some(id);
            if self.inbox.send(Ok(msg)).await.is_err() {
                return Ended::Stop;
            }
        }
    }
}
