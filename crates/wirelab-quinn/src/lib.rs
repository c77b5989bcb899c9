//! QUIC endpoints for the QUIC transports (quic, h3), on quinn. Not a transport: `wirelab-quic`
//! and `wirelab-h3` use it, never each other.
//!
//! What is set here on purpose, for both transports:
//! - TLS 1.3 only (QUIC has no other), with the `ring` provider and the transport's ALPN;
//! - finite windows and stream limits from [`QuicSettings`] (quinn leaves the connection-wide
//!   receive window unlimited by default);
//! - the idle timeout from [`Timeouts::idle`]; the client sends keep-alive PINGs at
//!   [`Timeouts::ping_interval`], the server never does, so a silent client is closed by the
//!   server's idle timer;
//! - UDP GSO/GRO left on (quinn's default), and 2 MiB socket buffers asked for (the kernel
//!   caps them at `net.core.rmem_max`/`wmem_max`): the 208 KiB default drops bursts on loopback;
//! - 0-RTT: servers always accept early data; clients send it when asked
//!   ([`ClientConfig::zero_rtt`]) and holding a ticket. What a server does with a request that
//!   arrives before the handshake is confirmed is the transport's replay policy, helped by
//!   [`Confirmed`];
//! - one qlog file per connection when a directory is configured; `SSLKEYLOGFILE` through the
//!   rustls configs of `wirelab_core::tls`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint, IdleTimeout, TransportConfig, VarInt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use wirelab_core::wire::WireCounters;
use wirelab_core::{
    ClientConfig, Error, QuicCongestion, QuicSettings, Result, ServerConfig, Timeouts,
};

pub use quinn;

/// Application error code for a clean close (no error).
pub const CLOSE_OK: u32 = 0;

/// Which end of a connection a config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Socket buffer size asked for on every QUIC socket (quinn's own `perf` tool uses the same).
const SOCKET_BUFFER: usize = 2 << 20;

/// A UDP socket for an endpoint, with larger buffers, bound to `addr`.
fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the address is the unspecified one, as std does not.
        let _ = s.set_only_v6(false);
    }
    // Best effort: a smaller buffer still works, it only drops more under bursts.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn runtime() -> Result<Arc<dyn quinn::Runtime>> {
    quinn::default_runtime().ok_or_else(|| Error::Config("QUIC needs a tokio runtime".into()))
}

/// A socket for an endpoint bound to `addr`, counted when `wire` is given.
fn abstract_socket(
    addr: SocketAddr,
    wire: Option<Arc<WireCounters>>,
) -> Result<Arc<dyn quinn::AsyncUdpSocket>> {
    let mut socket = runtime()?.wrap_udp_socket(udp_socket(addr)?)?;
    if let Some(counters) = wire {
        socket = Arc::new(CountingSocket {
            inner: socket,
            counters,
        });
    }
    Ok(socket)
}

fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    wire: Option<Arc<WireCounters>>,
) -> Result<Endpoint> {
    let socket = abstract_socket(addr, wire)?;
    Endpoint::new_with_abstract_socket(quinn::EndpointConfig::default(), server, socket, runtime()?)
        .map_err(Error::Io)
}

/// A client socket that can be abandoned, as a NAT forgets a mapping: once `gone`, what it
/// would send is dropped and what arrives for it is never read. quinn keeps reading an old
/// socket after a rebind until the new one receives; for a NAT rebinding the old address is
/// unreachable at once, and this makes it so.
#[derive(Debug)]
struct Abandonable {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    gone: std::sync::atomic::AtomicBool,
}

impl Abandonable {
    fn new(inner: Arc<dyn quinn::AsyncUdpSocket>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gone: Default::default(),
        })
    }

    fn gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

