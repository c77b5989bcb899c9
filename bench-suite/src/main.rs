//! `wirelab`: serve the echo/stream service over every transport, check it as a client, and
//! compare transports on loopback.
//!
//! ```text
//! wirelab run                                   # default scenarios, every transport, report
//! wirelab run --quick --transports tcp,h2       # a minute; --full for every scenario
//! wirelab report results/run-20261124-101500    # rebuild report.md and charts from the JSON
//! wirelab compare results/A results/B           # Markdown diff of two runs
//! wirelab serve                                 # all transports on 127.0.0.1:7700, 7701, ...
//! wirelab serve --transport ws --listen 127.0.0.1:9000 --tls --cert-out /tmp/c.pem
//! wirelab client --transport ws --connect 127.0.0.1:9000 --tls --ca /tmp/c.pem -k 8
//! sudo wirelab link check                       # the link emulator's accuracy here
//! sudo wirelab hol --quick                      # head-of-line blocking under loss
//! sudo wirelab run --link rtt=40ms,loss=1%      # the scenarios over an emulated link
//! wirelab serve --control 0.0.0.0:7799          # on host A: every transport and a control endpoint
//! wirelab run --server host-a                   # on host B: the scenarios over the real path
//! wirelab transports                            # what each transport is
//! wirelab browser --quick                       # the workloads from headless Chromium
//! wirelab browser --limits                      # the browser's own limits
//! ```

mod browser_cmd;
mod link_cmd;
mod opts;
mod resume_cmd;
mod run;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// Measure WebSocket, HTTP/1.1, HTTP/2, RFC 8441 and HTTP/3/QUIC with one service and one harness.
#[derive(Debug, Parser)]
#[command(name = "wirelab", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (e.g. `info`, `wirelab_ws=debug`); also read from RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure scenarios (latency, throughput, setup, cost) on every transport: over loopback,
    /// an emulated link (--link) or against a remote server (--server); writes JSON results,
    /// report.md and SVG charts.
    Run(run::RunArgs),
    /// Rebuild report.md and the charts of a run directory from its JSON results.
    Report(run::ReportArgs),
    /// Print a Markdown diff of two run directories.
    Compare(run::CompareArgs),
    /// Serve the echo/stream service on one transport, or on all of them.
    Serve(serve::ServeArgs),
    /// Check a running server: echoes on K streams and a server stream; prints RTT percentiles.
    Client(serve::ClientArgs),
    /// The link emulator (TUN devices in two network namespaces; needs root), its accuracy
    /// check, and the docker compose lab's router and peer.
    Link(link_cmd::LinkArgs),
    /// List the transports this build has: what each is, its TLS policy, modes, 0-RTT, floor,
    /// and the variants `run` and `hol` measure.
    Transports(TransportsArgs),
    /// Head-of-line blocking under packet loss: K streams through the emulated link for every
    /// transport, over loss rates, RTTs and loss models (needs root), or over a real path
    /// against a remote server (--server); writes JSON, report.md and charts.
    Hol(link_cmd::HolArgs),
    /// Run the workloads from headless Chromium (WebSocket, RFC 8441, fetch over h1/h2/h3,
    /// EventSource) against servers in this process, beside the Rust client; or, with
    /// --limits, measure the browser's own limits. Writes JSON results, report.md and charts.
    Browser(browser_cmd::BrowserArgs),
    /// Resume after a broken connection: a long resumable server stream on every transport
    /// that pushes, broken by a cut, a server restart or an outage past the server's window,
    /// then resumed by offset and epoch (loopback, or the link emulator with --link, as root).
    /// Writes resume.json and report.md.
    Resume(resume_cmd::ResumeArgs),
}

/// Options of `wirelab transports`.
#[derive(Debug, clap::Args)]
struct TransportsArgs {
    /// As JSON (one object per transport), for scripts.
    #[arg(long)]
    json: bool,
}

