//! The server side of a WebSocket session, whatever carried the handshake.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use wirelab_core::codec::{self, CodecError};
use wirelab_core::service::{self, Action, OneTaskWriter};
use wirelab_core::{Error, Result, ServerConfig};

use crate::gate::Gated;

fn close_frame(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// What a read error means for the close code we answer with (RFC 6455 §7.4.1).
fn close_for(e: &WsError) -> Option<Message> {
    match e {
        WsError::Capacity(_) => Some(close_frame(CloseCode::Size, "message too big")),
        WsError::Utf8(_) => Some(close_frame(CloseCode::Invalid, "invalid UTF-8")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(close_frame(CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}

/// A message on its way to tungstenite from the session's server streams, holding its share of
/// the write budget until tungstenite has taken it. The message is boxed: tokio's channel
/// allocates its slots 32 at a time when it is created, so every connection that has started a
/// stream holds 32 of them, idle or not (3 KiB with the message inline, under 1 KiB boxed; the
/// box costs one allocation per message). Echo answers do not go through it.
struct Queued {
    msg: Box<Message>,
    budget: OwnedSemaphorePermit,
}

/// The queue the session's server streams (and subscriptions, resumes) send through, bounded in
/// bytes ([`wirelab_core::Limits::write_queue`]): a message waits for budget before it is
/// queued, and gives it back once tungstenite has taken it. So a stream pauses while a peer does
/// not read what it is sent.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    cap: u32,
}

impl Outbox {
    fn new(cap: usize) -> (Self, mpsc::UnboundedReceiver<Queued>) {
        let cap = u32::try_from(cap.max(1)).unwrap_or(u32::MAX);
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(cap as usize));
        (Self { tx, budget, cap }, rx)
    }

    fn cost(&self, m: &Message) -> u32 {
        // A message over the whole budget waits until the queue is empty, then goes alone.
        u32::try_from(m.len().max(1))
            .unwrap_or(u32::MAX)
            .min(self.cap)
    }

    /// Queues `m` once the budget allows. Fails when the session is gone.
    async fn send(&self, m: Message) -> std::result::Result<(), ()> {
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(self.cost(&m))
            .await
            .map_err(|_| ())?;
        self.tx
            .send(Queued {
                msg: Box::new(m),
                budget,
            })
            .map_err(|_| ())
    }
}

/// A frame tungstenite could not take yet.
struct Held {
    msg: Message,
    /// An answer to what the peer sent (nothing more is read until it is taken), not a message
    /// of a server stream or a ping.
    answer: bool,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Answers handed to tungstenite are flushed once nothing more can be read now, or after this
/// many, whichever comes first: messages that arrive together leave together, and a peer that
/// never pauses still gets its answers.
const FLUSH_EVERY: usize = 16;

/// What the connection has for the session.
enum Event {
    /// A message from the peer.
    Message(Message),
    /// The peer's side ended (after its close frame, or without one).
    Ended,
    /// Reading failed: a protocol error, an oversized message, or the transport.
    ReadFailed(WsError),
    /// Writing failed.
    WriteFailed(WsError),
}

/// One WebSocket connection, read and written by the one task that runs its session: an echo is
/// answered by the task that read it, with no hand-off between tasks and no lock around the
/// WebSocket (the tcp server's shape). Server streams run as tasks of their own and queue their
/// messages through [`Outbox`]; the session hands those to tungstenite as it goes.
///
/// Backpressure: a frame tungstenite cannot take (its buffer full because the transport is) is
/// held, and while an answer is held nothing is read, so a peer that does not read is not read
/// from either ([`Gated`] does the same for the pongs tungstenite queues itself).
struct Conn<S> {
    ws: WebSocketStream<Gated<S>>,
    /// The server streams' queue and its budget (closed when nothing more can be written),
    /// made when the first stream starts: most sessions only echo, and an unused channel still
    /// costs its first block of slots (about 1.3 KiB per connection with its shared state).
    queue: Option<(mpsc::UnboundedReceiver<Queued>, Arc<Semaphore>)>,
    held: Option<Held>,
    /// Frames handed to tungstenite since the last completed flush.
    unflushed: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The server streams' sender, making the queue on first use.
    fn outbox(&mut self, cap: usize) -> Outbox {
        let (tx, rx) = Outbox::new(cap);
        self.queue = Some((rx, tx.budget.clone()));
        tx
    }

    /// Queues `msg` as the answer to what was just read.
    fn answer(&mut self, msg: Message) {
        debug_assert!(self.held.is_none());
        self.held = Some(Held {
            msg,
            answer: true,
            _budget: None,
        });
    }

    /// Queues a keepalive ping, unless output is stuck (pointless to a peer that is not reading).
    fn ping(&mut self) {
        if self.held.is_none() {
            self.held = Some(Held {
                msg: Message::Ping(Bytes::new()),
                answer: false,
                _budget: None,
            });
        }
    }

    /// Whether an answer waits for the peer to read what it was sent.
    fn owes_answer(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.answer)
    }

    /// Hands what is held, then what the server streams queued, to tungstenite. Ready once
    /// nothing is held (the queue empty for now); Pending while tungstenite cannot take more.
    fn poll_hand_over(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), WsError>> {
        loop {
            if self.held.is_none() {
                let Some((rx, _)) = self.queue.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(q)) => {
                        self.held = Some(Held {
                            msg: *q.msg,
                            answer: false,
                            _budget: Some(q.budget),
                        })
                    }
                    _ => return Poll::Ready(Ok(())),
                }
            }
            ready!(Pin::new(&mut self.ws).poll_ready(cx))?;
            // The budget is returned when `held` drops, after tungstenite took the frame.
            let Some(held) = self.held.take() else {
                continue;
            };
            Pin::new(&mut self.ws).start_send(held.msg)?;
            self.unflushed += 1;
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), WsError>> {
        if self.unflushed > 0 {
            ready!(Pin::new(&mut self.ws).poll_flush(cx))?;
            self.unflushed = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// The next event, writing meanwhile: what is owed is handed over before anything more is
    /// read, and flushed when there is nothing more to read now.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            match self.poll_hand_over(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Event::WriteFailed(e)),
                // Stuck behind a peer that does not read: tungstenite flushes as it can.
                Poll::Pending => return Poll::Pending,
            }
            let batch_full = self.unflushed >= FLUSH_EVERY;
            if !batch_full {
                match Pin::new(&mut self.ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(m))) => return Poll::Ready(Event::Message(m)),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Event::ReadFailed(e)),
                    Poll::Ready(None) => return Poll::Ready(Event::Ended),
                    Poll::Pending => {}
                }
            }
            match self.poll_flush(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Event::WriteFailed(e)),
                // Flushed after a full batch: read on.
                Poll::Ready(Ok(())) if batch_full => continue,
                _ => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> OneTaskWriter for Conn<S> {
    type Error = WsError;

    /// Everything handed over and flushed.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        ready!(self.poll_hand_over(cx))?;
        self.poll_flush(cx)
    }

    /// Stops the server streams' sends: nothing more will be written.
    fn close_queue(&mut self) {
        if let Some((rx, budget)) = self.queue.as_mut() {
            budget.close();
            rx.close();
        }
    }
}