impl quinn::AsyncUdpSocket for Abandonable {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        if self.gone() {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.gone() {
            // Never ready: quinn drops this socket once the new one has received.
            return std::task::Poll::Pending;
        }
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A UDP socket that counts the datagrams and bytes quinn sends and receives through it (see
/// `wirelab_core::wire`): the QUIC packets, headers included, without UDP and IP headers.
#[derive(Debug)]
struct CountingSocket {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    counters: Arc<WireCounters>,
}

impl quinn::AsyncUdpSocket for CountingSocket {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        self.inner.try_send(transmit)?;
        let len = transmit.contents.len();
        // With segmentation offload one transmit carries several datagrams.
        let seg = transmit.segment_size.unwrap_or(len).max(1);
        self.counters.sent(len, len.div_ceil(seg));
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = self.inner.poll_recv(cx, bufs, meta);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            for m in &meta[..*n] {
                self.counters
                    .received(m.len, m.len.div_ceil(m.stride.max(1)));
            }
        }
        r
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The transport parameters of one connection.
///
/// `uni_streams` is how many unidirectional streams the peer may open (h3 needs its control and
/// QPACK streams; the quic floor needs none); `datagrams` whether QUIC DATAGRAM frames are
/// received (advertises `max_datagram_frame_size`; only WebTransport uses them).
fn transport_config(
    s: &QuicSettings,
    t: &Timeouts,
    uni_streams: u32,
    datagrams: bool,
    side: Side,
    qlog: Option<&Path>,
) -> Result<TransportConfig> {
    s.validate().map_err(Error::Config)?;
    let idle = IdleTimeout::try_from(t.idle)
        .map_err(|_| Error::Config(format!("idle timeout {:?} is too long for QUIC", t.idle)))?;
    let mut tc = TransportConfig::default();
    tc.max_concurrent_bidi_streams(VarInt::from_u32(s.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(uni_streams))
        .stream_receive_window(VarInt::from_u32(s.stream_window))
        .receive_window(VarInt::from_u32(s.connection_window))
        .send_window(u64::from(s.send_window))
        .max_idle_timeout(Some(idle))
        .enable_segmentation_offload(true);
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    match s.congestion {
        QuicCongestion::Cubic => tc.congestion_controller_factory(Arc::new(CubicConfig::default())),
        QuicCongestion::NewReno => {
            tc.congestion_controller_factory(Arc::new(NewRenoConfig::default()))
        }
        QuicCongestion::Bbr => tc.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    if !datagrams {
        // No QUIC DATAGRAM frames in the service (quic, h3).
        tc.datagram_receive_buffer_size(None);
    }
    if side == Side::Client {
        tc.keep_alive_interval(t.ping_interval);
    }
    if let Some(dir) = qlog {
        tc.qlog_stream(qlog_stream(dir, side)?);
    }
    Ok(tc)
}

/// A new qlog file in `dir` for one connection.
fn qlog_stream(dir: &Path, side: Side) -> Result<Option<quinn::QlogStream>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Config(format!("qlog directory {}: {e}", dir.display())))?;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let side = match side {
        Side::Client => "client",
        Side::Server => "server",
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{side}-{ms}-{}-{n}.sqlog", std::process::id()));
    let file = std::fs::File::create(&path)
        .map_err(|e| Error::Config(format!("qlog file {}: {e}", path.display())))?;
    let mut q = quinn::QlogConfig::default();
    q.writer(Box::new(std::io::BufWriter::new(file)))
        .title(Some(format!("wirelab {side}")));
    debug!("qlog: {}", path.display());
    Ok(q.into_stream())
}

fn server_crypto(cfg: &ServerConfig, alpn: &[u8]) -> Result<Arc<QuicServerConfig>> {
    let tls = cfg.tls.as_ref().ok_or_else(|| {
        Error::Config("QUIC always runs TLS 1.3: the server needs a certificate".into())
    })?;
    let mut tls = (**tls).clone();
    tls.alpn_protocols = vec![alpn.to_vec()];
    // quinn accepts 0 (no early data) or u32::MAX (early data allowed, limited by the
    // transport's flow control).
    tls.max_early_data_size = u32::MAX;
    let q = QuicServerConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(q))
}

fn quinn_server_config(
    crypto: &Arc<QuicServerConfig>,
    cfg: &ServerConfig,
    uni_streams: u32,
    datagrams: bool,
    qlog: Option<&Path>,
) -> Result<quinn::ServerConfig> {
    let mut sc = quinn::ServerConfig::with_crypto(crypto.clone());
    sc.transport_config(Arc::new(transport_config(
        &cfg.quic,
        &cfg.timeouts,
        uni_streams,
        datagrams,
        Side::Server,
        qlog,
    )?));
    Ok(sc)
}

/// Becomes ready once a server-side connection's handshake is confirmed (the client's Finished
/// arrived), i.e. once nothing more can arrive as replayable 0-RTT data.
#[derive(Debug, Clone)]
pub struct Confirmed(watch::Receiver<bool>);

impl Confirmed {
    /// Whether the handshake is confirmed now.
    pub fn is_confirmed(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the handshake is confirmed. Returns an error if the connection died first.
    pub async fn wait(&mut self) -> Result<()> {
        self.0
            .wait_for(|c| *c)
            .await
            .map(|_| ())
            .map_err(|_| Error::ConnectionClosed)
    }
}

/// A bound QUIC server endpoint.
pub struct QuicListener {
    endpoint: Endpoint,
    crypto: Arc<QuicServerConfig>,
    cfg: Arc<ServerConfig>,
    uni_streams: u32,
    datagrams: bool,
}

impl QuicListener {
    /// Binds a UDP socket on `cfg.listen` for a server offering `alpn`.
    pub fn bind(cfg: ServerConfig, alpn: &[u8], uni_streams: u32) -> Result<Self> {
        Self::bind_with(cfg, alpn, uni_streams, false)
    }

    /// [`QuicListener::bind`], and with `datagrams` its connections also receive QUIC DATAGRAM
    /// frames (WebTransport datagrams).
    pub fn bind_with(
        cfg: ServerConfig,
        alpn: &[u8],
        uni_streams: u32,
        datagrams: bool,
    ) -> Result<Self> {
        let crypto = server_crypto(&cfg, alpn)?;
        let sc = quinn_server_config(&crypto, &cfg, uni_streams, datagrams, None)?;
        let endpoint = endpoint(cfg.listen, Some(sc), None)?;
        Ok(Self {
            endpoint,
            crypto,
            cfg: Arc::new(cfg),
            uni_streams,
            datagrams,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| self.cfg.listen)
    }

    /// The server's configuration.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.cfg.clone()
    }

    /// Accepts connections until `shutdown` fires, running `connection` for each one. Then stops
    /// accepting, waits up to the shutdown grace for the connection tasks (which must end on
    /// `shutdown` themselves, within the grace), and closes the endpoint.
    ///
    /// Each connection is set up in its own task, so a slow or stalled handshake never holds up
    /// the next one. `connection` gets the connection once the client's ClientHello has been
    /// processed (the handshake may still be in progress, so requests may be 0-RTT data), never
    /// earlier: only then are the client's transport parameters known. A ClientHello too large
    /// for one Initial packet (a browser's, with post-quantum key shares) arrives in two; a
    /// connection handed over after the first would have a peer stream limit of 0, and quinn
    /// does not wake a task waiting in `open_uni`/`open_bi` when the transport parameters raise
    /// that limit (it wakes them only for MAX_STREAMS frames), so the task would wait forever.
    pub async fn serve<F, Fut>(
        self,
        name: &'static str,
        shutdown: &CancellationToken,
        connection: F,
    ) where
        F: Fn(Connection, Confirmed) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let connection = Arc::new(connection);
        let handshake = self.cfg.timeouts.handshake;
        self.serve_connecting(name, shutdown, move |connecting, shutdown| {
            let connection = connection.clone();
            async move {
                let remote = connecting.remote_address();
                let set_up = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = tokio::time::timeout(handshake, hand_over(connecting)) => r,
                };
                let (conn, confirmed) = match set_up {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        debug!("{name}: handshake with {remote} failed: {e}");
                        return Ok(());
                    }
                    Err(_) => {
                        // Dropping the last handle closes the connection.
                        debug!("{name}: handshake with {remote} timed out");
                        return Ok(());
                    }
                };
                connection(conn, confirmed).await
            }
        })
        .await;
    }

