//! The one list of transports. Each transport crate describes itself
//! ([`wirelab_core::Descriptor`], through [`wirelab_core::Transport`]); everything here and
//! elsewhere in the harness (dispatch, `serve`, `hol` variants, report order, the conformance
//! instances) is derived from [`transport_list!`]. Adding a transport is its crate plus one
//! line there.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use wirelab_core::{
    CancellationToken, ClientConfig, Descriptor, Mode, Server, ServerConfig, Sharing, TransportId,
};

use crate::workload::{self, Outcome, Work};

/// THE list of transports, in report order: calls the macro named in brackets with `args`
/// followed by `id: Type` for every transport (the id as an identifier, for generated names;
/// the type implements [`wirelab_core::Transport`]). Adding a transport is its crate plus one
/// line here.
///
/// ```
/// macro_rules! names {
///     (() $($name:ident: $t:path),*) => { [$(stringify!($name)),*] };
/// }
/// let ids = wirelab::transport_list!([names] ());
/// assert_eq!(ids[0], "tcp");
/// ```
#[macro_export]
macro_rules! transport_list {
    ([$($then:tt)*] $args:tt) => {
        $($then)* ! {
            $args
            tcp: wirelab_tcp::Tcp,
            ws: wirelab_ws::Ws,
            h1: wirelab_h1::H1,
            h2: wirelab_h2::H2,
            h2ws: wirelab_h2ws::H2ws,
            quic: wirelab_quic::Quic,
            h3: wirelab_h3::H3,
            sse: wirelab_sse::Sse,
            wt: wirelab_wt::Wt
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wirelab_dispatch {
    (($id:expr, $T:ident, $body:expr) $($name:ident: $t:path),*) => {{
        let id: wirelab_core::TransportId = $id;
        $(
            if id == <$t as wirelab_core::Transport>::DESCRIPTOR.id {
                type $T = $t;
                $body
            } else
        )*
        {
            unreachable!("transport {id} is not in the list (ids come from transports::parse)")
        }
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wirelab_descriptors {
    (() $($name:ident: $t:path),*) => {
        &[$(<$t as wirelab_core::Transport>::DESCRIPTOR),*]
    };
}

/// Runs `$body` with `$T` bound to the [`wirelab_core::Transport`] type of transport `$id`
/// (use `$T::Client`, `$T::Server`): the one place a transport id becomes a type, so
/// workloads stay generic. Generated from [`transport_list!`].
#[macro_export]
macro_rules! with_transport {
    ($id:expr, $T:ident => $body:expr) => {
        $crate::transport_list!([$crate::__wirelab_dispatch]($id, $T, $body))
    };
}

/// Runs `$body` with `$C` bound to the client type of transport `$id`.
#[macro_export]
macro_rules! with_client {
    ($id:expr, $C:ident => $body:expr) => {
        $crate::with_transport!($id, T => {
            type $C = <T as wirelab_core::Transport>::Client;
            $body
        })
    };
}

/// Every transport's descriptor, in report order.
pub const LIST: &[Descriptor] = transport_list!([__wirelab_descriptors]());

/// Every transport id, in report order.
pub fn ids() -> Vec<TransportId> {
    LIST.iter().map(|d| d.id).collect()
}

/// The id named `s`, if a listed transport has it (the only way ids enter the harness from
/// outside, so every id the harness holds is in the list).
pub fn parse(s: &str) -> Result<TransportId, String> {
    LIST.iter()
        .map(|d| d.id)
        .find(|id| id.as_str() == s)
        .ok_or_else(|| {
            let known: Vec<_> = LIST.iter().map(|d| d.id.as_str()).collect();
            format!("unknown transport '{s}' (known: {})", known.join(" "))
        })
}

/// The descriptor of a listed transport.
pub fn descriptor(id: TransportId) -> &'static Descriptor {
    LIST.iter()
        .find(|d| d.id == id)
        .unwrap_or_else(|| unreachable!("transport {id} is not in the list"))
}

/// Whether the transport can resume with 0-RTT.
pub fn has_zero_rtt(id: TransportId) -> bool {
    descriptor(id).zero_rtt
}

/// The ALPN id the transport offers over TLS.
pub fn alpn(id: TransportId) -> &'static [u8] {
    descriptor(id).alpn
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
    with_transport!(id, T => start::<<T as wirelab_core::Transport>::Server>(cfg, shutdown, rt).await)
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
    /// The transport's descriptor.
    pub fn descriptor(&self) -> &'static Descriptor {
        descriptor(self.id)
    }

    /// The label in tables: `h2 rr`, `h2c duplex`, `ws+tls`, `h3 duplex`.
    pub fn label(&self) -> String {
        let d = self.descriptor();
        let base = d.label(self.tls);
        if d.has_modes() {
            format!("{base} {}", mode_name(self.mode))
        } else {
            base.to_string()
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
        self.descriptor().floor
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
        let d = descriptor(id);
        let mut secs = vec![d.tls.by_default()];
        if other_security && matches!(d.tls, wirelab_core::TlsPolicy::Optional { .. }) {
            secs.push(!d.tls.by_default());
        }
        for tls in secs {
            for &mode in d.modes {
                out.push(Variant { id, tls, mode });
            }
        }
    }
    out
}

/// A way of carrying K logical streams: a [`Variant`] and its [`Sharing`] (the `hol`
/// experiment compares these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsVariant {
    /// Transport, security and h2/h3 mode.
    pub variant: Variant,
    /// One connection for all streams, or a pool.
    pub sharing: Sharing,
    /// The K streams are tags on unreliable datagrams of one session instead of streams
    /// (transports with datagrams: wt): nothing is retransmitted, so nothing waits for a loss.
    pub datagrams: bool,
}

impl StreamsVariant {
    /// `tcp shared`, `ws pool`, `h1 pool of 6`, `h2 rr`, `quic`, `wt datagrams`: the sharing is
    /// named where the transport is compared in more than one, or where it is a pool.
    pub fn label(&self) -> String {
        let base = self.variant.label();
        let d = self.variant.descriptor();
        if self.datagrams {
            return format!("{base} datagrams");
        }
        match self.sharing {
            _ if d.sharings.len() > 1 => format!("{base} {}", sharing_name(self.sharing)),
            Sharing::Pool => format!("{base} pool of {}", ClientConfig::DEFAULT_POOL_SIZE),
            Sharing::Shared => base,
        }
    }

    /// The label as a file name.
    pub fn slug(&self) -> String {
        self.label().replace(' ', "-")
    }
}

/// `shared` or `pool`.
pub fn sharing_name(s: Sharing) -> &'static str {
    match s {
        Sharing::Shared => "shared",
        Sharing::Pool => "pool",
    }
}

/// Every way the listed transports carry K streams, at their default security: each
/// transport's sharings times its modes.
pub fn streams_variants() -> Vec<StreamsVariant> {
    let mut out = Vec::new();
    for v in variants(&ids(), false) {
        for &sharing in v.descriptor().sharings {
            out.push(StreamsVariant {
                variant: v.clone(),
                sharing,
                datagrams: false,
            });
        }
        if v.descriptor().datagrams {
            out.push(StreamsVariant {
                variant: v.clone(),
                sharing: Sharing::Shared,
                datagrams: true,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_slugs() {
        let v = variants(&ids(), true);
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
        // One variant per mode at the default security.
        let modes: usize = LIST.iter().map(|d| d.modes.len()).sum();
        assert_eq!(variants(&ids(), false).len(), modes);
    }

    #[test]
    fn every_listed_transport_is_dispatched_and_has_its_variants() {
        let listed = ids();
        let mut unique = listed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), listed.len(), "ids are unique");
        let hol = streams_variants();
        for d in LIST {
            assert_eq!(parse(d.id.as_str()), Ok(d.id));
            // Dispatch reaches this transport's own types.
            let via = with_transport!(d.id, T => <T as wirelab_core::Transport>::DESCRIPTOR.id);
            assert_eq!(via, d.id);
            let vs = variants(&[d.id], true);
            for &m in d.modes {
                assert!(vs.iter().any(|v| v.mode == m), "{} {m:?}", d.id);
            }
            for &sh in d.sharings {
                assert!(
                    hol.iter().any(|h| h.variant.id == d.id && h.sharing == sh),
                    "{} is missing from the hol variants in {sh:?}",
                    d.id
                );
            }
            if let Some(f) = d.floor {
                assert!(parse(f.as_str()).is_ok(), "{}'s floor {f} is listed", d.id);
            }
            assert_eq!(
                d.tls.supported(),
                !d.alpn.is_empty(),
                "{}: ALPN iff TLS",
                d.id
            );
        }
        assert!(parse("nope").unwrap_err().contains("known: tcp ws"));
        let labels: Vec<_> = hol.iter().map(StreamsVariant::label).collect();
        for l in [
            "tcp shared",
            "tcp pool",
            "ws pool",
            "h1 pool of 6",
            "h2 rr",
            "h3 duplex",
            "quic",
            "wt",
            "wt datagrams",
        ] {
            assert!(labels.contains(&l.to_string()), "{l} in {labels:?}");
        }
        // Datagrams only where the transport has them.
        for h in hol.iter().filter(|h| h.datagrams) {
            assert!(h.variant.descriptor().datagrams, "{}", h.label());
        }
    }
}