/// What the session does with one binary message (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Incoming {
    /// Send it back unchanged: a wirelab echo, or bytes that are not a wirelab message at all
    /// (too short for the header, or without its magic), which a person typed by hand.
    Echo,
    /// A valid server stream request.
    Stream(service::StreamPlan),
    /// A fan-out subscription of the message's logical stream.
    Subscribe { stream: u32, req: codec::Subscribe },
    /// A fan-out publication to a topic.
    Publish { topic: u32 },
    /// A resumable stream: started, or resumed after a broken connection.
    Resume { stream: u32, req: codec::Resume },
    /// A wirelab message (it has the magic) that is invalid: closed with 1003.
    Bad,
}

fn incoming(b: &[u8], cfg: &ServerConfig) -> Incoming {
    match service::classify(b, &cfg.limits) {
        Ok(Action::Echo) => Incoming::Echo,
        Ok(Action::Stream(plan)) => Incoming::Stream(plan),
        Ok(Action::Subscribe { stream, req }) => Incoming::Subscribe { stream, req },
        Ok(Action::Publish { topic }) => Incoming::Publish { topic },
        Ok(Action::Resume { stream, req }) => Incoming::Resume { stream, req },
        Err(CodecError::BadMagic(_)) => Incoming::Echo,
        Err(CodecError::Short { .. }) if !b.starts_with(&codec::MAGIC) => Incoming::Echo,
        Err(_) => Incoming::Bad,
    }
}

