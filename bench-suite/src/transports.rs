//! The one place that maps a transport id to its crate. Everything else is generic over the
//! traits in `wirelab-core`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use wirelab_core::{CancellationToken, ClientConfig, Mode, Server, ServerConfig, TransportId};

use crate::workload::{self, Outcome, Work};

/// Runs `$body` with `$C` bound to the client type of transport `$id`: the one place a
/// transport id becomes a type, so workloads stay generic.
#[macro_export]
macro_rules! with_client {
    ($id:expr, $C:ident => $body:expr) => {
        match $id {
            wirelab_core::TransportId::Tcp => {
                type $C = wirelab_tcp::TcpClient;
                $body
            }
            wirelab_core::TransportId::Ws => {
                type $C = wirelab_ws::WsClient;
                $body
            }
            wirelab_core::TransportId::H1 => {
                type $C = wirelab_h1::H1Client;
                $body
            }
            wirelab_core::TransportId::H2 => {
                type $C = wirelab_h2::H2Client;
                $body
            }
            wirelab_core::TransportId::H2ws => {
                type $C = wirelab_h2ws::H2wsClient;
                $body
            }
            wirelab_core::TransportId::Quic => {
                type $C = wirelab_quic::QuicClient;
                $body
            }
            wirelab_core::TransportId::H3 => {
                type $C = wirelab_h3::H3Client;
                $body
            }
        }
    };
}

/// Transports built so far, in report order.
pub const AVAILABLE: [TransportId; 7] = [
    TransportId::Tcp,
    TransportId::Ws,
    TransportId::H1,
    TransportId::H2,
    TransportId::H2ws,
    TransportId::Quic,
    TransportId::H3,
];

/// Whether the transport can run over TLS.
pub fn supports_tls(id: TransportId) -> bool {
    !matches!(id, TransportId::Tcp)
}

/// Whether the transport uses TLS unless told otherwise (h2, h2ws: ALPN `h2`; `--h2c` turns it
/// off).
pub fn tls_by_default(id: TransportId) -> bool {
    matches!(id, TransportId::H2 | TransportId::H2ws) || tls_always(id)
}

/// Whether the transport has no cleartext mode at all (QUIC: TLS 1.3 is part of it).
pub fn tls_always(id: TransportId) -> bool {
    matches!(id, TransportId::Quic | TransportId::H3)
}

/// Whether the transport can resume with 0-RTT.
pub fn has_zero_rtt(id: TransportId) -> bool {
    tls_always(id)
}

/// Whether the transport has the rr and duplex modes.
pub fn has_modes(id: TransportId) -> bool {
    matches!(id, TransportId::H2 | TransportId::H3)
}

/// The ALPN id the transport offers over TLS.
pub fn alpn(id: TransportId) -> &'static [u8] {
    match id {
        TransportId::H2 | TransportId::H2ws => wirelab_core::tls::ALPN_H2,
        TransportId::H3 => wirelab_core::tls::ALPN_H3,
        TransportId::Quic => wirelab_core::tls::ALPN_WIRELAB_QUIC,
        _ => wirelab_core::tls::ALPN_HTTP11,
    }
}

/// Binds a server and spawns it on `rt`; returns where it listens and its task.
pub async fn start_server(
    id: TransportId,
    cfg: ServerConfig,
    shutdown: CancellationToken,
    rt: &Handle,
) -> Result<(SocketAddr, JoinHandle<wirelab_core::Result<()>>)> {
    async fn start<S: Server>(
        cfg: ServerConfig,
        sd: CancellationToken,
        rt: &Handle,
    ) -> Result<(SocketAddr, JoinHandle<wirelab_core::Result<()>>)> {
        let listen = cfg.listen;
        // Bind on the server runtime too: QUIC endpoints belong to the runtime they start on.
        let s = rt
            .spawn(S::bind(cfg))
            .await
            .context("server bind task")?
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        Ok((s.local_addr(), rt.spawn(s.serve(sd))))
    }
    match id {
        TransportId::Tcp => start::<wirelab_tcp::TcpServer>(cfg, shutdown, rt).await,
        TransportId::Ws => start::<wirelab_ws::WsServer>(cfg, shutdown, rt).await,
        TransportId::H1 => start::<wirelab_h1::H1Server>(cfg, shutdown, rt).await,
        TransportId::H2 => start::<wirelab_h2::H2Server>(cfg, shutdown, rt).await,
        TransportId::H2ws => start::<wirelab_h2ws::H2wsServer>(cfg, shutdown, rt).await,
        TransportId::Quic => start::<wirelab_quic::QuicServer>(cfg, shutdown, rt).await,
        TransportId::H3 => start::<wirelab_h3::H3Server>(cfg, shutdown, rt).await,
    }
}

