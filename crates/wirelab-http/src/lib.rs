//! The wirelab service over HTTP request and response bodies, shared by the HTTP transports
//! (h1, h2, h3). Not a transport: transport crates use it, never each other.
//!
//! Routes:
//! - `POST /echo`: the response body is the request body (any bytes; `413` over the limit);
//! - `GET /stream?count=&size=&interval_ms=`: a streaming body of service messages;
//! - `POST /duplex`: a full-duplex exchange: service messages in the request body are answered
//!   in the response body as they arrive (echoes, and server streams on request).
//!
//! - `GET /`: the browser page ([`wirelab_core::page`]); `OPTIONS`: a CORS preflight answer.
//!
//! Every answer carries `Access-Control-Allow-Origin: *`.
//! The request header [`STREAM_HEADER`] names the logical stream a `/stream` is stamped with.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wirelab_core::codec::{self, StreamRequest};
use wirelab_core::service::{self, Action, StreamPlan};
use wirelab_core::{clock, Error, Received, Result, ServerConfig};

/// HTTP/2 connection builders with the lab's settings, shared by h2 and h2ws.
pub mod h2 {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use wirelab_core::{H2Settings, ServerConfig};

    /// A server builder: windows, frame and header-list sizes, concurrent streams, the reset
    /// limits that stop rapid-reset floods, and keepalive PINGs when the config has an interval.
    pub fn server_builder(
        cfg: &ServerConfig,
    ) -> hyper::server::conn::http2::Builder<TokioExecutor> {
        let (h2, t) = (cfg.h2, cfg.timeouts);
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(h2.max_concurrent_streams)
            .initial_stream_window_size(h2.stream_window)
            .initial_connection_window_size(h2.connection_window)
            .max_frame_size(h2.max_frame_size)
            .max_header_list_size(h2.max_header_list_size)
            // Rapid reset (CVE-2023-44487) and MadeYouReset: h2's defaults, stated so they are
            // visible and tested.
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024);
        if let Some(ping) = t.ping_interval {
            // A peer that stops answering PINGs is dead: close it.
            b.keep_alive_interval(ping)
                .keep_alive_timeout(t.idle.min(ping * 2));
        }
        b
    }

    /// A client builder with the same windows and sizes.
    pub fn client_builder(h2: &H2Settings) -> hyper::client::conn::http2::Builder<TokioExecutor> {
        let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .initial_stream_window_size(h2.stream_window)
            .initial_connection_window_size(h2.connection_window)
            .max_frame_size(h2.max_frame_size)
            .max_header_list_size(h2.max_header_list_size);
        b
    }
}

/// Request header carrying the logical stream id of a `GET /stream`.
pub const STREAM_HEADER: &str = "x-wirelab-stream";

/// The response body type of every route.
pub type Body = BoxBody<Bytes, Infallible>;

/// The sending end of a streaming response body, bounded in bytes
/// ([`wirelab_core::Limits::write_queue`]): a message waits for budget before it is queued and
/// gives it back when hyper takes it from the body, which hyper does only as fast as the
/// connection drains (HTTP/1.1 write buffer, HTTP/2 and HTTP/3 flow control). So a client that
/// does not read its response holds the server streams and echoes aimed at it, not memory.
#[derive(Clone)]
struct FrameTx {
    tx: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    cap: u32,
    /// Ends the response at once, dropping what is queued (a subscriber cut off as too slow).
    cut: CancellationToken,
}

impl FrameTx {
    /// Ends the response now: what is queued is dropped, the body ends.
    fn cut(&self) {
        self.cut.cancel();
        self.budget.close();
    }

    /// What `msg` costs of the budget: a message over the whole budget waits for an empty
    /// queue, then goes alone.
    fn cost(&self, msg: &Bytes) -> u32 {
        u32::try_from(msg.len().max(1))
            .unwrap_or(u32::MAX)
            .min(self.cap)
    }

    /// Queues one message if the budget allows it now; gives it back otherwise (or when the
    /// response is gone: [`FrameTx::send`] then fails).
    fn try_send(&self, msg: Bytes) -> std::result::Result<(), Bytes> {
        match self.budget.clone().try_acquire_many_owned(self.cost(&msg)) {
            Ok(permit) => self.tx.send((msg, permit)).map_err(|e| e.0 .0),
            Err(_) => Err(msg),
        }
    }

    /// Queues one message once the budget allows. Fails when the response is gone.
    async fn send(&self, msg: Bytes) -> std::result::Result<(), ()> {
        let cost = self.cost(&msg);
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| ())?;
        self.tx.send((msg, permit)).map_err(|_| ())
    }
}