fn ws_err(e: WsError) -> Error {
    Error::Protocol(e.to_string())
}

/// Runs the server side of a WebSocket over `io`, whose handshake is done; `leftover` is what
/// was read past the handshake (frames the client sent right behind its request). The
/// WebSocket reads through [`Gated`], so a peer that does not read what it is sent is not read
/// from either.
pub async fn run<S>(
    io: S,
    leftover: Vec<u8>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Transport reads of `read_buffer` bytes are made by `Gated` (nothing held while idle);
    // tungstenite keeps only a small buffer of its own.
    let ws_cfg = crate::config(&cfg.limits).read_buffer_size(crate::gate::TUNGSTENITE_READ);
    let ws = WebSocketStream::from_partially_read(
        Gated::new(io, cfg.limits.read_buffer),
        leftover,
        Role::Server,
        Some(ws_cfg),
    )
    .await;
    session(ws, cfg, shutdown).await
}

/// Runs one WebSocket session after its handshake: echoes (wirelab echoes, and any text or
/// bytes that are not a wirelab message, verbatim, text as text; with
/// [`ServerConfig::raw_echo`] every message verbatim), server streams, keepalive, and a truthful
/// close (1003 only for a wirelab message that is invalid). One task reads and writes the
/// connection (see [`Conn`]). Returns when the session is over, bounded by the shutdown grace
/// once `shutdown` fires.
pub async fn session<S>(
    ws: WebSocketStream<Gated<S>>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Conn {
        ws,
        queue: None,
        held: None,
        unflushed: 0,
    };
    // The server streams' sender, once one has started (see `Conn::queue`).
    let mut outbox: Option<Outbox> = None;
    let streams = TaskTracker::new();
    let stop_streams = shutdown.child_token();
    // Cancelled when a subscriber on this session is cut off for falling behind.
    let cut = CancellationToken::new();
    let t = cfg.timeouts;
    let mut ping = tokio::time::interval(
        t.ping_interval
            .unwrap_or(t.idle)
            .max(std::time::Duration::from_millis(1)),
    );
    ping.reset();
    // The idle timer is armed once and moved on only when it fires early: re-arming it for
    // every message would cost a timer-wheel update per echo.
    let mut last_read = tokio::time::Instant::now();
    let idle = tokio::time::sleep_until(last_read + t.idle);
    let mut idle = std::pin::pin!(idle);
    let mut stopped = std::pin::pin!(shutdown.cancelled());
    let mut cut_off = std::pin::pin!(cut.cancelled());

    let mut shutting_down = false;
    let mut failed: Option<WsError> = None;
    // `Some(close)` when we start the close handshake; `None` when the peer did or TCP died.
    let our_close = loop {
        let event = tokio::select! {
            biased;
            _ = &mut stopped => {
                shutting_down = true;
                break Some(close_frame(CloseCode::Away, "server shutting down"));
            }
            _ = &mut cut_off => break Some(close_frame(CloseCode::Policy, "slow subscriber cut off")),
            _ = &mut idle => {
                let due = last_read + t.idle;
                if due > tokio::time::Instant::now() {
                    idle.as_mut().reset(due);
                    continue;
                }
                // Waiting to hand over an answer is waiting for the peer to read.
                break Some(if conn.owes_answer() {
                    close_frame(CloseCode::Policy, "peer stopped reading")
                } else {
                    close_frame(CloseCode::Away, "idle timeout")
                });
            }
            _ = ping.tick(), if t.ping_interval.is_some() => {
                conn.ping();
                continue;
            }
            event = poll_fn(|cx| conn.poll_event(cx)) => event,
        };
        let msg = match event {
            Event::Message(m) => m,
            Event::Ended => break None,
            Event::ReadFailed(e) => {
                debug!("ws read error: {e}");
                break close_for(&e);
            }
            Event::WriteFailed(e) => {
                failed = Some(e);
                break None;
            }
        };
        last_read = tokio::time::Instant::now();
        let reply = match msg {
            Message::Binary(b) if cfg.raw_echo => Message::Binary(b),
            // A person trying the server by hand (a browser console, websocat) gets text back
            // as text: only wirelab control messages need the header.
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => match incoming(&b, &cfg) {
                Incoming::Echo => Message::Binary(b),
                Incoming::Stream(plan) => {
                    let tx = outbox
                        .get_or_insert_with(|| conn.outbox(cfg.limits.write_queue))
                        .clone();
                    let stop = stop_streams.clone();
                    streams.spawn(async move {
                        let send = |m| {
                            let tx = tx.clone();
                            async move { tx.send(Message::Binary(m)).await }
                        };
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = service::drive_stream(plan, true, send) => {}
                        }
                    });
                    continue;
                }
                Incoming::Subscribe { stream, req } => {
                    let tx = outbox
                        .get_or_insert_with(|| conn.outbox(cfg.limits.write_queue))
                        .clone();
                    let send = move |m| {
                        let tx = tx.clone();
                        async move { tx.send(Message::Binary(m)).await }
                    };
                    let (stop, c) = (stop_streams.clone(), cut.clone());
                    service::spawn_subscription(
                        &streams,
                        &cfg.fanout,
                        stream,
                        req,
                        b,
                        stop,
                        c,
                        send,
                    );
                    continue;
                }
                Incoming::Publish { topic } => {
                    // A blocked publication may wait for a subscriber on this very connection:
                    // keep writing meanwhile.
                    let published = service::publish(&cfg.fanout, topic, &b, &shutdown);
                    if let ((), Some(e)) = service::writing_while(&mut conn, published).await {
                        failed = Some(e);
                        break None;
                    }
                    continue;
                }
                Incoming::Resume { stream, req } => {
                    let tx = outbox
                        .get_or_insert_with(|| conn.outbox(cfg.limits.write_queue))
                        .clone();
                    let send = move |m| {
                        let tx = tx.clone();
                        async move { tx.send(Message::Binary(m)).await }
                    };
                    let (stop, sd) = (stop_streams.clone(), shutdown.clone());
                    service::spawn_resume(&streams, &cfg.resume, stream, req, stop, sd, send);
                    continue;
                }
                Incoming::Bad => {
                    break Some(close_frame(
                        CloseCode::Unsupported,
                        "invalid wirelab message",
                    ))
                }
            },
            // tungstenite answers pings and the peer's close itself; keep reading so the
            // close reply is flushed, then the stream ends.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => continue,
        };
        // Handed to tungstenite before anything more is read (see `Conn::poll_event`).
        conn.answer(reply);
    };
    stop_streams.cancel();
    if cut.is_cancelled() {
        // The subscriber is not reading: its close frame could wait forever. End it now.
        return Err(Error::Protocol("slow subscriber cut off".into()));
    }
    if shutting_down && failed.is_none() {
        drain(&mut conn, &cfg).await;
    }
    streams.close();
    drop(outbox);
    let grace = t.shutdown_grace;
    let written = tokio::time::timeout(grace, async {
        if failed.is_some() {
            conn.close_queue();
            streams.wait().await;
            return Ok(());
        }
        // Stream tasks end on `stop_streams`; what they queued before is written meanwhile, and
        // the close goes behind every answer already due: in-flight messages finish first.
        if let ((), Some(e)) = service::writing_while(&mut conn, streams.wait()).await {
            return Err(e);
        }
        poll_fn(|cx| conn.poll_written(cx)).await?;
        if let Some(close) = our_close.clone() {
            conn.held = Some(Held {
                msg: close,
                answer: false,
                _budget: None,
            });
            poll_fn(|cx| conn.poll_written(cx)).await?;
        }
        Ok::<(), WsError>(())
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failed = failed.or(Some(e)),
        // A peer that reads nothing would otherwise keep the connection alive for as long as
        // it likes.
        Err(_) => return Err(Error::Timeout("writing the close")),
    }
    if our_close.is_some() && failed.is_none() {
        // Wait (bounded) for the peer's close reply.
        let _ = tokio::time::timeout(grace, async {
            while let Event::Message(m) = poll_fn(|cx| conn.poll_event(cx)).await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // End our sending side (FIN on TCP, END_STREAM on an HTTP/2 stream) and read to the end, so
    // neither side resets a stream the other still reads.
    let mut io = conn.ws.into_inner().into_inner();
    let _ = tokio::time::timeout(grace, async {
        io.shutdown().await?;
        let mut sink = [0u8; 512];
        while io.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
    failed.map_or(Ok(()), |e| Err(ws_err(e)))
}

/// At shutdown, before the close frame: echoes that already reached the server are answered
/// (and an answer held when the stop came goes first). Reads until the connection has been quiet
/// for [`service::DRAIN_QUIET`], for at most [`service::DRAIN_MAX`]; a server stream request, an
/// invalid wirelab message or the peer's close ends it (no new stream starts once the server is
/// going away).
async fn drain<S>(conn: &mut Conn<S>, cfg: &ServerConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let until = tokio::time::Instant::now() + service::DRAIN_MAX;
    loop {
        let quiet = until.min(tokio::time::Instant::now() + service::DRAIN_QUIET);
        let Ok(Event::Message(msg)) =
            tokio::time::timeout_at(quiet, poll_fn(|cx| conn.poll_event(cx))).await
        else {
            return;
        };
        let reply = match msg {
            Message::Binary(b) if cfg.raw_echo => Message::Binary(b),
            Message::Binary(b) if incoming(&b, cfg) == Incoming::Echo => Message::Binary(b),
            Message::Text(t) => Message::Text(t),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            _ => return,
        };
        conn.answer(reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_are_echoed_and_only_bad_wirelab_messages_refused() {
        let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        assert_eq!(incoming(b"hello", &cfg), Incoming::Echo);
        assert_eq!(incoming(&[0u8; 64], &cfg), Incoming::Echo);
        assert_eq!(incoming(b"", &cfg), Incoming::Echo);
        let echo = codec::encode(0, 1, 0, codec::Kind::Echo, 64).unwrap();
        assert_eq!(incoming(&echo, &cfg), Incoming::Echo);
        let req = codec::StreamRequest {
            count: 3,
            size: 64,
            interval_ms: 0,
        }
        .encode(0, 0, 0);
        assert!(matches!(incoming(&req, &cfg), Incoming::Stream(_)));
        // The magic, then nonsense: a wirelab message gone wrong.
        assert_eq!(incoming(b"WL", &cfg), Incoming::Bad);
        let mut bad = echo.to_vec();
        bad[3] = 9;
        assert_eq!(incoming(&bad, &cfg), Incoming::Bad);
        let mut short = echo.to_vec();
        short.truncate(40);
        assert_eq!(incoming(&short, &cfg), Incoming::Bad);
    }

    /// One slot of the outbound channel stays small (tokio allocates 32 per connection).
    #[test]
    fn queued_is_small() {
        assert!(
            std::mem::size_of::<Queued>() <= 24,
            "{}",
            std::mem::size_of::<Queued>()
        );
    }
}