    /// [`QuicListener::serve`] for a protocol library that drives the handshake itself
    /// (WebTransport): `connection` gets each accepted connection as a [`quinn::Connecting`],
    /// with the shutdown token, in its own task; it must bound its handshake (the config's
    /// handshake timeout) and end on `shutdown` within the grace.
    pub async fn serve_connecting<F, Fut>(
        self,
        name: &'static str,
        shutdown: &CancellationToken,
        connection: F,
    ) where
        F: Fn(quinn::Connecting, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let connection = Arc::new(connection);
        let tasks = TaskTracker::new();
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                i = self.endpoint.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
            };
            let remote = incoming.remote_address();
            let connecting = match self.cfg.qlog_dir.as_deref() {
                None => incoming.accept(),
                Some(dir) => {
                    match quinn_server_config(
                        &self.crypto,
                        &self.cfg,
                        self.uni_streams,
                        self.datagrams,
                        Some(dir),
                    ) {
                        Ok(sc) => incoming.accept_with(Arc::new(sc)),
                        Err(e) => {
                            warn!("{name}: {e}; accepting {remote} without qlog");
                            incoming.accept()
                        }
                    }
                }
            };
            let connecting = match connecting {
                Ok(c) => c,
                Err(e) => {
                    debug!("{name}: refused {remote}: {e}");
                    continue;
                }
            };
            let (connection, shutdown) = (connection.clone(), shutdown.clone());
            tasks.spawn(async move {
                if let Err(e) = connection(connecting, shutdown).await {
                    debug!("{name}: connection from {remote}: {e}");
                }
            });
        }
        tasks.close();
        let grace = self.cfg.timeouts.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            warn!("{name}: connections still open after the {grace:?} shutdown grace; closing");
        }
        self.endpoint
            .close(VarInt::from_u32(CLOSE_OK), b"server shutdown");
        // The CONNECTION_CLOSE packets leave at once; quinn then keeps each closing connection
        // for 3 PTOs (up to ≈3 s before a round-trip sample) only to repeat them: not awaited.
        let _ = tokio::time::timeout(CLOSE_FLUSH, self.endpoint.wait_idle()).await;
    }
}

