//! K logical streams over one ordered message connection (a TCP or WebSocket connection).
//!
//! One writer task owns the connection's write half and one reader task routes each received
//! message to its channel by the header's stream id. A channel that stops reading blocks the
//! reader once its queue is full: on one ordered connection every stream then waits, which is
//! exactly the head-of-line coupling the lab measures.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::codec;
use crate::config::{ClientConfig, Sharing};
use crate::error::{Error, Result};
use crate::transport::Channel;

/// Messages queued per channel before the connection's reader waits for the channel.
const CHANNEL_QUEUE: usize = 256;
/// Messages queued for the writer before senders wait.
const WRITE_QUEUE: usize = 256;

/// The write half of a message connection.
pub trait MuxWriter: Send + 'static {
    /// Queues one message (may buffer).
    fn feed(&mut self, msg: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// Writes out everything queued.
    fn flush(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Ends the connection's sending side gracefully (FIN, or a close frame).
    fn close(self) -> impl Future<Output = Result<()>> + Send;
}

/// The tasks driving one connection.
#[derive(Debug)]
pub struct Mux {
    close: Option<oneshot::Sender<()>>,
    writer: JoinHandle<Result<()>>,
    reader: JoinHandle<()>,
}

/// One logical stream on a [`Mux`].
#[derive(Debug)]
pub struct MuxChannel {
    id: u32,
    tx: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Result<Bytes>>,
    end: Arc<OnceLock<End>>,
}

/// How the connection ended, kept once for every channel: a channel that was sending, or
/// whose queue was full, when the connection ended reports the same end as the others (a
/// WebSocket's close 1001 rather than a bare "connection closed").
#[derive(Debug, Clone)]
enum End {
    Closed { code: u16, reason: String },
    ConnectionClosed,
    Other(String),
}

impl End {
    fn of(e: &Error) -> Self {
        match e {
            Error::Closed { code, reason } => End::Closed {
                code: *code,
                reason: reason.clone(),
            },
            Error::ConnectionClosed => End::ConnectionClosed,
            other => End::Other(other.to_string()),
        }
    }

    fn error(&self) -> Error {
        match self {
            End::Closed { code, reason } => Error::Closed {
                code: *code,
                reason: reason.clone(),
            },
            End::ConnectionClosed => Error::ConnectionClosed,
            End::Other(m) => Error::Protocol(m.clone()),
        }
    }
}

impl MuxChannel {
    /// The connection's end as every channel reports it.
    fn ended(&self) -> Error {
        self.end.get().map_or(Error::ConnectionClosed, End::error)
    }
}

/// Starts the writer and reader tasks for a connection carrying the logical streams `ids`.
pub fn spawn<W, R>(writer: W, reader: R, ids: &[u32]) -> (Mux, Vec<MuxChannel>)
where
    W: MuxWriter,
    R: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
{
    let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
    let (close_tx, close_rx) = oneshot::channel();
    let mut routes = Vec::with_capacity(ids.len());
    let mut channels = Vec::with_capacity(ids.len());
    let end = Arc::new(OnceLock::new());
    for &id in ids {
        let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
        routes.push((id, tx));
        channels.push(MuxChannel {
            id,
            tx: wtx.clone(),
            rx,
            end: end.clone(),
        });
    }
    drop(wtx);
    let mux = Mux {
        close: Some(close_tx),
        writer: tokio::spawn(write_loop(writer, wrx, close_rx)),
        reader: tokio::spawn(read_loop(reader, routes, end)),
    };
    (mux, channels)
}

async fn write_loop<W: MuxWriter>(
    mut w: W,
    mut rx: mpsc::Receiver<Bytes>,
    mut close: oneshot::Receiver<()>,
) -> Result<()> {
    loop {
        tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => {
                    w.feed(m).await?;
                    // Batch whatever is already queued into one flush.
                    while let Ok(m) = rx.try_recv() {
                        w.feed(m).await?;
                    }
                    w.flush().await?;
                }
                None => break,
            },
            _ = &mut close => break,
        }
    }
    // Nothing queued before the close is lost.
    while let Ok(m) = rx.try_recv() {
        w.feed(m).await?;
    }
    w.close().await
}

