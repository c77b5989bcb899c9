//! The server side of the service contract, shared by every transport.
//!
//! [`classify`] is pure: it decides what a received message asks for. [`drive_stream`] paces a
//! server stream on the tokio clock and hands each message to the transport's sink.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::codec::{self, CodecError, Kind, StreamRequest};
use crate::config::Limits;
use crate::error::Error;

/// What the server must do with one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return the received bytes unchanged.
    Echo,
    /// Send a server stream on the message's logical stream.
    Stream(StreamPlan),
    /// Subscribe the message's logical stream to a topic: register with the server's
    /// [`crate::fanout::Hub`], answer with the message itself, then forward every delivery
    /// ([`crate::fanout::drive_subscription`]).
    Subscribe {
        /// The subscriber's logical stream.
        stream: u32,
        /// What it asked for.
        req: codec::Subscribe,
    },
    /// Broadcast the message to the topic's subscribers ([`crate::fanout::Hub::publish`]);
    /// nothing is answered.
    Publish {
        /// The topic.
        topic: u32,
    },
    /// Start or resume a resumable server stream on the message's logical stream
    /// ([`crate::resume::Registry::attach`]).
    Resume {
        /// The logical stream it is sent on.
        stream: u32,
        /// What it asked for.
        req: codec::Resume,
    },
}

/// Decides what a message asks for, checking it against `limits`.
pub fn classify(msg: &[u8], limits: &Limits) -> Result<Action, CodecError> {
    let h = codec::decode(msg, limits.max_message)?;
    match h.kind {
        Kind::Echo => Ok(Action::Echo),
        Kind::StreamRequest => {
            let req = StreamRequest::decode(msg)?;
            req.validate(limits.max_message, limits.max_stream_count)?;
            Ok(Action::Stream(StreamPlan {
                stream: h.stream,
                req,
            }))
        }
        Kind::Subscribe => {
            let req = codec::Subscribe::decode(msg)?;
            req.validate(crate::fanout::MAX_QUEUE)?;
            Ok(Action::Subscribe {
                stream: h.stream,
                req,
            })
        }
        Kind::Publish => Ok(Action::Publish {
            topic: codec::publish_topic(msg)?,
        }),
        Kind::Resume => {
            let req = codec::Resume::decode(msg)?;
            req.stream
                .validate(limits.max_message, limits.max_stream_count)?;
            Ok(Action::Resume {
                stream: h.stream,
                req,
            })
        }
        Kind::StreamData | Kind::StreamEnd | Kind::Deliver | Kind::ResumeAnswer => Err(
            CodecError::BadStreamRequest("server-to-client kind sent to the server"),
        ),
    }
}

/// A validated server stream: which logical stream, and what to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    /// Logical stream the messages belong to.
    pub stream: u32,
    /// What the client asked for.
    pub req: StreamRequest,
}

impl StreamPlan {
    /// Message `seq` of the stream, stamped with `now_ns`.
    pub fn data(&self, seq: u64, now_ns: u64) -> Bytes {
        // `validate` guaranteed size >= HEADER_LEN, so encode cannot fail; fall back to an
        // end marker rather than panic if a caller skipped validation.
        codec::encode(
            self.stream,
            seq,
            now_ns,
            Kind::StreamData,
            self.req.size as usize,
        )
        .unwrap_or_else(|_| self.end(now_ns))
    }

    /// The end-of-stream marker.
    pub fn end(&self, now_ns: u64) -> Bytes {
        codec::encode(
            self.stream,
            u64::from(self.req.count),
            now_ns,
            Kind::StreamEnd,
            codec::HEADER_LEN,
        )
        .unwrap_or_default()
    }
}