/// How long a closing server endpoint waits for its connections to finish closing.
const CLOSE_FLUSH: Duration = Duration::from_millis(200);

/// Waits until the client's ClientHello has been processed (so its transport parameters are
/// known), then hands the connection over: at once if 0-RTT is possible, otherwise when the
/// handshake completes. See [`QuicListener::serve`] for why not earlier.
async fn hand_over(
    mut connecting: quinn::Connecting,
) -> std::result::Result<(Connection, Confirmed), ConnectionError> {
    connecting.handshake_data().await?;
    match connecting.into_0rtt() {
        Ok((conn, accepted)) => {
            // On a server `into_0rtt` always succeeds, and `accepted` resolves when the
            // handshake completes (to whether 0-RTT was used) or fails (to false): the
            // connection's state tells which.
            let (tx, rx) = watch::channel(false);
            let c = conn.clone();
            tokio::spawn(async move {
                let _ = accepted.await;
                if c.close_reason().is_none() {
                    let _ = tx.send(true);
                }
            });
            Ok((conn, Confirmed(rx)))
        }
        Err(connecting) => Ok((connecting.await?, Confirmed(watch::channel(true).1))),
    }
}

impl std::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicListener")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for QuicConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConnector")
            .field("server", &self.cfg.addr)
            .finish_non_exhaustive()
    }
}

/// Whether a client connection sent 0-RTT data, and the server's answer once known.
pub struct ZeroRtt {
    pending: Option<quinn::ZeroRttAccepted>,
    outcome: Option<bool>,
}

