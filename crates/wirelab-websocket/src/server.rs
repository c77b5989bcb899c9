//! The server side of a WebSocket session, whatever carried the handshake.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
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
use wirelab_core::service::{self, Action};
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

type Sink<S> = SplitSink<WebSocketStream<Gated<S>>, Message>;

/// A message on its way to the writer, holding its share of the write budget until tungstenite
/// has taken it. The message is boxed: tokio's channel allocates its slots 32 at a time when it
/// is created, so every connection holds 32 of them, idle or not (3 KiB with the message inline,
/// under 1 KiB boxed; the box costs one allocation per message).
struct Queued {
    msg: Box<Message>,
    _budget: Option<OwnedSemaphorePermit>,
}

/// The session's outbound queue, bounded in bytes ([`wirelab_core::Limits::write_queue`]): a
/// message waits for budget before it is queued, and gives it back once the writer has handed it
/// to tungstenite. So echoes stop being produced, and the session stops reading, while a peer
/// does not read what it is sent; server streams pause the same way.
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

    /// Queues `m` once the budget allows. Fails when the writer is gone.
    async fn send(&self, m: Message) -> std::result::Result<(), ()> {
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(self.cost(&m))
            .await
            .map_err(|_| ())?;
        self.tx
            .send(Queued {
                msg: Box::new(m),
                _budget: Some(permit),
            })
            .map_err(|_| ())
    }

    /// Queues `m` only if the budget allows it now (keepalive pings: pointless to a peer that
    /// is not reading).
    fn try_send(&self, m: Message) {
        if let Ok(permit) = self.budget.clone().try_acquire_many_owned(self.cost(&m)) {
            let _ = self.tx.send(Queued {
                msg: Box::new(m),
                _budget: Some(permit),
            });
        }
    }

    /// Queues `m` outside the budget: the one close frame, which must not wait behind it.
    fn send_unbudgeted(&self, m: Message) {
        let _ = self.tx.send(Queued {
            msg: Box::new(m),
            _budget: None,
        });
    }
}