/// Runs `work` as a client of transport `id`.
pub async fn run_client(id: TransportId, cfg: &ClientConfig, work: &Work) -> Result<Outcome> {
    with_client!(id, C => workload::run::<C>(cfg, work).await)
}

/// One way to run a transport: TLS or not, and the h2/h3 mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The transport.
    pub id: TransportId,
    /// Over TLS.
    pub tls: bool,
    /// h2 and h3: rr or duplex (others: duplex, their only way).
    pub mode: Mode,
}

impl Variant {
    /// The label in tables: `h2 rr`, `h2c duplex`, `ws+tls`, `h3 duplex`.
    pub fn label(&self) -> String {
        let base = match (self.id, self.tls) {
            (TransportId::H2, false) => "h2c".to_string(),
            (TransportId::H2ws, false) => "h2ws (h2c)".to_string(),
            (id, true) if !tls_by_default(id) => format!("{id}+tls"),
            (id, _) => id.to_string(),
        };
        if has_modes(self.id) {
            format!("{base} {}", mode_name(self.mode))
        } else {
            base
        }
    }

    /// The label as a file name: `h2-rr`, `h2c-duplex`, `ws-tls`.
    pub fn slug(&self) -> String {
        self.label()
            .replace(" (h2c)", "-h2c")
            .replace(['+', ' '], "-")
    }

    /// The floor it is compared with: tcp for TCP transports, quic for h3.
    pub fn floor(&self) -> Option<TransportId> {
        match self.id {
            TransportId::Tcp | TransportId::Quic => None,
            TransportId::H3 => Some(TransportId::Quic),
            _ => Some(TransportId::Tcp),
        }
    }
}

/// `rr` or `duplex`.
pub fn mode_name(m: Mode) -> &'static str {
    if m == Mode::Rr {
        "rr"
    } else {
        "duplex"
    }
}

/// The variants of `ids`: each transport with its default security (h2, h2ws, quic, h3 over
/// TLS; tcp, ws, h1 cleartext), both modes of h2 and h3; with `other_security` also the other
/// one where it exists (wss, https, h2c).
pub fn variants(ids: &[TransportId], other_security: bool) -> Vec<Variant> {
    let mut out = Vec::new();
    for &id in ids {
        let default_tls = tls_by_default(id);
        let mut secs = vec![default_tls];
        if other_security && supports_tls(id) && !tls_always(id) {
            secs.push(!default_tls);
        }
        for tls in secs {
            if has_modes(id) {
                out.push(Variant {
                    id,
                    tls,
                    mode: Mode::Rr,
                });
                out.push(Variant {
                    id,
                    tls,
                    mode: Mode::Duplex,
                });
            } else {
                out.push(Variant {
                    id,
                    tls,
                    mode: Mode::Duplex,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_slugs() {
        let v = variants(&AVAILABLE, true);
        let labels: Vec<_> = v.iter().map(Variant::label).collect();
        assert!(labels.contains(&"h2 rr".to_string()));
        assert!(labels.contains(&"h2c duplex".to_string()));
        assert!(labels.contains(&"ws+tls".to_string()));
        assert!(labels.contains(&"h2ws (h2c)".to_string()));
        let slugs: Vec<_> = v.iter().map(Variant::slug).collect();
        assert!(slugs.contains(&"h2ws-h2c".to_string()));
        assert!(slugs.contains(&"ws-tls".to_string()));
        let mut unique = slugs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), slugs.len());
        assert_eq!(variants(&AVAILABLE, false).len(), 9);
    }
}