impl std::fmt::Debug for ZeroRtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroRtt")
            .field("pending", &self.pending.is_some())
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl ZeroRtt {
    /// Whether the connection was opened with early data (its first streams travel in
    /// 0-RTT, and the server may still reject them).
    pub fn is_early(&self) -> bool {
        self.pending.is_some() || self.outcome.is_some()
    }

    /// Waits for the handshake if early data was sent, then says what became of it, in the
    /// shape of `Client::early_data`: `Some(true)` accepted, `Some(false)` rejected, `None` not
    /// sent (not asked for, or no session ticket for this server yet). Cancel-safe: dropped
    /// before the answer, it leaves the wait to the next call.
    pub async fn outcome(&mut self) -> Option<bool> {
        if let Some(acc) = self.pending.as_mut() {
            let accepted = acc.await;
            self.pending = None;
            self.outcome = Some(accepted);
        }
        self.outcome
    }
}

/// A client endpoint with one QUIC config, for any number of connections to one server.
pub struct QuicConnector {
    endpoint: Endpoint,
    /// The socket the endpoint uses now (replaced by [`QuicConnector::migrate`]).
    socket: std::sync::Mutex<Arc<Abandonable>>,
    cfg: ClientConfig,
    crypto: Arc<QuicClientConfig>,
    uni_streams: u32,
}

impl QuicConnector {
    /// A client endpoint on an OS-chosen port, offering `alpn`.
    pub fn new(cfg: &ClientConfig, alpn: &[u8], uni_streams: u32) -> Result<Self> {
        let tls = cfg.tls.as_ref().ok_or_else(|| {
            Error::Config("QUIC always runs TLS 1.3: the client needs a TLS config".into())
        })?;
        // The clone shares the original's session store, so tickets from earlier sessions with
        // the same `Arc<rustls::ClientConfig>` are found here.
        let mut tls = (**tls).clone();
        tls.alpn_protocols = vec![alpn.to_vec()];
        tls.enable_early_data = cfg.zero_rtt;
        let crypto =
            Arc::new(QuicClientConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?);
        let socket = Abandonable::new(abstract_socket(client_bind(cfg.addr), cfg.wire.clone())?);
        let endpoint = Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket.clone(),
            runtime()?,
        )
        .map_err(Error::Io)?;
        Ok(Self {
            endpoint,
            socket: std::sync::Mutex::new(socket),
            cfg: cfg.clone(),
            crypto,
            uni_streams,
        })
    }

    /// Opens one connection. With 0-RTT asked for and a ticket held, returns at once with a
    /// connection whose first streams travel as early data; otherwise after the handshake,
    /// bounded by the handshake timeout.
    pub async fn connect(&self) -> Result<(Connection, ZeroRtt)> {
        let c = &self.cfg;
        let mut qc = quinn::ClientConfig::new(self.crypto.clone());
        qc.transport_config(Arc::new(transport_config(
            &c.quic,
            &c.timeouts,
            self.uni_streams,
            false,
            Side::Client,
            c.qlog_dir.as_deref(),
        )?));
        let connecting = self
            .endpoint
            .connect_with(qc, c.addr, &c.server_name)
            .map_err(|e| Error::Config(format!("cannot connect to {}: {e}", c.addr)))?;
        let connecting = if c.zero_rtt {
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => {
                    let z = ZeroRtt {
                        pending: Some(accepted),
                        outcome: None,
                    };
                    return Ok((conn, z));
                }
                Err(connecting) => connecting,
            }
        } else {
            connecting
        };
        let limit = c.timeouts.connect + c.timeouts.handshake;
        let conn = tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| Error::Timeout("QUIC handshake"))?
            .map_err(|e| handshake_error(e, c.addr))?;
        let z = ZeroRtt {
            pending: None,
            outcome: None,
        };
        Ok((conn, z))
    }

    /// Moves every connection of this endpoint to a new UDP socket on another OS-chosen port,
    /// and abandons the old one at once (what a NAT rebinding or a change of network looks like
    /// to the server): quinn switches to a new connection ID and sends a PING from the new
    /// address, and the server migrates the connection there after validating the path (RFC
    /// 9000 §9). No new handshake. Returns the new local address.
    pub fn migrate(&self) -> Result<SocketAddr> {
        let new = Abandonable::new(abstract_socket(
            client_bind(self.cfg.addr),
            self.cfg.wire.clone(),
        )?);
        let addr = new.inner.local_addr()?;
        let mut current = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        self.endpoint
            .rebind_abstract(new.clone())
            .map_err(Error::Io)?;
        let old = std::mem::replace(&mut *current, new);
        old.gone.store(true, Ordering::SeqCst);
        Ok(addr)
    }

    /// Closes every connection of this endpoint cleanly and waits (bounded by `grace`) until
    /// the peer has been told.
    pub async fn close(&self, grace: Duration) {
        self.endpoint.close(VarInt::from_u32(CLOSE_OK), b"done");
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }
}

