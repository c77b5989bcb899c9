use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quinn::crypto::rustls::QuicClientConfig;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use wirelab_core::codec::StreamRequest;
use wirelab_core::tls::ALPN_H3;
use wirelab_core::transport::stream_by_messages;
use wirelab_core::{net, Channel, Client, ClientConfig, Error, Received, Result, Sharing};
use wtransport::endpoint::endpoint_side;
use wtransport::{Connection, Endpoint, RecvStream, SendStream};

use crate::server::{wt_error, UNI_STREAMS};
use crate::{CLOSE_OK, PATH, SHUTTING_DOWN};

/// A wt client session: K WebTransport streams in one session (`shared`) or one session
/// (and connection) each (`pool`).
pub struct WtClient {
    endpoint: Endpoint<endpoint_side::Client>,
    sessions: Vec<Arc<Connection>>,
    channels: Vec<WtChannel>,
    grace: Duration,
}

impl std::fmt::Debug for WtClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtClient")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// One logical stream: one bidirectional WebTransport stream, length-prefixed messages.
#[derive(Debug)]
pub struct WtChannel {
    id: u32,
    tx: FramedWrite<SendStream, LengthDelimitedCodec>,
    rx: FramedRead<RecvStream, LengthDelimitedCodec>,
}

/// The datagrams of a session: unreliable, unordered, each at most
/// [`WtDatagrams::max_size`] bytes. Clones share the session.
#[derive(Clone)]
pub struct WtDatagrams(Arc<Connection>);

impl std::fmt::Debug for WtDatagrams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtDatagrams").finish_non_exhaustive()
    }
}

impl WtDatagrams {
    /// Sends one datagram; it may be lost. Fails if it is larger than [`Self::max_size`] or the
    /// session is gone.
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        self.0
            .send_datagram(payload)
            .map_err(|e| Error::Protocol(format!("WebTransport datagram: {e}")))
    }

    /// The next datagram the server sent (its echo). Waits as long as none comes: bound it.
    pub async fn recv(&self) -> Result<Bytes> {
        self.0
            .receive_datagram()
            .await
            .map(|d| d.payload())
            .map_err(wt_error)
    }

    /// The largest payload a datagram can carry now (path MTU minus headers), if the peer
    /// accepts datagrams.
    pub fn max_size(&self) -> Option<usize> {
        self.0.max_datagram_size()
    }
}

/// Resolves every name to the configured server address (the client's `server_name` is for
/// TLS and `:authority`; the address is given).
#[derive(Debug)]
struct Fixed(SocketAddr);

impl wtransport::config::DnsResolver for Fixed {
    fn resolve(&self, _host: &str) -> Pin<Box<dyn wtransport::config::DnsLookupFuture>> {
        let addr = self.0;
        Box::pin(async move { Ok(Some(addr)) })
    }
}

/// The session URL for `cfg`: `https://<server_name>:<port>/wt`.
fn url(cfg: &ClientConfig) -> String {
    let host = &cfg.server_name;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    format!("https://{host}:{}{PATH}", cfg.addr.port())
}

impl WtClient {
    /// The datagrams of the first session (`None` before `connect` or after `close`).
    pub fn datagrams(&self) -> Option<WtDatagrams> {
        self.sessions.first().cloned().map(WtDatagrams)
    }

    /// A client endpoint for `cfg`: our TLS config with ALPN `h3`, the transport parameters of
    /// every QUIC client here (plus datagrams), on a socket with the larger buffers.
    fn endpoint(cfg: &ClientConfig) -> Result<Endpoint<endpoint_side::Client>> {
        let tls = cfg.tls.as_ref().ok_or_else(|| {
            Error::Config(
                "WebTransport runs over QUIC (TLS 1.3): the client needs a TLS config".into(),
            )
        })?;
        let mut tls = (**tls).clone();
        tls.alpn_protocols = vec![ALPN_H3.to_vec()];
        // wtransport's client waits for the full handshake before its CONNECT.
        tls.enable_early_data = false;
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?;
        let mut qc = quinn::ClientConfig::new(Arc::new(crypto));
        qc.transport_config(Arc::new(wirelab_quinn::client_transport_config(
            cfg,
            UNI_STREAMS,
            true,
        )?));
        let mut wcfg = wtransport::ClientConfig::builder()
            .with_bind_socket(wirelab_quinn::client_socket(cfg.addr)?)
            .build_with_quic_config(qc);
        wcfg.set_dns_resolver(Fixed(cfg.addr));
        Endpoint::client(wcfg).map_err(Error::Io)
    }

