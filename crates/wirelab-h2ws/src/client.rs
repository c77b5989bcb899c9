use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use wirelab_core::mux::{Mux, MuxChannel, MuxSession};
use wirelab_core::{net, Client, ClientConfig, Error, Result, Sharing};
use wirelab_websocket::client::EndAfterClose;
use wirelab_websocket::gate::Gated;

type Sender = SendRequest<Empty<Bytes>>;

/// How long the client waits for the server's `SETTINGS_ENABLE_CONNECT_PROTOCOL` at most. The
/// server's SETTINGS is the first frame it sends, so this is one round trip plus slack.
const SETTING_WAIT: Duration = Duration::from_secs(3);

/// An h2ws client session: K WebSockets on one HTTP/2 connection, or one connection each.
#[derive(Debug)]
pub struct H2wsClient {
    session: MuxSession,
    senders: Vec<Sender>,
    conns: Vec<JoinHandle<()>>,
    grace: Duration,
}

fn proto(e: hyper::Error) -> Error {
    wirelab_http::protocol_error(e)
}

/// A connection's socket that notes every read that brought bytes. hyper reads the server's
/// SETTINGS in a task of its own and records `SETTINGS_ENABLE_CONNECT_PROTOCOL` as a flag
/// without waking anyone; the handshake waits on these notes and looks at the flag after each.
struct NoteReads<S> {
    io: S,
    read: Arc<Notify>,
}

impl<S: AsyncRead + Unpin> AsyncRead for NoteReads<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.read.notify_one();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoteReads<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The HTTP/2 handshake, then a bounded wait for the server's extended-CONNECT setting.
async fn handshake<S>(io: S, cfg: &ClientConfig) -> Result<(Sender, JoinHandle<()>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let read = Arc::new(Notify::new());
    let io = NoteReads {
        io,
        read: read.clone(),
    };
    let (sender, mut conn) = wirelab_http::h2::client_builder(&cfg.h2)
        .handshake(TokioIo::new(io))
        .await
        .map_err(proto)?;
    // Look at the flag after every read of the connection (the note wakes this task once
    // hyper's task, which read the bytes, has handled them), and every millisecond in case a
    // look came between a read and its handling. (A loop that yielded to the runtime instead
    // kept a pinned client CPU busy while the runtime's worker parked on the I/O driver waited
    // on that CPU for the scheduler to preempt it: 4 ms per set-up under `--cpu split`.)
    let wait = cfg.timeouts.handshake.min(SETTING_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    while !conn.is_extended_connect_protocol_enabled() {
        tokio::select! {
            r = &mut conn => {
                return Err(match r {
                    Ok(()) => Error::ConnectionClosed,
                    Err(e) => proto(e),
                });
            }
            _ = read.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Protocol(format!(
                    "the server did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL) within {wait:?}: it does not offer WebSocket over HTTP/2 (RFC 8441)"
                )));
            }
        }
    }
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, task))
}

async fn connect_one(cfg: &ClientConfig) -> Result<(Sender, JoinHandle<()>)> {
    handshake(net::connect_io(cfg, Some(b"h2")).await?, cfg).await
}

/// Opens one WebSocket (one HTTP/2 stream) carrying logical stream `id`.
async fn open_websocket(
    sender: &mut Sender,
    cfg: &ClientConfig,
    id: u32,
) -> Result<(Mux, Vec<MuxChannel>)> {
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let uri = format!(
        "{scheme}://{}:{}{}",
        cfg.server_name,
        cfg.addr.port(),
        crate::PATH
    );
    let req = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(uri)
        .header("sec-websocket-version", "13")
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(Empty::new())
        .map_err(|e| Error::Config(e.to_string()))?;
    sender.ready().await.map_err(proto)?;
    let mut resp = tokio::time::timeout(cfg.timeouts.handshake, sender.send_request(req))
        .await
        .map_err(|_| Error::Timeout("extended CONNECT"))?
        .map_err(proto)?;
    if resp.status() != StatusCode::OK {
        return Err(Error::Status(resp.status().as_u16()));
    }
    let upgraded = hyper::upgrade::on(&mut resp).await.map_err(proto)?;
    let ws = WebSocketStream::from_raw_socket(
        EndAfterClose::new(Gated::new(TokioIo::new(upgraded), cfg.limits.read_buffer)),
        Role::Client,
        Some(wirelab_websocket::config(&cfg.limits)),
    )
    .await;
    Ok(wirelab_websocket::client::open(ws, &[id]))
}

impl Client for H2wsClient {
    type Channel = MuxChannel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        cfg.h2.validate().map_err(Error::Config)?;
        let n_conns = match cfg.sharing {
            Sharing::Shared => 1,
            Sharing::Pool => cfg.streams.max(1) as usize,
        };
        let (mut senders, mut conns) = (Vec::new(), Vec::new());
        for _ in 0..n_conns {
            let (s, c) = connect_one(cfg).await?;
            senders.push(s);
            conns.push(c);
        }
        let (mut muxes, mut channels) = (Vec::new(), Vec::new());
        for id in 0..cfg.streams {
            let n = senders.len();
            let (m, c) = open_websocket(&mut senders[id as usize % n], cfg, id).await?;
            muxes.push(m);
            channels.extend(c);
        }
        Ok(Self {
            session: MuxSession::new(muxes, channels, cfg.timeouts.shutdown_grace),
            senders,
            conns,
            grace: cfg.timeouts.shutdown_grace,
        })
    }

    fn channels(&mut self) -> Vec<MuxChannel> {
        self.session.take_channels()
    }

    async fn close(self) -> Result<()> {
        // Each WebSocket: close handshake, then END_STREAM both ways. Then the connection.
        let closed = self.session.close().await;
        drop(self.senders);
        for c in self.conns {
            let _ = tokio::time::timeout(self.grace, c).await;
        }
        closed
    }
}