/// Sends the whole stream through `sink`, one message per interval (measured from the stream's
/// start, so a slow send does not push every later message back), then the end marker.
///
/// Stops early with the sink's error. Transports that carry the end implicitly (HTTP bodies end
/// with the response) pass `send_end = false`.
pub async fn drive_stream<F, Fut, E>(plan: StreamPlan, send_end: bool, mut sink: F) -> Result<(), E>
where
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let interval = Duration::from_millis(u64::from(plan.req.interval_ms));
    let start = tokio::time::Instant::now();
    for seq in 0..plan.req.count {
        if !interval.is_zero() && seq > 0 {
            tokio::time::sleep_until(start + interval * seq).await;
        }
        sink(plan.data(u64::from(seq), clock::now_ns())).await?;
    }
    if send_end {
        sink(plan.end(clock::now_ns())).await?;
    }
    Ok(())
}

/// Starts forwarding a new subscription on `tasks`: registers stream `stream` with `hub`
/// (before this returns, so every later publish reaches it), then answers with `ack` and
/// forwards each delivery through `sink` until `stop` fires, the sink fails, or the subscriber
/// is cut off for falling behind ([`codec::SlowPolicy::Disconnect`]): then `cut` is cancelled,
/// and the transport closes the subscriber's connection or stream.
#[allow(clippy::too_many_arguments)]
pub fn spawn_subscription<F, Fut, E>(
    tasks: &TaskTracker,
    hub: &crate::fanout::Hub,
    stream: u32,
    req: codec::Subscribe,
    ack: Bytes,
    stop: CancellationToken,
    cut: CancellationToken,
    sink: F,
) where
    F: FnMut(Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
{
    let sub = hub.subscribe(stream, req);
    tasks.spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            end = crate::fanout::drive_subscription(sub, ack, sink) => {
                if end == crate::fanout::SubEnd::Disconnected {
                    cut.cancel();
                }
            }
        }
    });
}

/// Starts serving a resume request on `tasks`: attaches logical stream `stream` to `registry`
/// ([`crate::resume::Registry::attach`]: the answer, the replay, live messages) and sends
/// through `sink` until the stream ends or `stop` fires (the connection or request body
/// ended). A new stream's producer runs on until `shutdown`, into its replay window.
#[allow(clippy::too_many_arguments)]
pub fn spawn_resume<F, Fut, E>(
    tasks: &TaskTracker,
    registry: &crate::resume::Registry,
    stream: u32,
    req: codec::Resume,
    stop: CancellationToken,
    shutdown: CancellationToken,
    sink: F,
) where
    F: FnMut(Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Send,
{
    let reg = registry.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = reg.attach(stream, req, shutdown, sink) => {}
        }
    });
}

/// Publishes `msg` on `topic` through `hub`, waiting (under the block policy) at most until
/// `stop` fires.
pub async fn publish(hub: &crate::fanout::Hub, topic: u32, msg: &Bytes, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = hub.publish(topic, msg) => {}
    }
}

/// At shutdown, [`serve_messages`] answers messages until the connection has been quiet this
/// long (messages already in the socket's buffer arrive at once).
pub const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// The longest [`serve_messages`] drains at shutdown, however busy the connection.
pub const DRAIN_MAX: Duration = Duration::from_millis(200);

/// Answers handed to the writer are flushed once nothing more can be read now, or after this
/// many, whichever comes first: messages that arrive together leave together, and a peer that
/// never pauses still gets its answers.
const FLUSH_EVERY: usize = 16;

/// The write side of [`serve_messages`], driven by the same task that reads: an echo is framed
/// and written by the task that read it, with no hand-off to a writer task. Server streams,
/// subscriptions and resumes are tasks of their own and queue through `rx`.
struct Out<W> {
    writer: W,
    /// The streams' queue, made when the first one starts: most connections only echo, and a
    /// channel costs its first block of slots (about 1.3 KiB) even when unused.
    rx: Option<mpsc::Receiver<Bytes>>,
    /// A message the writer could not take yet; nothing more is read or taken from the queue
    /// until it has.
    held: Option<Bytes>,
    /// Messages handed to the writer since the last completed flush.
    unflushed: usize,
}

/// What the connection has for [`serve_messages`] next.
enum Next {
    Message(BytesMut),
    Ended,
    ReadFailed(std::io::Error),
    WriteFailed(std::io::Error),
}

