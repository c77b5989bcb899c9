//! The one place that maps a transport id to its crate. Everything else is generic over the
//! traits in `wirelab-core`.

use std::net::SocketAddr;

use anyhow::{bail, Result};
use tokio::task::JoinHandle;
use wirelab_core::{CancellationToken, ClientConfig, Server, ServerConfig, TransportId};

use crate::check::{self, Outcome, Work};

/// Transports built so far, in report order.
pub(crate) const AVAILABLE: [TransportId; 5] = [
    TransportId::Tcp,
    TransportId::Ws,
    TransportId::H1,
    TransportId::H2,
    TransportId::H2ws,
];

/// Whether the transport can run over TLS.
pub(crate) fn supports_tls(id: TransportId) -> bool {
    matches!(
        id,
        TransportId::Ws | TransportId::H1 | TransportId::H2 | TransportId::H2ws
    )
}

/// Whether the transport uses TLS unless told otherwise (h2, h2ws: ALPN `h2`; `--h2c` turns it
/// off).
pub(crate) fn tls_by_default(id: TransportId) -> bool {
    matches!(id, TransportId::H2 | TransportId::H2ws)
}

/// Whether the transport has the rr and duplex modes.
pub(crate) fn has_modes(id: TransportId) -> bool {
    matches!(id, TransportId::H2)
}

/// The ALPN id the transport offers over TLS.
pub(crate) fn alpn(id: TransportId) -> &'static [u8] {
    match id {
        TransportId::H2 | TransportId::H2ws => wirelab_core::tls::ALPN_H2,
        _ => wirelab_core::tls::ALPN_HTTP11,
    }
}

fn not_built(id: TransportId) -> anyhow::Error {
    anyhow::anyhow!(
        "transport '{id}' is not built yet; available: {}",
        AVAILABLE.map(|t| t.as_str()).join(" ")
    )
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
        other => bail!(not_built(other)),
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
        other => bail!(not_built(other)),
    }
}