async fn read_loop<R>(
    mut reader: R,
    routes: Vec<(u32, mpsc::Sender<Result<Bytes>>)>,
    end: Arc<OnceLock<End>>,
) where
    R: Stream<Item = Result<Bytes>> + Unpin,
{
    let fail_all = |routes: &[(u32, mpsc::Sender<Result<Bytes>>)], e: &Error| {
        // Recorded before any channel can see its queue close, so a channel that finds its
        // queue full or closed still reports this end.
        let _ = end.set(End::of(e));
        let end = end.get().expect("just set");
        for (_, tx) in routes {
            let _ = tx.try_send(Err(end.error()));
        }
    };
    while let Some(item) = reader.next().await {
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                fail_all(&routes, &e);
                // Keep polling briefly: a WebSocket flushes its reply to the peer's close frame
                // from the read path, and the peer waits for that reply.
                for _ in 0..16 {
                    if reader.next().await.is_none() {
                        break;
                    }
                }
                return;
            }
        };
        let id = match codec::peek_header(&msg) {
            Ok(h) => h.stream,
            Err(e) => return fail_all(&routes, &Error::Codec(e)),
        };
        let Some((_, tx)) = routes.iter().find(|(i, _)| *i == id) else {
            let e = Error::Protocol(format!("message for unknown logical stream {id}"));
            return fail_all(&routes, &e);
        };
        // A dropped channel no longer wants its messages; the others still do.
        let _ = tx.send(Ok(msg)).await;
    }
    fail_all(&routes, &Error::ConnectionClosed);
}

impl Mux {
    /// Closes the connection gracefully: sends everything queued, ends the sending side, and
    /// waits (bounded by `grace`) for the peer to end its side.
    pub async fn close(mut self, grace: Duration) -> Result<()> {
        if let Some(c) = self.close.take() {
            let _ = c.send(());
        }
        let written = tokio::time::timeout(grace, &mut self.writer)
            .await
            .map_err(|_| Error::Timeout("close (writer)"))?
            .map_err(|e| Error::Protocol(format!("writer task failed: {e}")))?;
        let read = tokio::time::timeout(grace, &mut self.reader).await;
        self.reader.abort();
        written?;
        read.map_err(|_| Error::Timeout("close (waiting for the peer's close)"))?
            .map_err(|e| Error::Protocol(format!("reader task failed: {e}")))
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Channel for MuxChannel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        let h = codec::peek_header(&msg)?;
        if h.stream != self.id {
            return Err(Error::Config(format!(
                "message for logical stream {} sent on channel {}",
                h.stream, self.id
            )));
        }
        if self.tx.send(msg).await.is_err() {
            return Err(self.ended());
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Bytes> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(self.ended()),
        }
    }

    async fn server_stream(
        &mut self,
        req: codec::StreamRequest,
    ) -> Result<Vec<crate::transport::Received>> {
        crate::transport::stream_by_messages(self, req).await
    }
}

/// A client session made of one or more [`Mux`] connections.
#[derive(Debug)]
pub struct MuxSession {
    muxes: Vec<Mux>,
    channels: Vec<MuxChannel>,
    grace: Duration,
}

impl MuxSession {
    /// A session over `muxes` whose channels are `channels`.
    pub fn new(muxes: Vec<Mux>, channels: Vec<MuxChannel>, grace: Duration) -> Self {
        Self {
            muxes,
            channels,
            grace,
        }
    }

    /// Opens the session `cfg` describes: one connection carrying all K logical streams
    /// (`shared`), or one connection per logical stream (`pool`). `open` connects one
    /// connection for the given stream ids.
    pub async fn connect<F, Fut>(cfg: &ClientConfig, open: F) -> Result<Self>
    where
        F: Fn(Vec<u32>) -> Fut,
        Fut: Future<Output = Result<(Mux, Vec<MuxChannel>)>>,
    {
        let ids: Vec<u32> = (0..cfg.streams).collect();
        let groups = match cfg.sharing {
            Sharing::Shared => vec![ids],
            Sharing::Pool => ids.into_iter().map(|id| vec![id]).collect(),
        };
        let (mut muxes, mut channels) = (Vec::new(), Vec::new());
        for group in groups {
            let (m, c) = open(group).await?;
            muxes.push(m);
            channels.extend(c);
        }
        Ok(Self::new(muxes, channels, cfg.timeouts.shutdown_grace))
    }

    /// Takes the channels (once).
    pub fn take_channels(&mut self) -> Vec<MuxChannel> {
        std::mem::take(&mut self.channels)
    }

    /// Closes every connection gracefully, concurrently; returns the first error.
    pub async fn close(self) -> Result<()> {
        drop(self.channels);
        let grace = self.grace;
        let results =
            futures_util::future::join_all(self.muxes.into_iter().map(|m| m.close(grace))).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }
}