impl<W: Sink<Bytes, Error = std::io::Error> + Unpin> Out<W> {
    /// Hands what is held, then what the streams queued, to the writer. Ready once nothing is
    /// held (the queue empty for now); Pending while the writer cannot take more.
    fn poll_hand_over(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.held.is_none() {
                let Some(rx) = self.rx.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(m)) => self.held = Some(m),
                    _ => return Poll::Ready(Ok(())),
                }
            }
            ready!(Pin::new(&mut self.writer).poll_ready(cx))?;
            let Some(m) = self.held.take() else {
                continue;
            };
            Pin::new(&mut self.writer).start_send(m)?;
            self.unflushed += 1;
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.unflushed > 0 {
            ready!(Pin::new(&mut self.writer).poll_flush(cx))?;
            self.unflushed = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// The streams' sender, making the queue on first use.
    fn queue(&mut self, tx: &mut Option<mpsc::Sender<Bytes>>) -> mpsc::Sender<Bytes> {
        tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(256);
            self.rx = Some(rx);
            tx
        })
        .clone()
    }

    /// The next message from `reader`, writing meanwhile: what is held is handed over before
    /// anything more is read (backpressure: a peer that does not read is not read from), and
    /// flushed when there is nothing more to read now.
    fn poll_next<R>(&mut self, cx: &mut Context<'_>, reader: &mut R) -> Poll<Next>
    where
        R: Stream<Item = std::io::Result<BytesMut>> + Unpin,
    {
        loop {
            match self.poll_hand_over(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Next::WriteFailed(e)),
                Poll::Pending => return Poll::Pending,
            }
            let batch_full = self.unflushed >= FLUSH_EVERY;
            if !batch_full {
                match reader.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(m))) => return Poll::Ready(Next::Message(m)),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Next::ReadFailed(e)),
                    Poll::Ready(None) => return Poll::Ready(Next::Ended),
                    Poll::Pending => {}
                }
            }
            match self.poll_flush(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Next::WriteFailed(e)),
                Poll::Ready(Ok(())) if batch_full => continue,
                _ => return Poll::Pending,
            }
        }
    }
}

impl<W: Sink<Bytes, Error = std::io::Error> + Unpin> OneTaskWriter for Out<W> {
    type Error = std::io::Error;

    /// Everything handed over and flushed.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.poll_hand_over(cx))?;
        self.poll_flush(cx)
    }

    /// Stops the streams' sends: nothing more will be written.
    fn close_queue(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.close();
        }
    }
}

/// The write side of a connection that one task reads and writes ([`serve_messages`]' floors,
/// the ws server's session): answers are handed to the writer by the task that read their
/// requests, and server streams queue for it.
pub trait OneTaskWriter {
    /// The writer's error.
    type Error;

    /// Hands everything owed to the writer and flushes it: ready once all of it is written.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// Stops the server streams' sends: nothing more will be written.
    fn close_queue(&mut self);
}

/// Waits for `fut` while `w` writes what is queued, so `fut` is never waiting for this
/// connection's own output: streams finishing their last sends, a publication blocked on a
/// subscriber of this same connection, the handshake's confirmation while answers are
/// unflushed. A write error closes the queue, so senders stop, and is returned beside `fut`'s
/// output.
pub async fn writing_while<W: OneTaskWriter, F: Future>(
    w: &mut W,
    fut: F,
) -> (F::Output, Option<W::Error>) {
    let mut fut = std::pin::pin!(fut);
    let mut failed = None;
    let out = std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if failed.is_none() {
            if let Poll::Ready(Err(e)) = w.poll_written(cx) {
                failed = Some(e);
                w.close_queue();
            }
        }
        Poll::Pending
    })
    .await;
    (out, failed)
}