/// The transport parameters a client connection of `cfg` uses (as [`QuicConnector`] sets them),
/// for a protocol library that makes its own client endpoint (WebTransport): the peer may open
/// `uni_streams` unidirectional streams, and with `datagrams` QUIC DATAGRAM frames are received.
pub fn client_transport_config(
    cfg: &ClientConfig,
    uni_streams: u32,
    datagrams: bool,
) -> Result<TransportConfig> {
    transport_config(
        &cfg.quic,
        &cfg.timeouts,
        uni_streams,
        datagrams,
        Side::Client,
        cfg.qlog_dir.as_deref(),
    )
}

/// A client UDP socket for a connection to `server` on an OS-chosen port, with the larger
/// buffers every QUIC socket here asks for, for a library that makes its own endpoint.
pub fn client_socket(server: SocketAddr) -> Result<std::net::UdpSocket> {
    udp_socket(client_bind(server))
}

/// The unspecified address of `server`'s family, port 0.
fn client_bind(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

fn handshake_error(e: ConnectionError, addr: SocketAddr) -> Error {
    match e {
        ConnectionError::TimedOut => Error::Timeout("QUIC handshake (no answer from the server)"),
        ConnectionError::TransportError(t) => {
            Error::Tls(format!("QUIC handshake with {addr} failed: {t}"))
        }
        ConnectionError::ConnectionClosed(c) => {
            Error::Tls(format!("QUIC handshake with {addr} failed: {c}"))
        }
        other => Error::Protocol(format!("QUIC handshake with {addr} failed: {other}")),
    }
}

/// Maps a QUIC connection error to the contract's error: a clean application close is
/// [`Error::ConnectionClosed`], an idle timeout [`Error::Timeout`].
pub fn connection_error(e: ConnectionError) -> Error {
    match e {
        ConnectionError::ApplicationClosed(ref c) if c.error_code == VarInt::from_u32(CLOSE_OK) => {
            Error::ConnectionClosed
        }
        ConnectionError::LocallyClosed => Error::ConnectionClosed,
        ConnectionError::TimedOut => Error::Timeout("idle QUIC connection"),
        other => Error::Protocol(other.to_string()),
    }
}

/// The messages of one server stream, read through a [`Drain`]: after a shutdown they end once
/// what the client sent before it has been read, and the client is told with
/// STOP_SENDING(`code`). `R` is the stream's receive half (quinn's, or one that wraps it, such as
/// a WebTransport stream), `quic` reaches the quinn stream inside it.
pub struct DrainReader<R> {
    inner: tokio_util::codec::FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    quic: fn(&mut R) -> &mut quinn::RecvStream,
    code: VarInt,
    drain: Drain,
    stop: CancellationToken,
    done: CancellationToken,
    ended: bool,
}

impl<R> std::fmt::Debug for DrainReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainReader")
            .field("drain", &self.drain)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<R> DrainReader<R> {
    /// Reads length-prefixed messages of at most `max` bytes from `recv`. `stop` is cancelled
    /// when the drain ends the reading (the stream's server streams stop too), `done` when the
    /// messages end, either way.
    pub fn new(
        recv: R,
        quic: fn(&mut R) -> &mut quinn::RecvStream,
        max: usize,
        code: u32,
        drain: Drain,
        stop: CancellationToken,
        done: CancellationToken,
    ) -> Self {
        Self {
            inner: tokio_util::codec::FramedRead::new(
                recv,
                wirelab_core::net::length_prefixed(max),
            ),
            quic,
            code: VarInt::from_u32(code),
            drain,
            stop,
            done,
            ended: false,
        }
    }

    fn stop(&mut self) -> std::task::Poll<Option<std::io::Result<bytes::BytesMut>>> {
        let _ = (self.quic)(self.inner.get_mut()).stop(self.code);
        self.stop.cancel();
        self.end()
    }

    fn end(&mut self) -> std::task::Poll<Option<std::io::Result<bytes::BytesMut>>> {
        self.ended = true;
        self.done.cancel();
        std::task::Poll::Ready(None)
    }
}

impl<R: tokio::io::AsyncRead + Unpin> futures_util::Stream for DrainReader<R> {
    type Item = std::io::Result<bytes::BytesMut>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.drain.poll_must_stop(cx) {
            return this.stop();
        }
        match futures_util::StreamExt::poll_next_unpin(&mut this.inner, cx) {
            Poll::Pending if this.drain.poll_stop_when_idle(cx) => this.stop(),
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => this.end(),
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                this.done.cancel();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(m))) => Poll::Ready(Some(Ok(m))),
        }
    }
}