/// Closes the budget when the body is dropped, so that producers waiting for it stop.
struct BodyRx {
    rx: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    cut: CancellationToken,
}

impl Drop for BodyRx {
    fn drop(&mut self) {
        self.budget.close();
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(format!("{msg}\n"))).boxed())
        .unwrap_or_default()
}

/// Serves one request. `stop` ends server streams early (shutdown).
///
/// Generic over the request body so that HTTP/3, whose streams are not hyper bodies, uses the
/// same routes through an adapter.
///
/// Besides the service routes: the browser page at `GET /` ([`wirelab_core::page`], named after
/// the request's HTTP version: `h1`, `h2` or `h3`), an answer to every CORS preflight
/// (`OPTIONS`), and `Access-Control-Allow-Origin: *` on every answer, so a page of another
/// origin can use the routes.
pub async fn handle<B>(
    req: Request<B>,
    cfg: Arc<ServerConfig>,
    stop: CancellationToken,
) -> std::result::Result<Response<Body>, Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    if req.method() == Method::OPTIONS {
        return Ok(preflight());
    }
    if wirelab_core::page::is_page(req.method().as_str(), req.uri().path()) {
        let server = match req.version() {
            http::Version::HTTP_3 => "h3",
            http::Version::HTTP_2 => "h2",
            _ => "h1",
        };
        return Ok(page(server, req.method() == Method::HEAD));
    }
    Ok(with_cors(route(req, cfg, stop).await))
}

/// The CORS headers every answer carries: any origin may read it, and its timing
/// (`Timing-Allow-Origin`, so a page of another origin sees `nextHopProtocol`).
pub fn with_cors<B>(mut r: Response<B>) -> Response<B> {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    h.insert("timing-allow-origin", header::HeaderValue::from_static("*"));
    r
}

/// The answer to a CORS preflight (`OPTIONS`): `204` allowing the methods and headers the
/// routes use, cached for a day.
pub fn preflight() -> Response<Body> {
    let r = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS")
        .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "*")
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
        .header(header::ALLOW, "GET, POST, OPTIONS")
        .body(http_body_util::Empty::new().boxed())
        .unwrap_or_default();
    with_cors(r)
}

/// The browser page of the server of transport `server` (no body for `HEAD`).
pub fn page(server: &str, head: bool) -> Response<Body> {
    let html = wirelab_core::page::render(server);
    let mut b = Response::builder().header(header::CONTENT_LENGTH, html.len());
    for (k, v) in wirelab_core::page::HEADERS {
        b = b.header(*k, *v);
    }
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(html)
    };
    with_cors(b.body(Full::new(body).boxed()).unwrap_or_default())
}

