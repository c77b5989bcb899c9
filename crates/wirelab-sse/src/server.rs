use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wirelab_core::service::{self, Action, DRAIN_MAX, DRAIN_QUIET};
use wirelab_core::{codec, net, Error, Result, Server, ServerConfig};

use crate::event;
use crate::{SessionId, SseSettings};

type Body = BoxBody<Bytes, Infallible>;

/// Chunks of small events are joined up to this size before hyper takes them.
const BATCH: usize = 64 << 10;

/// The SSE server: HTTP/1.1 in cleartext, HTTP/2 over TLS (ALPN `h2`).
#[derive(Debug)]
pub struct SseServer {
    listener: net::Listener,
    hub: Arc<Hub>,
}

impl SseServer {
    /// Binds with SSE settings other than the defaults.
    pub async fn bind_with(cfg: ServerConfig, settings: SseSettings) -> Result<Self> {
        cfg.h2.validate().map_err(Error::Config)?;
        let hub = Arc::new(Hub {
            streams: Mutex::new(HashMap::new()),
            settings,
            idle: cfg.timeouts.idle,
        });
        Ok(Self {
            listener: net::Listener::bind(cfg).await?,
            hub,
        })
    }
}

impl Server for SseServer {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        Self::bind_with(cfg, SseSettings::default()).await
    }

    fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let hub = self.hub;
        self.listener
            .serve("sse", Some(b"h2"), &shutdown, move |io, cfg, sd| {
                connection(io, cfg, sd, hub.clone())
            })
            .await;
        Ok(())
    }
}

/// Every logical stream of every session, shared by all connections (over HTTP/1.1 a stream's
/// `POST`s arrive on other connections than its event stream).
#[derive(Debug)]
struct Hub {
    streams: Mutex<HashMap<(SessionId, u32), Arc<Stream>>>,
    settings: SseSettings,
    /// A stream without an event stream for this long is forgotten.
    idle: Duration,
}

/// Why an event stream cannot start.
enum Refused {
    /// Nothing to resume from: `204`, the client stops.
    Gone,
    /// A `Last-Event-ID` the stream has not reached.
    Ahead,
}

impl Hub {
    /// Attaches a new event stream: a new logical stream, a takeover from an earlier event
    /// stream (it ends), or a resume after `last`. Returns the stream, the attachment's
    /// generation and the first offset to send.
    fn attach(
        &self,
        key: (SessionId, u32),
        last: Option<u64>,
    ) -> std::result::Result<(Arc<Stream>, u64, u64), Refused> {
        let Ok(mut map) = self.streams.lock() else {
            return Err(Refused::Gone);
        };
        let idle = self.idle;
        map.retain(|_, s| s.lock().detached.is_none_or(|t| t.elapsed() < idle));
        let Some(stream) = map.get(&key).cloned() else {
            if last.is_some() {
                return Err(Refused::Gone);
            }
            let s = Arc::new(Stream::new());
            map.insert(key, s.clone());
            return Ok((s, 0, 0));
        };
        drop(map);
        let attached = {
            let mut b = stream.lock();
            let cursor = match last {
                None => b.next_id,
                Some(l) if l >= b.next_id => return Err(Refused::Ahead),
                Some(l) => {
                    let oldest = b.events.front().map_or(b.next_id, |e| e.0);
                    if l + 1 < oldest {
                        return Err(Refused::Gone);
                    }
                    l + 1
                }
            };
            b.generation += 1;
            b.detached = None;
            // Events from the cursor on are being sent again: keep them.
            b.delivered = cursor;
            (b.generation, cursor)
        };
        // Wakes the earlier event stream, which sees it was replaced and ends.
        stream.tick.send_replace(());
        Ok((stream, attached.0, attached.1))
    }

    fn get(&self, key: (SessionId, u32)) -> Option<Arc<Stream>> {
        self.streams.lock().ok()?.get(&key).cloned()
    }
}