    async fn session(
        endpoint: &Endpoint<endpoint_side::Client>,
        cfg: &ClientConfig,
    ) -> Result<Connection> {
        let limit = cfg.timeouts.connect + cfg.timeouts.handshake;
        tokio::time::timeout(limit, endpoint.connect(url(cfg)))
            .await
            .map_err(|_| Error::Timeout("WebTransport session (QUIC handshake and CONNECT)"))?
            .map_err(|e| match e {
                wtransport::error::ConnectingError::SessionRejected => Error::Protocol(format!(
                    "the server at {} rejected the WebTransport session",
                    cfg.addr
                )),
                wtransport::error::ConnectingError::ConnectionError(c) => match wt_error(c) {
                    Error::Protocol(m) => {
                        Error::Protocol(format!("WebTransport session with {}: {m}", cfg.addr))
                    }
                    other => other,
                },
                other => {
                    Error::Protocol(format!("WebTransport session with {}: {other}", cfg.addr))
                }
            })
    }
}

impl Client for WtClient {
    type Channel = WtChannel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        if cfg.sharing == Sharing::Shared && cfg.streams > cfg.quic.max_concurrent_streams {
            return Err(Error::Config(format!(
                "{} streams in one WebTransport session exceed the QUIC stream limit {}",
                cfg.streams, cfg.quic.max_concurrent_streams
            )));
        }
        let endpoint = Self::endpoint(cfg)?;
        let n = match cfg.sharing {
            Sharing::Shared => 1,
            Sharing::Pool => cfg.streams.max(1) as usize,
        };
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n {
            sessions.push(Arc::new(Self::session(&endpoint, cfg).await?));
        }
        let max = cfg.limits.max_message;
        let mut channels = Vec::with_capacity(cfg.streams as usize);
        for id in 0..cfg.streams {
            let session = &sessions[id as usize % n];
            // Opening needs stream credit from the server; more streams than it grants wait.
            let opened = tokio::time::timeout(cfg.timeouts.handshake, async {
                session
                    .open_bi()
                    .await
                    .map_err(wt_error)?
                    .await
                    .map_err(|e| Error::Protocol(format!("opening a WebTransport stream: {e}")))
            })
            .await
            .map_err(|_| {
                Error::Timeout("opening a WebTransport stream (over the server's limit?)")
            })??;
            let (send, recv) = opened;
            channels.push(WtChannel {
                id,
                tx: FramedWrite::new(send, net::length_prefixed(max)),
                rx: FramedRead::new(recv, net::length_prefixed(max)),
            });
        }
        Ok(Self {
            endpoint,
            sessions,
            channels,
            grace: cfg.timeouts.shutdown_grace,
        })
    }

    fn channels(&mut self) -> Vec<WtChannel> {
        std::mem::take(&mut self.channels)
    }

    async fn close(self) -> Result<()> {
        // Dropping a channel finishes its send side (FIN); the close that follows tells the
        // server the session is over.
        drop(self.channels);
        for s in &self.sessions {
            s.close(wtransport::VarInt::from_u32(CLOSE_OK), b"done");
        }
        drop(self.sessions);
        self.endpoint
            .close(wtransport::VarInt::from_u32(CLOSE_OK), b"done");
        let _ = tokio::time::timeout(self.grace, self.endpoint.wait_idle()).await;
        Ok(())
    }
}

/// Maps a stream's I/O error: the server's graceful end (the stream stopped with
/// [`SHUTTING_DOWN`], the connection closed with code 0) is [`Error::ConnectionClosed`].
fn stream_error(e: std::io::Error) -> Error {
    let clean_close = |c: &quinn::ConnectionError| match c {
        quinn::ConnectionError::ApplicationClosed(a) => {
            a.error_code == quinn::VarInt::from_u32(CLOSE_OK)
        }
        quinn::ConnectionError::LocallyClosed => true,
        _ => false,
    };
    let goodbye =
        e.get_ref()
            .is_some_and(|inner| match inner.downcast_ref::<quinn::WriteError>() {
                Some(quinn::WriteError::Stopped(code)) => {
                    *code == quinn::VarInt::from_u32(SHUTTING_DOWN)
                }
                Some(quinn::WriteError::ConnectionLost(c)) => clean_close(c),
                Some(quinn::WriteError::ClosedStream) => true,
                _ => match inner.downcast_ref::<quinn::ReadError>() {
                    Some(quinn::ReadError::ConnectionLost(c)) => clean_close(c),
                    _ => false,
                },
            });
    if goodbye {
        Error::ConnectionClosed
    } else {
        Error::Io(e)
    }
}

impl Channel for WtChannel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        self.tx.send(msg).await.map_err(stream_error)
    }

    async fn recv(&mut self) -> Result<Bytes> {
        match self.rx.next().await {
            Some(Ok(m)) => Ok(m.freeze()),
            Some(Err(e)) => Err(stream_error(e)),
            None => Err(Error::ConnectionClosed),
        }
    }

    async fn server_stream(&mut self, req: StreamRequest) -> Result<Vec<Received>> {
        stream_by_messages(self, req).await
    }
}