async fn route<B>(
    req: Request<B>,
    cfg: Arc<ServerConfig>,
    stop: CancellationToken,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let max = cfg.limits.max_message;
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/echo") => {
            if req.body().size_hint().lower() > max as u64 {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "body over the limit");
            }
            match Limited::new(req.into_body(), max).collect().await {
                Ok(body) => Response::new(Full::new(body.to_bytes()).boxed()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    text(StatusCode::PAYLOAD_TOO_LARGE, "body over the limit")
                }
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("bad body: {e}")),
            }
        }
        (&Method::GET, "/stream") => {
            let stream = req
                .headers()
                .get(STREAM_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let parsed = StreamRequest::from_query(req.uri().query().unwrap_or(""))
                .and_then(|r| r.validate(max, cfg.limits.max_stream_count).map(|_| r));
            match parsed {
                Ok(r) => {
                    let (tx, body) = streaming_body(cfg.limits.write_queue);
                    tokio::spawn(paced(StreamPlan { stream, req: r }, false, tx, stop));
                    response(body)
                }
                Err(e) => text(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (&Method::POST, "/duplex") => {
            let (tx, answers, rx) = queues(cfg.limits.write_queue);
            let (answers_tx, answers_rx) = answers;
            let reader = duplex(req.into_body(), cfg, tx, answers_tx, stop);
            response(BodyExt::boxed(DuplexBody {
                reader: Some(std::sync::Mutex::new(reader)),
                answers: answers_rx,
                queued: rx,
            }))
        }
        (_, "/echo") | (_, "/duplex") => method_not_allowed("POST"),
        (_, "/stream") => method_not_allowed("GET"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try GET / (the browser page), POST /echo, GET /stream or POST /duplex",
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

fn response(body: Body) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap_or_default()
}

/// The most bytes [`coalesce`] joins into one chunk (one HTTP/2 or HTTP/3 DATA frame).
pub const COALESCE_MAX: usize = 16 << 10;

/// Joins `first` and the messages `more` has ready at once (it returns `None` when none is)
/// into one chunk, taking no more once the chunk holds `max` bytes, or returns `first` alone
/// if it is the only one (no copy).
///
/// A streaming body that becomes one DATA frame per small message looks like an attack to a
/// receiver that budgets framing overhead (the h2 crate closes the connection with
/// `ENHANCE_YOUR_CALM` once too many small DATA frames are buffered), and costs a frame header
/// and a write per message. Joining what is already queued, as tungstenite batches frames,
/// adds no wait: a message alone still goes out at once.
pub fn coalesce(first: Bytes, max: usize, mut more: impl FnMut() -> Option<Bytes>) -> Bytes {
    if first.len() >= max {
        return first;
    }
    let Some(second) = more() else {
        return first;
    };
    let mut buf = BytesMut::with_capacity(max.min(first.len() + second.len() * 4));
    buf.extend_from_slice(&first);
    buf.extend_from_slice(&second);
    while buf.len() < max {
        match more() {
            Some(m) => buf.extend_from_slice(&m),
            None => break,
        }
    }
    buf.freeze()
}

/// A byte-budgeted queue ([`FrameTx`] and its [`BodyRx`]), and a second sender on the same budget
/// with its own channel (for [`DuplexBody`]'s answers).
#[allow(clippy::type_complexity)]
fn queues(
    write_queue: usize,
) -> (
    FrameTx,
    (
        FrameTx,
        mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    ),
    BodyRx,
) {
    let cap = u32::try_from(write_queue.max(1)).unwrap_or(u32::MAX);
    let budget = Arc::new(Semaphore::new(cap as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    let cut = CancellationToken::new();
    let rx = BodyRx {
        rx,
        budget: budget.clone(),
        cut: cut.clone(),
    };
    let tx = FrameTx {
        tx,
        budget,
        cap,
        cut,
    };
    let answers = FrameTx {
        tx: answers_tx,
        ..tx.clone()
    };
    (tx, (answers, answers_rx), rx)
}

fn streaming_body(write_queue: usize) -> (FrameTx, Body) {
    let (tx, _, rx) = queues(write_queue);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        // The permits drop here: hyper has the bytes now. Messages already queued go out as
        // one DATA frame (see `coalesce`). A cut subscriber (fan-out) ends the body.
        let (first, _permit) = tokio::select! {
            biased;
            _ = rx.cut.cancelled() => return None,
            m = rx.rx.recv() => m?,
        };
        let mut permits = Vec::new();
        let chunk = coalesce(first, COALESCE_MAX, || {
            let (msg, permit) = rx.rx.try_recv().ok()?;
            permits.push(permit);
            Some(msg)
        });
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

/// The response body of `POST /duplex`, which reads the request itself: `reader` ([`duplex`])
/// is polled whenever the body is, so an echo is answered by the task that sends the response
/// (hyper's stream task, the h3 request's task), with no hand-off to another task and back. The
/// reader puts its answers on a channel of their own, filled only while it is polled and so read
/// without registering a waker; server streams, subscriptions and resumes run as tasks and queue
/// on `queued`, which wakes the body. The body ends once the reader is done (the request body
/// ended and every stream it started has) and both queues are empty.
///
/// Backpressure is unchanged: hyper and h3 poll a body only when the stream can take more, and
/// the reader waits for the shared byte budget, so a client that does not read its response is
/// not read from either.
struct DuplexBody<R> {
    /// In a `Mutex` only to make the body `Sync` (as `BoxBody` requires) for a reader that is
    /// not: it is reached through `get_mut`, which never locks.
    reader: Option<std::sync::Mutex<R>>,
    answers: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    queued: BodyRx,
}

impl<R: Future<Output = ()> + Unpin> hyper::body::Body for DuplexBody<R> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(reader) = this.reader.as_mut() {
            let reader = reader
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if Pin::new(reader).poll(cx).is_ready() {
                this.reader = None;
            }
        }
        // A cut subscriber (fan-out) ends the body, dropping what is queued.
        if this.queued.cut.is_cancelled() {
            return Poll::Ready(None);
        }
        // The permits drop at the end of this call: hyper has the bytes then.
        let (first, _permit) = match this.answers.try_recv() {
            Ok(m) => m,
            Err(_) => match this.queued.rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => m,
                // Every sender is gone, the reader's included: it is done.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        let (answers, queued) = (&mut this.answers, &mut this.queued.rx);
        let mut permits = Vec::new();
        let chunk = coalesce(first, COALESCE_MAX, || {
            let (msg, permit) = answers.try_recv().or_else(|_| queued.try_recv()).ok()?;
            permits.push(permit);
            Some(msg)
        });
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

async fn paced(plan: StreamPlan, send_end: bool, tx: FrameTx, stop: CancellationToken) {
    let send = |m| {
        let tx = tx.clone();
        async move { tx.send(m).await }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = service::drive_stream(plan, send_end, send) => {}
    }
}

/// Answers the messages of a streaming request body in the response body. The response ends
/// once the request body has ended and every server stream it asked for is done.
///
/// On `stop` (shutdown), messages that already reached the server are still answered: the
/// body is read until it has been quiet for [`service::DRAIN_QUIET`], for at most
/// [`service::DRAIN_MAX`], and no new server stream starts; then the response ends.
fn duplex<B>(
    body: B,
    cfg: Arc<ServerConfig>,
    tx: FrameTx,
    answers: FrameTx,
    stop: CancellationToken,
) -> Pin<Box<impl Future<Output = ()> + Send>>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Send,
{
    Box::pin(read_duplex(body, cfg, tx, answers, stop))
}

/// The reader of [`duplex`]; answers go on `answers`, server streams queue on `tx`.
async fn read_duplex<B>(
    mut body: B,
    cfg: Arc<ServerConfig>,
    tx: FrameTx,
    answers: FrameTx,
    stop: CancellationToken,
) where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    use tokio::time::{timeout_at, Instant};
    let streams = tokio_util::task::TaskTracker::new();
    // Subscriptions end with the request body; `cut` fires when one is cut off as too slow.
    let (subs_stop, cut) = (stop.child_token(), CancellationToken::new());
    // Dropped with its response body (the client reset the stream): subscriptions and resumes
    // end with it.
    let _end_subs = subs_stop.clone().drop_guard();
    let mut buf = BytesMut::new();
    // Set once `stop` fires: the end of the drain.
    let mut draining: Option<Instant> = None;
    'read: loop {
        let frame = match draining {
            None => tokio::select! {
                f = body.frame() => f,
                _ = cut.cancelled() => break 'read,
                _ = stop.cancelled() => {
                    draining = Some(Instant::now() + service::DRAIN_MAX);
                    continue;
                }
            },
            Some(until) => {
                let quiet = until.min(Instant::now() + service::DRAIN_QUIET);
                timeout_at(quiet, body.frame()).await.ok().flatten()
            }
        };
        let Some(frame) = frame else { break };
        let data = match frame.map(Frame::into_data) {
            Ok(Ok(data)) => data,
            // Trailers carry no messages.
            Ok(Err(_)) => continue,
            // The request body failed (reset, connection lost): it will not recover.
            Err(_) => break,
        };
        buf.extend_from_slice(&data);
        loop {
            let len = match codec::split_first(&buf, cfg.limits.max_message) {
                Ok(Some((_, len))) => len,
                Ok(None) => break,
                // Not a service message stream: end the response (the client sees it end early).
                Err(_) => break 'read,
            };
            let msg = buf.split_to(len).freeze();
            match service::classify(&msg, &cfg.limits) {
                Ok(Action::Echo) => {
                    // Budget at hand: no wait, no timer.
                    let Err(msg) = answers.try_send(msg) else {
                        continue;
                    };
                    // Waiting here stops reading the request body: backpressure to the client.
                    let sent = match draining {
                        None => tokio::select! {
                            r = answers.send(msg.clone()) => r,
                            _ = stop.cancelled() => {
                                let until = Instant::now() + service::DRAIN_MAX;
                                draining = Some(until);
                                timeout_at(until, answers.send(msg)).await.unwrap_or(Err(()))
                            }
                        },
                        Some(until) => timeout_at(until, answers.send(msg))
                            .await
                            .unwrap_or(Err(())),
                    };
                    if sent.is_err() {
                        break 'read;
                    }
                }
                Ok(Action::Stream(_)) if draining.is_some() => break 'read,
                Ok(Action::Stream(plan)) => {
                    streams.spawn(paced(plan, true, tx.clone(), stop.clone()));
                }
                Ok(Action::Subscribe { .. }) if draining.is_some() => break 'read,
                Ok(Action::Subscribe { stream, req }) => {
                    let tx = tx.clone();
                    let send = move |m| {
                        let tx = tx.clone();
                        async move { tx.send(m).await }
                    };
                    let (s, c) = (subs_stop.clone(), cut.clone());
                    service::spawn_subscription(
                        &streams,
                        &cfg.fanout,
                        stream,
                        req,
                        msg,
                        s,
                        c,
                        send,
                    );
                }
                Ok(Action::Publish { topic }) => {
                    service::publish(&cfg.fanout, topic, &msg, &stop).await;
                }
                Ok(Action::Resume { .. }) if draining.is_some() => break 'read,
                Ok(Action::Resume { stream, req }) => {
                    let tx = tx.clone();
                    let send = move |m| {
                        let tx = tx.clone();
                        async move { tx.send(m).await }
                    };
                    let (s, sd) = (subs_stop.clone(), stop.clone());
                    service::spawn_resume(&streams, &cfg.resume, stream, req, s, sd, send);
                }
                Err(_) => break 'read,
            }
        }
    }
    subs_stop.cancel();
    if cut.is_cancelled() {
        // The subscriber is not reading: drop what is queued for it, so the response ends.
        tx.cut();
    }
    streams.close();
    streams.wait().await;
}

/// Reads a body of concatenated service messages, handing each to `each` with its arrival
/// time. Fails if the body ends inside a message.
/// `each` returns `false` to stop reading.
pub async fn read_messages<B, F, Fut>(mut body: B, max: usize, mut each: F) -> Result<()>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    F: FnMut(Received) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Protocol(e.to_string()))?;
        let at_ns = clock::now_ns();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some((_, len)) = codec::split_first(&buf, max)? {
            let msg = buf.split_to(len).freeze();
            if !each(Received { msg, at_ns }).await {
                return Ok(());
            }
        }
    }
    if buf.is_empty() {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "body ended inside a message ({} bytes left)",
            buf.len()
        )))
    }
}