/// One logical stream: its replay buffer, and a signal raised on every change.
#[derive(Debug)]
struct Stream {
    buf: Mutex<Buffer>,
    tick: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct Buffer {
    /// The offset the next event gets.
    next_id: u64,
    /// Retained events, oldest first: `(offset, encoded event)`.
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Events below this offset were handed to the connection, so they may be evicted.
    delivered: u64,
    /// Raised by each attachment; an event stream of an older one ends.
    generation: u64,
    /// When the last event stream ended, if none is attached.
    detached: Option<std::time::Instant>,
}

impl Stream {
    fn new() -> Self {
        Self {
            buf: Mutex::new(Buffer::default()),
            tick: watch::channel(()).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding the lock cannot leave the buffer inconsistent in a way that
        // matters more than losing the stream, so a poisoned lock is used as is.
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `msg` as the next event. Waits while the buffer is full of events not yet
    /// handed to the connection (backpressure), until `deadline`; after `stop`, at most
    /// [`DRAIN_MAX`] more. Fails when the wait runs out.
    async fn push(
        &self,
        msg: &[u8],
        s: &SseSettings,
        mut deadline: Instant,
        stop: &CancellationToken,
    ) -> std::result::Result<(), ()> {
        let mut rx = self.tick.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let mut b = self.lock();
                // The event's size: its data, the field names and a 20-digit id.
                let len = event::max_data_len(msg.len()) + 36;
                while let Some((id, ev_len)) = b.events.front().map(|(id, ev)| (*id, ev.len())) {
                    let full = b.events.len() >= s.replay_events || b.bytes + len > s.replay_bytes;
                    if !full || id >= b.delivered {
                        break;
                    }
                    b.bytes -= ev_len;
                    b.events.pop_front();
                }
                let fits = b.events.len() < s.replay_events && b.bytes + len <= s.replay_bytes;
                if fits || b.events.is_empty() {
                    let id = b.next_id;
                    let ev = event::encode(id, msg);
                    b.bytes += ev.len();
                    b.events.push_back((id, ev));
                    b.next_id += 1;
                    drop(b);
                    self.tick.send_replace(());
                    return Ok(());
                }
            }
            tokio::select! {
                r = rx.changed() => r.map_err(|_| ())?,
                _ = tokio::time::sleep_until(deadline) => return Err(()),
                _ = stop.cancelled(), if deadline > Instant::now() + DRAIN_MAX => {
                    deadline = Instant::now() + DRAIN_MAX;
                }
            }
        }
    }
}

/// The producer behind one event-stream response.
struct Producer {
    stream: Arc<Stream>,
    rx: watch::Receiver<()>,
    generation: u64,
    cursor: u64,
    first: Option<Bytes>,
    keep_alive: Option<Duration>,
    last_write: Instant,
    stop: CancellationToken,
    /// Set at shutdown: the latest the stream may end, and when it last had news.
    drain: Option<(Instant, Instant)>,
}

impl Producer {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(f) = self.first.take() {
            return Some(f);
        }
        loop {
            self.rx.borrow_and_update();
            if let Some(chunk) = self.take()? {
                self.last_write = Instant::now();
                if let Some((_, news)) = &mut self.drain {
                    *news = self.last_write;
                }
                return Some(chunk);
            }
            let quiet = self
                .drain
                .map(|(until, news)| until.min(news + DRAIN_QUIET));
            if quiet.is_some_and(|q| q <= Instant::now()) {
                return None;
            }
            let ka = self.keep_alive.map(|i| self.last_write + i);
            tokio::select! {
                r = self.rx.changed() => r.ok()?,
                _ = sleep_until_some(ka) => {
                    self.last_write = Instant::now();
                    return Some(Bytes::from_static(event::KEEP_ALIVE));
                }
                _ = self.stop.cancelled(), if self.drain.is_none() => {
                    let now = Instant::now();
                    self.drain = Some((now + DRAIN_MAX, now));
                }
                _ = sleep_until_some(quiet) => {}
            }
        }
    }