/// Writes queued messages, batching whatever is queued into one flush; stops after a close
/// frame (RFC 6455 §5.5.1: nothing is sent after it). Returns the sink for the final shutdown.
async fn write_loop<S>(
    mut sink: Sink<S>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    budget: Arc<Semaphore>,
) -> (Sink<S>, Result<()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let r = async {
        while let Some(mut q) = rx.recv().await {
            loop {
                let closing = matches!(*q.msg, Message::Close(_));
                // The budget is returned when `q` drops, after tungstenite took the frame.
                sink.feed(*q.msg).await.map_err(ws_err)?;
                if closing {
                    return sink.flush().await.map_err(ws_err);
                }
                match rx.try_recv() {
                    Ok(next) => q = next,
                    Err(_) => break,
                }
            }
            sink.flush().await.map_err(ws_err)?;
        }
        Ok(())
    }
    .await;
    // Nobody waits for budget that can no longer be used.
    budget.close();
    (sink, r)
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
/// close (1003 only for a wirelab message that is invalid). Returns when the session is over, bounded by the shutdown grace once
/// `shutdown` fires.
pub async fn session<S>(
    ws: WebSocketStream<Gated<S>>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (tx, rx) = Outbox::new(cfg.limits.write_queue);
    let writer = tokio::spawn(write_loop(sink, rx, tx.budget.clone()));
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
    let mut idle_deadline = tokio::time::Instant::now() + t.idle;

    let mut shutting_down = false;
    // An answer read but not yet queued when the stop came.
    let mut owed: Option<Message> = None;
    // `Some(close)` when we start the close handshake; `None` when the peer did or TCP died.
    let our_close = loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => {
                shutting_down = true;
                break Some(close_frame(CloseCode::Away, "server shutting down"));
            }
            _ = ping.tick(), if t.ping_interval.is_some() => {
                tx.try_send(Message::Ping(Bytes::new()));
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline) => break Some(close_frame(CloseCode::Away, "idle timeout")),
            _ = cut.cancelled() => break Some(close_frame(CloseCode::Policy, "slow subscriber cut off")),
            item = stream.next() => item,
        };
        idle_deadline = tokio::time::Instant::now() + t.idle;
        let msg = match item {
            None => break None,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                debug!("ws read error: {e}");
                break close_for(&e);
            }
        };
        let reply = match msg {
            Message::Binary(b) if cfg.raw_echo => Message::Binary(b),
            // A person trying the server by hand (a browser console, websocat) gets text back
            // as text: only wirelab control messages need the header.
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => match incoming(&b, &cfg) {
                Incoming::Echo => Message::Binary(b),
                Incoming::Stream(plan) => {
                    let (tx, stop) = (tx.clone(), stop_streams.clone());
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
                    let tx = tx.clone();
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
                    service::publish(&cfg.fanout, topic, &b, &shutdown).await;
                    continue;
                }
                Incoming::Resume { stream, req } => {
                    let tx = tx.clone();
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
        // Waiting for budget is waiting for the peer to read: bounded by the idle timeout.
        let sent = tokio::select! {
            // The answer read before the stop is still owed: the drain sends it first.
            _ = shutdown.cancelled() => {
                shutting_down = true;
                owed = Some(reply);
                break Some(close_frame(CloseCode::Away, "server shutting down"));
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                break Some(close_frame(CloseCode::Policy, "peer stopped reading"))
            }
            r = tx.send(reply.clone()) => r,
        };
        if sent.is_err() {
            break None;
        }
    };
    stop_streams.cancel();
    if cut.is_cancelled() {
        // The subscriber is not reading: its close frame could wait forever. End it now.
        writer.abort();
        return Err(Error::Protocol("slow subscriber cut off".into()));
    }
    if shutting_down {
        drain(&mut stream, &tx, &cfg, owed).await;
    }
    streams.close();
    streams.wait().await;
    let sent_close = our_close.is_some();
    if let Some(close) = our_close {
        // Queued behind every answer already due: in-flight messages finish first.
        tx.send_unbudgeted(close);
    }
    drop(tx);
    let grace = t.shutdown_grace;
    let mut writer = writer;
    let (sink, written) = match tokio::time::timeout(grace, &mut writer).await {
        Ok(Ok((sink, r))) => (sink, r),
        Ok(Err(e)) => return Err(Error::Protocol(format!("writer task: {e}"))),
        Err(_) => {
            // A peer that reads nothing would otherwise keep the writer, and the connection,
            // alive for as long as it likes.
            writer.abort();
            return Err(Error::Timeout("writing the close"));
        }
    };
    if sent_close {
        // Wait (bounded) for the peer's close reply.
        let _ = tokio::time::timeout(grace, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // End our sending side (FIN on TCP, END_STREAM on an HTTP/2 stream) and read to the end, so
    // neither side resets a stream the other still reads.
    if let Ok(ws) = stream.reunite(sink) {
        let mut io = ws.into_inner().into_inner();
        let _ = tokio::time::timeout(grace, async {
            io.shutdown().await?;
            let mut sink = [0u8; 512];
            while io.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    }
    written
}

/// At shutdown, before the close frame: echoes that already reached the server are answered.
/// Reads until the connection has been quiet for [`service::DRAIN_QUIET`], for at most
/// [`service::DRAIN_MAX`]; a server stream request, an invalid wirelab message or the peer's close ends
/// it (no new stream starts once the server is going away).
async fn drain<S>(
    stream: &mut futures_util::stream::SplitStream<WebSocketStream<Gated<S>>>,
    tx: &Outbox,
    cfg: &ServerConfig,
    owed: Option<Message>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let until = tokio::time::Instant::now() + service::DRAIN_MAX;
    if let Some(reply) = owed {
        if !matches!(
            tokio::time::timeout_at(until, tx.send(reply)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
    loop {
        let quiet = until.min(tokio::time::Instant::now() + service::DRAIN_QUIET);
        let Ok(Some(Ok(msg))) = tokio::time::timeout_at(quiet, stream.next()).await else {
            return;
        };
        let reply = match msg {
            Message::Binary(b) if cfg.raw_echo => Message::Binary(b),
            Message::Binary(b) if incoming(&b, cfg) == Incoming::Echo => Message::Binary(b),
            Message::Text(t) => Message::Text(t),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            _ => return,
        };
        if !matches!(
            tokio::time::timeout_at(until, tx.send(reply)).await,
            Ok(Ok(()))
        ) {
            return;
        }
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