/// Reads a whole streamed body of service messages (a `GET /stream` answer), with arrival times.
pub async fn collect_messages<B>(body: B, max: usize, expected: u32) -> Result<Vec<Received>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::with_capacity(expected as usize);
    read_messages(body, max, |r| {
        out.push(r);
        std::future::ready(true)
    })
    .await?;
    Ok(out)
}

/// Maps a response status to the contract's error.
pub fn check_status<B>(resp: &Response<B>) -> Result<()> {
    match resp.status() {
        StatusCode::OK => Ok(()),
        s => Err(Error::Status(s.as_u16())),
    }
}

/// Request/response answers of one logical stream, returned in the order they were sent even
/// though the requests run concurrently.
#[derive(Debug, Default)]
pub struct InOrder(VecDeque<JoinHandle<Result<Bytes>>>);

impl InOrder {
    /// Queues a request already running in its own task.
    pub fn push(&mut self, task: JoinHandle<Result<Bytes>>) {
        self.0.push_back(task);
    }

    /// The oldest answer. Cancel-safe: the request stays queued if this future is dropped.
    pub async fn next(&mut self) -> Result<Bytes> {
        let Some(front) = self.0.front_mut() else {
            return Err(Error::Protocol("recv with no request in flight".into()));
        };
        let r = front.await;
        self.0.pop_front();
        r.map_err(|e| Error::Protocol(format!("request task: {e}")))?
    }
}