    /// The events from the cursor on, joined up to [`BATCH`]; `None` when this event stream was
    /// replaced by a newer one, `Some(None)` when there is nothing to send.
    fn take(&mut self) -> Option<Option<Bytes>> {
        let mut b = self.stream.lock();
        if b.generation != self.generation {
            return None;
        }
        let front = b.events.front().map_or(b.next_id, |e| e.0);
        if self.cursor < front {
            // Evicted before they were sent: cannot happen (only sent events are evicted);
            // end the stream so the client's resume gets a clear 204.
            return None;
        }
        let start = usize::try_from(self.cursor - front).unwrap_or(usize::MAX);
        let mut out: Option<BytesMut> = None;
        let mut single = None;
        for (id, ev) in b.events.iter().skip(start) {
            match (&mut out, &single) {
                (None, None) if ev.len() >= BATCH => {
                    single = Some(ev.clone());
                    self.cursor = id + 1;
                    break;
                }
                (None, None) => out = Some(BytesMut::from(&ev[..])),
                (Some(o), _) if o.len() + ev.len() <= BATCH => o.extend_from_slice(ev),
                _ => break,
            }
            self.cursor = id + 1;
        }
        let chunk = single.or(out.map(BytesMut::freeze));
        if chunk.is_some() {
            b.delivered = b.delivered.max(self.cursor);
            drop(b);
            // Room for waiting POSTs.
            self.stream.tick.send_replace(());
        }
        Some(chunk)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let mut b = self.stream.lock();
        if b.generation == self.generation {
            b.detached = Some(std::time::Instant::now());
            drop(b);
            // Subscriptions forwarding into this stream see it detached.
            self.stream.tick.send_replace(());
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(format!("{msg}\n"))).boxed())
        .unwrap_or_default()
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

async fn handle(
    req: Request<Incoming>,
    hub: Arc<Hub>,
    cfg: Arc<ServerConfig>,
    stop: CancellationToken,
) -> std::result::Result<Response<Body>, Infallible> {
    if req.method() == Method::OPTIONS {
        return Ok(wirelab_http::preflight());
    }
    if wirelab_core::page::is_page(req.method().as_str(), req.uri().path()) {
        return Ok(wirelab_http::page("sse", req.method() == Method::HEAD));
    }
    Ok(wirelab_http::with_cors(match (req.method(), req.uri().path()) {
        (&Method::GET, "/events") => events(&req, &hub, &cfg, stop),
        (&Method::POST, "/send") => send(req, &hub, &cfg, stop).await,
        (_, "/events") => method_not_allowed("GET"),
        (_, "/send") => method_not_allowed("POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try GET / (the browser page), GET /events?session=&stream= or POST /send?session=&stream=",
        ),
    }))
}

fn events(
    req: &Request<Incoming>,
    hub: &Hub,
    cfg: &ServerConfig,
    stop: CancellationToken,
) -> Response<Body> {
    let key = match event::parse_query(req.uri().query().unwrap_or("")) {
        Ok(k) => k,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let last = match req.headers().get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) if v.trim().parse::<u64>().is_ok() => v.trim().parse().ok(),
        Some(_) => return text(StatusCode::BAD_REQUEST, "Last-Event-ID must be an offset"),
    };
    let (stream, generation, cursor) = match hub.attach(key, last) {
        Ok(a) => a,
        Err(Refused::Gone) => {
            return Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Empty::new().boxed())
                .unwrap_or_default()
        }
        Err(Refused::Ahead) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID is past the newest event",
            )
        }
    };
    let producer = Producer {
        rx: stream.tick.subscribe(),
        stream,
        generation,
        cursor,
        first: Some(event::retry(hub.settings.retry.as_millis())),
        keep_alive: cfg.timeouts.ping_interval,
        last_write: Instant::now(),
        stop,
        drain: None,
    };
    let body = futures_util::stream::unfold(producer, |mut p| async move {
        let chunk = p.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), p))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(BodyExt::boxed(StreamBody::new(body)))
        .unwrap_or_default()
}

async fn send(
    req: Request<Incoming>,
    hub: &Arc<Hub>,
    cfg: &ServerConfig,
    stop: CancellationToken,
) -> Response<Body> {
    let max = cfg.limits.max_message;
    let key = match event::parse_query(req.uri().query().unwrap_or("")) {
        Ok(k) => k,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    if hyper::body::Body::size_hint(req.body()).lower() > max as u64 {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "body over the message limit");
    }
    let Some(stream) = hub.get(key) else {
        return text(
            StatusCode::NOT_FOUND,
            "no event stream for this session and stream; GET /events first",
        );
    };
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body over the message limit")
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad body: {e}")),
    };
    // Every message is checked before any is queued, so a bad body changes nothing.
    let mut msgs = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        match codec::split_first(&rest, max) {
            Ok(Some((_, len))) => {
                let msg = rest.split_to(len);
                match service::classify(&msg, &cfg.limits) {
                    // SSE's resume is its own: Last-Event-ID on the event stream.
                    Ok(Action::Resume { .. }) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "sse resumes with Last-Event-ID (the event stream's own), not resume messages",
                        )
                    }
                    Ok(action) => msgs.push((msg, action)),
                    Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
                }
            }
            Ok(None) => return text(StatusCode::BAD_REQUEST, "body ends inside a message"),
            Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    let deadline = Instant::now() + cfg.timeouts.idle;
    let settings = hub.settings;
    for (msg, action) in msgs {
        match action {
            Action::Echo => {
                if stream.push(&msg, &settings, deadline, &stop).await.is_err() {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the event stream is not being read",
                    );
                }
            }
            // No new server stream once shutdown began.
            Action::Stream(_) if stop.is_cancelled() => {}
            Action::Stream(plan) => {
                let (stream, stop, idle) = (stream.clone(), stop.clone(), cfg.timeouts.idle);
                tokio::spawn(async move {
                    let push = |m: Bytes| {
                        let (stream, stop) = (stream.clone(), stop.clone());
                        async move {
                            let deadline = Instant::now() + idle;
                            stream.push(&m, &settings, deadline, &stop).await
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = service::drive_stream(plan, true, push) => {}
                    }
                });
            }
            Action::Subscribe { .. } if stop.is_cancelled() => {}
            Action::Subscribe { stream: id, req } => {
                subscribe(
                    hub,
                    &cfg.fanout,
                    (key, id, stream.clone()),
                    req,
                    msg,
                    &stop,
                    idle_of(cfg),
                );
            }
            Action::Publish { topic } => service::publish(&cfg.fanout, topic, &msg, &stop).await,
            Action::Resume { .. } => {}
        }
    }
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Empty::new().boxed())
        .unwrap_or_default()
}

