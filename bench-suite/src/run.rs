//! `wirelab run`: every available transport on loopback, one comparison table.
//!
//! Servers run in this process on OS-chosen loopback ports; each transport meets the same
//! workload in turn (never two at once). This is the first cut of the harness; the scenario
//! matrix, repetitions, confidence intervals and reports come with the harness issue.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use wirelab_core::tls::{self, Identity, Trust};
use wirelab_core::{CancellationToken, ClientConfig, Mode, ServerConfig, Sharing, TransportId};

use crate::check::Work;
use crate::{opts, stats, transports};

/// Options of `wirelab run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Transports to compare (comma-separated); default: every available one.
    #[arg(long, value_delimiter = ',')]
    transports: Vec<TransportId>,
    /// Message size, e.g. 64, 1K.
    #[arg(long, default_value = "64", value_parser = opts::parse_size)]
    size: usize,
    /// Measured echoes per logical stream.
    #[arg(long, default_value_t = 5000)]
    count: u64,
    /// Logical streams in the concurrent rows.
    #[arg(long, short = 'k', default_value_t = 8)]
    streams: u32,
    /// Also run the TLS variants of ws and h1 (wss, https) and the cleartext one of h2 (h2c).
    #[arg(long)]
    tls: bool,
}

struct Row {
    label: String,
    k: u32,
    sharing: &'static str,
    setup_ms: f64,
    summary: stats::Summary,
    rate: f64,
}

pub(crate) async fn run(a: RunArgs) -> Result<()> {
    let ids = if a.transports.is_empty() {
        transports::AVAILABLE.to_vec()
    } else {
        a.transports.clone()
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let ident = Identity::self_signed(&["localhost", "127.0.0.1"])?;
    let trust = Trust::Certificates(vec![ident.certificate()]);
    // (transport, TLS?, mode): each transport's default security first, the other with --tls.
    let mut variants = Vec::new();
    for &id in &ids {
        let default_tls = transports::tls_by_default(id);
        let mut secs = vec![default_tls];
        if a.tls && transports::supports_tls(id) && !transports::tls_always(id) {
            secs.push(!default_tls);
        }
        for use_tls in secs {
            if transports::has_modes(id) {
                variants.push((id, use_tls, Mode::Rr));
                variants.push((id, use_tls, Mode::Duplex));
            } else {
                variants.push((id, use_tls, Mode::Duplex));
            }
        }
    }
    let shapes = [
        (1, Sharing::Shared),
        (a.streams, Sharing::Shared),
        (a.streams, Sharing::Pool),
    ];
    let total = variants.len() * shapes.len();
    let mut rows = Vec::new();
    let shutdown = CancellationToken::new();
    let mut done = 0;
    for (id, use_tls, mode) in variants {
        let mut scfg = ServerConfig::new(listen);
        if use_tls {
            scfg.tls = Some(ident.server_config(&[transports::alpn(id)])?);
        }
        let (addr, _task) = transports::start_server(id, scfg, shutdown.child_token()).await?;
        let mut label = match (id, use_tls) {
            (TransportId::H2, false) => "h2c".to_string(),
            (TransportId::H2, true) => "h2".to_string(),
            (TransportId::H2ws, false) => "h2ws (h2c)".to_string(),
            (TransportId::H2ws, true) => "h2ws".to_string(),
            (_, true) if !transports::tls_always(id) => format!("{id}+tls"),
            (_, true) => id.to_string(),
            (_, false) => id.to_string(),
        };
        if transports::has_modes(id) {
            label = format!("{label} {}", if mode == Mode::Rr { "rr" } else { "duplex" });
        }
        let client_tls = if use_tls {
            Some(tls::client_config(&trust, &[transports::alpn(id)])?)
        } else {
            None
        };
        for (k, sharing) in shapes {
            done += 1;
            eprintln!("[{done}/{total}] {label} K={k} {sharing:?} ...");
            let mut cfg = ClientConfig::new(addr);
            cfg.tls = client_tls.clone();
            cfg.streams = k;
            cfg.sharing = sharing;
            cfg.mode = mode;
            let work = Work {
                size: a.size,
                count: (a.count / u64::from(k)).max(100),
                warmup: 200,
                stream: Some(wirelab_core::codec::StreamRequest {
                    count: 100,
                    size: a.size as u32,
                    interval_ms: 0,
                }),
            };
            let o = transports::run_client(id, &cfg, &work)
                .await
                .with_context(|| format!("{label} K={k} {sharing:?}"))?;
            rows.push(Row {
                label: label.clone(),
                k,
                sharing: match (id, sharing) {
                    (TransportId::H1, Sharing::Pool) => "pool(6)",
                    (_, Sharing::Pool) => "pool",
                    _ => "shared",
                },
                setup_ms: o.setup.as_secs_f64() * 1e3,
                summary: stats::summarize(&o.rtt),
                rate: o.messages_per_sec(),
            });
        }
    }
    shutdown.cancel();
    println!();
    println!(
        "loopback echo, {} B messages, closed loop (each stream waits for its echo); client and servers share this host",
        a.size
    );
    println!();
    println!("| transport | K | sharing | setup ms | p50 us | p90 us | p99 us | max us | msg/s |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let s = r.summary;
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            r.label, r.k, r.sharing, r.setup_ms, s.p50_us, s.p90_us, s.p99_us, s.max_us, r.rate
        );
    }
    Ok(())
}