fn transports_cmd(a: &TransportsArgs) -> anyhow::Result<()> {
    use wirelab::transports::{self, StreamsVariant, Variant};
    let hol = transports::streams_variants();
    let mut rows = Vec::new();
    for d in transports::LIST {
        let tls = match d.tls {
            wirelab_core::TlsPolicy::Never => "never",
            wirelab_core::TlsPolicy::Always => "always",
            wirelab_core::TlsPolicy::Optional { by_default: true } => "by default",
            wirelab_core::TlsPolicy::Optional { by_default: false } => "optional",
        };
        let run: Vec<String> = transports::variants(&[d.id], true)
            .iter()
            .map(Variant::label)
            .collect();
        let hol: Vec<String> = hol
            .iter()
            .filter(|h| h.variant.id == d.id)
            .map(StreamsVariant::label)
            .collect();
        if a.json {
            rows.push(serde_json::json!({
                "id": d.id.as_str(),
                "summary": d.summary,
                "alpn": String::from_utf8_lossy(d.alpn),
                "tls": tls,
                "zero_rtt": d.zero_rtt,
                "datagrams": d.datagrams,
                "floor": d.floor.map(|f| f.as_str()),
                "variants": run,
                "hol_variants": hol,
            }));
        } else {
            println!("{:<5} {}", d.id, d.summary);
            println!(
                "      TLS {tls}{}; 0-RTT {}; floor {}{}",
                if d.alpn.is_empty() {
                    String::new()
                } else {
                    format!(" (ALPN {})", String::from_utf8_lossy(d.alpn))
                },
                if d.zero_rtt { "yes" } else { "no" },
                d.floor.map_or("none (it is one)", |f| f.as_str()),
                if d.datagrams {
                    "; datagrams (run's datagram scenarios)"
                } else {
                    ""
                }
            );
            println!("      run: {}; hol: {}", run.join(", "), hol.join(", "));
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// The client and server runtimes, pinned as `cpu` asks, in the link's namespaces if any.
fn topology(
    link: Option<Arc<wirelab_link::Link>>,
    cpu: Option<wirelab::topology::Cpus>,
) -> anyhow::Result<wirelab::topology::Topology> {
    let cpus = wirelab::topology::Pinning::resolve(cpu)?;
    wirelab::topology::Topology::start(link, None, cpus)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Client and server can share a process (loopback, the link emulator): the runtime's
        // thread name (`wl-client`, `wl-server`, …) says whose line it is.
        .with_thread_names(true)
        .init();
    // Everything that uses the link emulator starts it first, from this namespace; then the
    // server runtime's threads live in the server namespace, this thread and the client
    // runtime's in the client namespace.
    let link_cfg = match &cli.command {
        Command::Link(_) => None,
        Command::Hol(a) if a.report_only().is_some() || a.server().is_some() => {
            if let Err(e) = a.plan() {
                return fail(e);
            }
            None
        }
        Command::Hol(a) => match a.plan() {
            Ok(_) => Some((a.link_setup().clone(), wirelab_link::LinkConfig::default())),
            Err(e) => return fail(e),
        },
        Command::Run(a) => match a.local_link_spec() {
            Ok(Some(spec)) => Some((a.link_setup().clone(), spec.config())),
            Ok(None) => None,
            Err(e) => return fail(e),
        },
        Command::Resume(a) => match a.local_link_spec() {
            Ok(Some(spec)) => Some((a.link_setup().clone(), spec.config())),
            Ok(None) => None,
            Err(e) => return fail(e),
        },
        _ => None,
    };
    if let Command::Hol(a) = &cli.command {
        if let Some(dir) = a.report_only() {
            return match link_cmd::hol_report(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            };
        }
    }
    if let Command::Transports(a) = &cli.command {
        return match transports_cmd(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    if let Command::Link(a) = cli.command {
        return match link_cmd::link(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let link = match link_cfg.map(|(setup, cfg)| setup.start(cfg)) {
        None => None,
        Some(Ok(l)) => Some(Arc::new(l)),
        Some(Err(e)) => return fail(e),
    };
    let result = match cli.command {
        // `run` and `hol` serve from their own runtime, so server and client CPU time can be
        // told apart; over a link each runtime lives in its side's namespace.
        Command::Run(a) => {
            let topo = match topology(link, a.cpu()) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let (mut servers, link) = (topo.servers(), topo.link().cloned());
            servers.quic_cc = match a.quic_cc.parse() {
                Ok(c) => c,
                Err(e) => return fail(anyhow::anyhow!(e)),
            };
            topo.block_on(run::run(a, servers, link))
        }
        Command::Resume(a) => {
            let topo = match topology(link, a.cpu()) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let (mut servers, link) = (topo.servers(), topo.link().cloned());
            topo.block_on(async move {
                if let (Some(l), Some(spec)) = (link, a.local_link_spec()?) {
                    servers.link = Some((l, spec));
                }
                resume_cmd::resume(a, servers).await
            })
        }
        Command::Browser(a) => {
            // Chromium's processes run wherever the scheduler puts them: no pinning here either
            // (results record `free`).
            let topo = match topology(None, Some(wirelab::topology::Cpus::Free)) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let servers = topo.servers();
            topo.block_on(browser_cmd::browser(a, servers))
        }
        Command::Hol(a) => {
            let topo = match topology(link, a.cpu()) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let (mut servers, link) = (topo.servers(), topo.link().cloned());
            servers.quic_cc = match a.quic_cc.parse() {
                Ok(c) => c,
                Err(e) => return fail(anyhow::anyhow!(e)),
            };
            topo.block_on(async move {
                let plan = a.plan()?;
                link_cmd::hol(
                    plan,
                    &a,
                    link.map(|l| l as Arc<dyn wirelab_link::LinkControl>),
                    servers,
                )
                .await
            })
        }
        command => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("wl-client")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(anyhow::anyhow!("cannot start the async runtime: {e}")),
            };
            rt.block_on(async {
                match command {
                    Command::Report(a) => run::report_cmd(a),
                    Command::Compare(a) => run::compare_cmd(a),
                    Command::Serve(a) => serve::serve(a).await,
                    Command::Client(a) => serve::client(a).await,
                    Command::Run(_)
                    | Command::Browser(_)
                    | Command::Resume(_)
                    | Command::Hol(_)
                    | Command::Link(_)
                    | Command::Transports(_) => {
                        unreachable!("handled above")
                    }
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl Into<anyhow::Error>) -> ExitCode {
    eprintln!("error: {:#}", e.into());
    ExitCode::FAILURE
}
