//! The one place that maps a transport id to its crate. Everything else is generic over the
//! traits in `wirelab-core`.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::task::JoinHandle;
use wirelab_core::{CancellationToken, ClientConfig, Server, ServerConfig, TransportId};

use crate::check::{self, Outcome, Work};

/// Transports built so far, in report order.
pub(crate) const AVAILABLE: [TransportId; 7] = [
    TransportId::Tcp,
    TransportId::Ws,
    TransportId::H1,
    TransportId::H2,
    TransportId::H2ws,
    TransportId::Quic,
    TransportId::H3,
];

/// Whether the transport can run over TLS.
pub(crate) fn supports_tls(id: TransportId) -> bool {
    !matches!(id, TransportId::Tcp)
}

/// Whether the transport uses TLS unless told otherwise (h2, h2ws: ALPN `h2`; `--h2c` turns it
/// off).
pub(crate) fn tls_by_default(id: TransportId) -> bool {
    matches!(id, TransportId::H2 | TransportId::H2ws) || tls_always(id)
}

/// Whether the transport has no cleartext mode at all (QUIC: TLS 1.3 is part of it).
pub(crate) fn tls_always(id: TransportId) -> bool {
    matches!(id, TransportId::Quic | TransportId::H3)
}

/// Whether the transport can resume with 0-RTT.
pub(crate) fn has_zero_rtt(id: TransportId) -> bool {
    tls_always(id)
}

/// Whether the transport has the rr and duplex modes.
pub(crate) fn has_modes(id: TransportId) -> bool {
    matches!(id, TransportId::H2 | TransportId::H3)
}

/// The ALPN id the transport offers over TLS.
pub(crate) fn alpn(id: TransportId) -> &'static [u8] {
    match id {
        TransportId::H2 | TransportId::H2ws => wirelab_core::tls::ALPN_H2,
        TransportId::H3 => wirelab_core::tls::ALPN_H3,
        TransportId::Quic => wirelab_core::tls::ALPN_WIRELAB_QUIC,
        _ => wirelab_core::tls::ALPN_HTTP11,
    }
}

/// Binds a server and spawns it; returns where it listens and its task.
pub(crate) async fn start_server(
    id: TransportId,
    cfg: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<wirelab_core::Result<()>>)> {
    async fn start<S: Server>(
        cfg: ServerConfig,
        sd: CancellationToken,
    ) -> Result<(SocketAddr, JoinHandle<wirelab_core::Result<()>>)> {
        let listen = cfg.listen;
        let s = S::bind(cfg)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        Ok((s.local_addr(), tokio::spawn(s.serve(sd))))
    }
    match id {
        TransportId::Tcp => start::<wirelab_tcp::TcpServer>(cfg, shutdown).await,
        TransportId::Ws => start::<wirelab_ws::WsServer>(cfg, shutdown).await,
        TransportId::H1 => start::<wirelab_h1::H1Server>(cfg, shutdown).await,
        TransportId::H2 => start::<wirelab_h2::H2Server>(cfg, shutdown).await,
        TransportId::H2ws => start::<wirelab_h2ws::H2wsServer>(cfg, shutdown).await,
        TransportId::Quic => start::<wirelab_quic::QuicServer>(cfg, shutdown).await,
        TransportId::H3 => start::<wirelab_h3::H3Server>(cfg, shutdown).await,
    }
}

/// Runs `work` as a client of transport `id`.
pub(crate) async fn run_client(
    id: TransportId,
    cfg: &ClientConfig,
    work: &Work,
) -> Result<Outcome> {
    match id {
        TransportId::Tcp => check::run::<wirelab_tcp::TcpClient>(cfg, work).await,
        TransportId::Ws => check::run::<wirelab_ws::WsClient>(cfg, work).await,
        TransportId::H1 => check::run::<wirelab_h1::H1Client>(cfg, work).await,
        TransportId::H2 => check::run::<wirelab_h2::H2Client>(cfg, work).await,
        TransportId::H2ws => check::run::<wirelab_h2ws::H2wsClient>(cfg, work).await,
        TransportId::Quic => check::run::<wirelab_quic::QuicClient>(cfg, work).await,
        TransportId::H3 => check::run::<wirelab_h3::H3Client>(cfg, work).await,
    }
}