/// Serves one ordered message connection whose framing the caller has already set up: a tcp
/// connection, or one QUIC stream. Echoes are written back in order, server streams are
/// interleaved with them as they are paced. One task reads and writes (see [`Out`]): an echo
/// is answered without a hand-off between tasks, as a hand-written echo server would.
///
/// - `idle`: how long a read may wait; `None` leaves idleness to the transport (QUIC's idle
///   timeout).
/// - `before_stream` runs before each server stream starts (QUIC uses it to hold streams back
///   until the handshake is confirmed: a replayed 0-RTT request must not make the server send).
/// - On `shutdown` it answers the echoes that already reached it (until the connection is quiet
///   for [`DRAIN_QUIET`], at most [`DRAIN_MAX`]), then stops reading, writes every answer
///   already due, ends in-flight server streams and closes the writer (FIN).
///
/// Subscribe and publish messages go to `hub` ([`spawn_subscription`], [`publish`]); a
/// subscriber cut off for falling behind has its connection ended at once (the writer is
/// abandoned, not drained: the peer is not reading).
///
/// Returns the closed writer, so a caller can wait for the peer's acknowledgement, and the
/// first error.
#[allow(clippy::too_many_arguments)]
pub async fn serve_messages<R, W, G, GF>(
    mut reader: R,
    writer: W,
    limits: Limits,
    hub: crate::fanout::Hub,
    resume: crate::resume::Registry,
    idle: Option<Duration>,
    shutdown: CancellationToken,
    mut before_stream: G,
) -> (Option<W>, Result<(), Error>)
where
    R: Stream<Item = std::io::Result<BytesMut>> + Unpin,
    W: Sink<Bytes, Error = std::io::Error> + Unpin + Send + 'static,
    G: FnMut() -> GF,
    GF: Future<Output = Result<(), Error>>,
{
    // The streams' sender, once one has started (see `Out::rx`).
    let mut tx: Option<mpsc::Sender<Bytes>> = None;
    let mut out = Out {
        writer,
        rx: None,
        held: None,
        unflushed: 0,
    };
    let streams = TaskTracker::new();
    let cut = CancellationToken::new();
    // Ends this connection's subscriptions when its read side ends.
    let subs_stop = shutdown.child_token();
    let mut draining = false;
    let mut write_failed = false;
    // The idle timer is armed once and moved on only when it fires early: re-arming it for
    // every message would cost a timer-wheel update per echo.
    const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
    let mut last_read = tokio::time::Instant::now();
    let mut idle_timer =
        std::pin::pin!(tokio::time::sleep_until(last_read + idle.unwrap_or(NEVER)));
    let mut stopped = std::pin::pin!(shutdown.cancelled());
    let mut cut_off = std::pin::pin!(cut.cancelled());
    let result = loop {
        let next = tokio::select! {
            biased;
            _ = &mut stopped => {
                draining = true;
                break Ok(());
            }
            _ = &mut cut_off => break Err(Error::Protocol("slow subscriber cut off".into())),
            _ = &mut idle_timer, if idle.is_some() => {
                let due = last_read + idle.unwrap_or(NEVER);
                if due > tokio::time::Instant::now() {
                    idle_timer.as_mut().reset(due);
                    continue;
                }
                break Err(Error::Timeout("idle connection"));
            }
            n = std::future::poll_fn(|cx| out.poll_next(cx, &mut reader)) => n,
        };
        let msg = match next {
            Next::Message(m) => m.freeze(),
            Next::Ended => break Ok(()),
            Next::ReadFailed(e) => break Err(Error::Io(e)),
            Next::WriteFailed(e) => {
                write_failed = true;
                break Err(Error::Io(e));
            }
        };
        last_read = tokio::time::Instant::now();
        match classify(&msg, &limits) {
            // Handed to the writer before anything more is read (`Out::poll_next`).
            Ok(Action::Echo) => out.held = Some(msg),
            Ok(Action::Stream(plan)) => {
                let (ready, write_err) = writing_while(&mut out, before_stream()).await;
                if let Some(e) = write_err {
                    write_failed = true;
                    break Err(Error::Io(e));
                }
                if let Err(e) = ready {
                    break Err(e);
                }
                let (tx, sd) = (out.queue(&mut tx), shutdown.clone());
                streams.spawn(async move {
                    let send = |m| {
                        let tx = tx.clone();
                        async move { tx.send(m).await.map_err(|_| ()) }
                    };
                    tokio::select! {
                        _ = sd.cancelled() => {}
                        _ = drive_stream(plan, true, send) => {}
                    }
                });
            }
            Ok(Action::Subscribe { stream, req }) => {
                let tx = out.queue(&mut tx);
                let send = move |m| {
                    let tx = tx.clone();
                    async move { tx.send(m).await }
                };
                let (stop, c) = (subs_stop.clone(), cut.clone());
                spawn_subscription(&streams, &hub, stream, req, msg, stop, c, send);
            }
            Ok(Action::Publish { topic }) => {
                if let ((), Some(e)) =
                    writing_while(&mut out, publish(&hub, topic, &msg, &shutdown)).await
                {
                    write_failed = true;
                    break Err(Error::Io(e));
                }
            }
            Ok(Action::Resume { stream, req }) => {
                let (ready, write_err) = writing_while(&mut out, before_stream()).await;
                if let Some(e) = write_err {
                    write_failed = true;
                    break Err(Error::Io(e));
                }
                if let Err(e) = ready {
                    break Err(e);
                }
                let tx = out.queue(&mut tx);
                let send = move |m| {
                    let tx = tx.clone();
                    async move { tx.send(m).await }
                };
                let (stop, sd) = (subs_stop.clone(), shutdown.clone());
                spawn_resume(&streams, &resume, stream, req, stop, sd, send);
            }
            Err(e) => break Err(Error::Codec(e)),
        }
    };
    subs_stop.cancel();
    if cut.is_cancelled() {
        // The peer is not reading: end the connection without waiting for its writes.
        streams.close();
        return (None, result);
    }
    if draining && !write_failed {
        // Shutdown: echoes that already reached us are answered before the end. Read until
        // the connection has been quiet for DRAIN_QUIET (what is in the socket's buffer comes
        // at once; the wait lets the reactor see it), for at most DRAIN_MAX; no new server
        // stream starts. What arrives later meets the FIN: this protocol has no GOAWAY.
        let until = tokio::time::Instant::now() + DRAIN_MAX;
        while let Ok(Next::Message(m)) = tokio::time::timeout_at(
            until.min(tokio::time::Instant::now() + DRAIN_QUIET),
            std::future::poll_fn(|cx| out.poll_next(cx, &mut reader)),
        )
        .await
        {
            let m = m.freeze();
            if classify(&m, &limits) != Ok(Action::Echo) {
                break;
            }
            out.held = Some(m);
        }
    }
    streams.close();
    drop(tx);
    // Every answer already queued is written before FIN; streams end on `shutdown` or when
    // their sends fail, what they queued before is written meanwhile.
    let mut written = Ok(());
    if write_failed {
        out.close_queue();
        streams.wait().await;
    } else {
        let ((), e) = writing_while(&mut out, streams.wait()).await;
        if let Some(e) = e {
            written = Err(e);
            write_failed = true;
        }
    }
    if !write_failed {
        written = async {
            std::future::poll_fn(|cx| out.poll_written(cx)).await?;
            out.writer.close().await
        }
        .await;
    }
    (Some(out.writer), result.and(written.map_err(Error::Io)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_echo_and_stream() {
        let limits = Limits::default();
        let m = codec::encode(1, 1, 1, Kind::Echo, 100).unwrap();
        assert_eq!(classify(&m, &limits), Ok(Action::Echo));
        let r = StreamRequest {
            count: 3,
            size: 64,
            interval_ms: 0,
        };
        match classify(&r.encode(5, 0, 0), &limits) {
            Ok(Action::Stream(p)) => assert_eq!((p.stream, p.req), (5, r)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn classify_rejects_bad_input() {
        let limits = Limits {
            max_message: 64,
            ..Limits::default()
        };
        let big = codec::encode(1, 1, 1, Kind::Echo, 65).unwrap();
        assert!(matches!(
            classify(&big, &limits),
            Err(CodecError::Oversized { .. })
        ));
        let data = codec::encode(1, 1, 1, Kind::StreamData, 40).unwrap();
        assert!(classify(&data, &limits).is_err());
        let r = StreamRequest {
            count: 3,
            size: 65,
            interval_ms: 0,
        };
        assert!(classify(&r.encode(0, 0, 0), &limits).is_err());
    }

    /// The 0-RTT replay gate: an echo is answered while the gate is shut, a server stream
    /// starts only once it opens.
    #[tokio::test]
    async fn serve_messages_holds_server_streams_at_the_gate() {
        use tokio_util::codec::{FramedRead, FramedWrite};
        let (client, server) = tokio::io::duplex(1 << 16);
        let (srd, swr) = tokio::io::split(server);
        let (crd, cwr) = tokio::io::split(client);
        let mut to_server = FramedWrite::new(cwr, crate::net::length_prefixed(1 << 20));
        let mut from_server = FramedRead::new(crd, crate::net::length_prefixed(1 << 20));
        let (asked_tx, mut asked_rx) = mpsc::channel::<()>(1);
        let (open_tx, open_rx) = tokio::sync::watch::channel(false);
        let gate = move || {
            let (asked, mut open) = (asked_tx.clone(), open_rx.clone());
            async move {
                let _ = asked.send(()).await;
                open.wait_for(|o| *o)
                    .await
                    .map_err(|_| Error::ConnectionClosed)?;
                Ok(())
            }
        };
        let serve = tokio::spawn(serve_messages(
            FramedRead::new(srd, crate::net::length_prefixed(1 << 20)),
            FramedWrite::new(swr, crate::net::length_prefixed(1 << 20)),
            Limits::default(),
            crate::fanout::Hub::new(),
            crate::resume::Registry::default(),
            None,
            CancellationToken::new(),
            gate,
        ));
        let echo = codec::encode(0, 1, 1, Kind::Echo, 64).unwrap();
        to_server.send(echo.clone()).await.unwrap();
        assert_eq!(from_server.next().await.unwrap().unwrap(), echo);
        let req = StreamRequest {
            count: 3,
            size: 40,
            interval_ms: 0,
        };
        to_server.send(req.encode(0, 2, 2)).await.unwrap();
        asked_rx.recv().await.unwrap();
        // The server is waiting at the gate: nothing of the stream can have been sent.
        assert!(futures_util::FutureExt::now_or_never(from_server.next()).is_none());
        open_tx.send(true).unwrap();
        for seq in 0..3 {
            let m = from_server.next().await.unwrap().unwrap();
            let h = codec::decode(&m, 1 << 20).unwrap();
            assert_eq!((h.kind, h.seq), (Kind::StreamData, seq));
        }
        let end = from_server.next().await.unwrap().unwrap();
        assert_eq!(codec::decode(&end, 1 << 20).unwrap().kind, Kind::StreamEnd);
        SinkExt::<Bytes>::close(&mut to_server).await.unwrap();
        let (_, r) = serve.await.unwrap();
        r.unwrap();
    }

    #[tokio::test]
    async fn drive_stream_sends_count_then_end() {
        let plan = StreamPlan {
            stream: 2,
            req: StreamRequest {
                count: 4,
                size: 48,
                interval_ms: 0,
            },
        };
        let mut got = Vec::new();
        drive_stream(plan, true, |m| {
            got.push(m);
            async { Ok::<(), ()>(()) }
        })
        .await
        .unwrap();
        let heads: Vec<_> = got.iter().map(|m| codec::decode(m, 100).unwrap()).collect();
        assert_eq!(heads.len(), 5);
        for (i, h) in heads[..4].iter().enumerate() {
            assert_eq!(
                (h.stream, h.seq, h.kind, h.len),
                (2, i as u64, Kind::StreamData, 48)
            );
        }
        assert_eq!(heads[4].kind, Kind::StreamEnd);
    }
}