fn idle_of(cfg: &ServerConfig) -> Duration {
    cfg.timeouts.idle
}

/// Forwards a subscription's deliveries into the logical stream's event stream until the
/// event stream goes away (it detaches), the server stops, or the subscriber is cut off as too
/// slow: then the logical stream is forgotten and its event stream ends, so the client's
/// resume is answered `204` (it stops) rather than silently missing messages.
fn subscribe(
    hub: &Arc<Hub>,
    fanout: &wirelab_core::fanout::Hub,
    (key, id, stream): ((SessionId, u32), u32, Arc<Stream>),
    req: codec::Subscribe,
    ack: Bytes,
    stop: &CancellationToken,
    idle: Duration,
) {
    let sub = fanout.subscribe(id, req);
    let (hub, stop, settings) = (hub.clone(), stop.clone(), hub.settings);
    tokio::spawn(async move {
        let push = |m: Bytes| {
            let (stream, stop) = (stream.clone(), stop.clone());
            async move {
                let deadline = Instant::now() + idle;
                stream.push(&m, &settings, deadline, &stop).await
            }
        };
        let end = tokio::select! {
            _ = stop.cancelled() => return,
            _ = detached(&stream) => return,
            end = wirelab_core::fanout::drive_subscription(sub, ack, push) => end,
        };
        if end == wirelab_core::fanout::SubEnd::Disconnected {
            if let Ok(mut map) = hub.streams.lock() {
                map.remove(&key);
            }
            stream.lock().generation += 1;
            stream.tick.send_replace(());
        }
    });
}

/// Returns once the logical stream has no event stream attached.
async fn detached(stream: &Stream) {
    let mut rx = stream.tick.subscribe();
    loop {
        if stream.lock().detached.is_some() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn connection(
    io: net::ServerIo,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
    hub: Arc<Hub>,
) -> Result<()> {
    let h2 = matches!(io, net::MaybeTls::Tls(_));
    let (svc_cfg, stop) = (cfg.clone(), shutdown.clone());
    let svc = service_fn(move |req| handle(req, hub.clone(), svc_cfg.clone(), stop.clone()));
    let grace = cfg.timeouts.shutdown_grace;
    // Event streams drain on `shutdown` by themselves; the connection is told at once so that
    // it takes no new request (HTTP/1.1 closes after the response, HTTP/2 sends GOAWAY).
    if h2 {
        let builder = wirelab_http::h2::server_builder(&cfg);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        until_shutdown(conn, |c| c.graceful_shutdown(), &shutdown, grace).await
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.timeouts.handshake)
            .max_buf_size(cfg.limits.max_header_bytes.max(8192))
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        until_shutdown(conn, |c| c.graceful_shutdown(), &shutdown, grace).await
    }
}

/// Serves `conn` until it ends or `shutdown` fires; then asks it to finish gracefully
/// (`graceful`: HTTP/1.1 closes after the response, HTTP/2 sends GOAWAY) and waits up to
/// `grace`. The same for either hyper connection type.
async fn until_shutdown<C>(
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
    shutdown: &CancellationToken,
    grace: std::time::Duration,
) -> Result<()>
where
    C: std::future::Future<Output = std::result::Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r.map_err(wirelab_http::protocol_error),
        _ = shutdown.cancelled() => {}
    }
    graceful(conn.as_mut());
    tokio::time::timeout(grace, conn)
        .await
        .map_err(|_| Error::Timeout("graceful shutdown"))?
        .map_err(wirelab_http::protocol_error)
}