impl Drop for InOrder {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// An error and its chain of causes as one line (`hyper::Error`'s `Display` shows only its
/// kind, e.g. "connection error", and hides the I/O or HTTP/2 error underneath).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A hyper error as the contract's protocol error, with its causes.
pub fn protocol_error(e: hyper::Error) -> Error {
    Error::Protocol(describe(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(msgs: &[&'static [u8]]) -> impl FnMut() -> Option<Bytes> {
        let mut q: VecDeque<Bytes> = msgs.iter().map(|m| Bytes::from_static(m)).collect();
        move || q.pop_front()
    }

    #[test]
    fn coalesce_joins_what_is_queued_and_stops_at_the_bound() {
        // Alone: the same bytes, not a copy.
        let first = Bytes::from_static(b"one");
        let out = coalesce(first.clone(), 16, queue(&[]));
        assert_eq!(out.as_ptr(), first.as_ptr());
        // Queued messages join in order.
        assert_eq!(
            coalesce(Bytes::from_static(b"ab"), 16, queue(&[b"cd", b"ef"])),
            Bytes::from_static(b"abcdef")
        );
        // No more is taken once the bound is reached; the rest stays queued.
        let mut more = queue(&[b"cdef", b"gh", b"ij"]);
        assert_eq!(
            coalesce(Bytes::from_static(b"ab"), 6, &mut more),
            Bytes::from_static(b"abcdef")
        );
        assert_eq!(more(), Some(Bytes::from_static(b"gh")));
        // A first message at the bound goes alone.
        let mut more = queue(&[b"x"]);
        assert_eq!(
            coalesce(Bytes::from_static(b"abcdef"), 6, &mut more),
            Bytes::from_static(b"abcdef")
        );
        assert_eq!(more(), Some(Bytes::from_static(b"x")));
    }
}