/// When a server stream that is being read should stop reading after a shutdown began, so that
/// what the client sent before the shutdown is still answered and the shutdown stays bounded.
///
/// Until the shutdown, and for an in-flight window after it (two round trips plus 10 ms, enough
/// for anything the client sent before it could know of the shutdown to arrive), the stream
/// is read as usual. After the window, reading goes on while data is at hand and stops at the
/// first wait for more; [`Drain::limit`] after the shutdown it stops regardless (a client that
/// never pauses). The caller then tells the client with STOP_SENDING and ends its answer cleanly.
pub struct Drain {
    shutdown: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    conn: Connection,
    limit: Duration,
    /// Set once the shutdown has been seen: the end of the in-flight window and the hard stop.
    timers: Option<(Timer, Timer)>,
}

type Timer = std::pin::Pin<Box<tokio::time::Sleep>>;

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("shutdown_seen", &self.timers.is_some())
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Drain {
    /// A drain for one stream of `conn`, stopping at the latest `limit` after `shutdown` fires.
    pub fn new(shutdown: CancellationToken, conn: Connection, limit: Duration) -> Self {
        Self {
            shutdown: Box::pin(shutdown.cancelled_owned()),
            conn,
            limit,
            timers: None,
        }
    }

    /// The time a server waits after a shutdown for what a client sent before it to arrive:
    /// two round trips of `conn` plus 10 ms, at most `limit`.
    pub fn in_flight_window(conn: &Connection, limit: Duration) -> Duration {
        (conn.rtt() * 2 + Duration::from_millis(10)).min(limit)
    }

    /// The hard limit after the shutdown.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Polls the shutdown and the timers; returns `(in_flight_window_over, hard_limit_reached)`,
    /// both false before the shutdown. Registers the waker for whichever can still change.
    fn poll_state(&mut self, cx: &mut std::task::Context<'_>) -> (bool, bool) {
        if self.timers.is_none() {
            if self.shutdown.as_mut().poll(cx).is_pending() {
                return (false, false);
            }
            let now = tokio::time::Instant::now();
            let window = Self::in_flight_window(&self.conn, self.limit);
            self.timers = Some((
                Box::pin(tokio::time::sleep_until(now + window)),
                Box::pin(tokio::time::sleep_until(now + self.limit)),
            ));
        }
        let Some((window, hard)) = self.timers.as_mut() else {
            return (false, false);
        };
        let hard = hard.as_mut().poll(cx).is_ready();
        let window = hard || window.as_mut().poll(cx).is_ready();
        (window, hard)
    }

    /// Call before each read: `true` when reading must stop now (the hard limit has passed).
    pub fn poll_must_stop(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.poll_state(cx).1
    }

    /// Call when a read would wait: `true` when reading should stop instead (the shutdown began
    /// and its in-flight window is over). Otherwise the waker is registered for the shutdown
    /// and the window's end, so a pending read is woken to stop.
    pub fn poll_stop_when_idle(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.poll_state(cx).0
    }
}
