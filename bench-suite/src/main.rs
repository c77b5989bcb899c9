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
//! ```

mod link_cmd;
mod opts;
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
    /// Measure scenarios (latency, throughput, setup, cost) on every transport over loopback;
    /// writes JSON results, report.md and SVG charts.
    Run(run::RunArgs),
    /// Rebuild report.md and the charts of a run directory from its JSON results.
    Report(run::ReportArgs),
    /// Print a Markdown diff of two run directories.
    Compare(run::CompareArgs),
    /// Serve the echo/stream service on one transport, or on all of them.
    Serve(serve::ServeArgs),
    /// Check a running server: echoes on K streams and a server stream; prints RTT percentiles.
    Client(serve::ClientArgs),
    /// The link emulator (TUN devices in two network namespaces; needs root).
    Link(link_cmd::LinkArgs),
    /// Head-of-line blocking under packet loss: K streams through the emulated link for every
    /// transport, over loss rates, RTTs and loss models; writes JSON, report.md and charts.
    /// Needs root.
    Hol(link_cmd::HolArgs),
}

/// Builds a multi-threaded runtime whose threads are named `name` and, with a link, live in
/// its client or server namespace.
fn runtime(
    name: &str,
    link: Option<(&Arc<wirelab_link::Link>, bool)>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_name(name);
    if let Some((l, server)) = link {
        let l = l.clone();
        b.on_thread_start(move || {
            let r = if server {
                l.enter_server()
            } else {
                l.enter_client()
            };
            if let Err(e) = r {
                eprintln!("error: a runtime thread could not enter the link namespace: {e}");
            }
        });
    }
    b.build()
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
        .init();
    // Everything that uses the link emulator starts it first, from this namespace; then the
    // server runtime's threads live in the server namespace, this thread and the client
    // runtime's in the client namespace.
    let link_cfg = match &cli.command {
        Command::Link(_) => None,
        Command::Hol(a) if a.report_only().is_some() => None,
        Command::Hol(a) => match a.plan() {
            Ok(_) => Some((a.link_setup().clone(), wirelab_link::LinkConfig::default())),
            Err(e) => return fail(e),
        },
        Command::Run(a) => match a.link_spec() {
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
    // `run` and `hol` serve from their own runtime, so server and client CPU time can be told
    // apart.
    let server_rt = match &cli.command {
        Command::Run(_) | Command::Hol(_) => {
            match runtime(
                wirelab::probe::SERVER_THREAD,
                link.as_ref().map(|l| (l, true)),
            ) {
                Ok(rt) => Some(rt),
                Err(e) => return fail(anyhow::anyhow!("cannot start the server runtime: {e}")),
            }
        }
        _ => None,
    };
    if let Some(l) = &link {
        if let Err(e) = l.enter_client() {
            return fail(anyhow::anyhow!("cannot enter the client namespace: {e}"));
        }
    }
    let rt = match runtime("wl-client", link.as_ref().map(|l| (l, false))) {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(a) => {
                let servers = servers(&server_rt, link.is_some());
                run::run(a, servers, link.clone()).await
            }
            Command::Hol(a) => {
                let servers = servers(&server_rt, true);
                let plan = a.plan()?;
                let link = link.clone().expect("hol starts a link");
                link_cmd::hol(plan, link, servers).await
            }
            Command::Link(_) => unreachable!("handled before the runtimes start"),
            Command::Report(a) => run::report_cmd(a),
            Command::Compare(a) => run::compare_cmd(a),
            Command::Serve(a) => serve::serve(a).await,
            Command::Client(a) => serve::client(a).await,
        }
    });
    // Runtime threads leave the namespaces first, then this thread; dropping the link stops
    // the forwarder, and the kernel frees the namespaces and devices.
    drop(rt);
    drop(server_rt);
    if let Some(l) = link {
        let _ = l.leave();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl Into<anyhow::Error>) -> ExitCode {
    eprintln!("error: {:#}", e.into());
    ExitCode::FAILURE
}

fn servers(rt: &Option<tokio::runtime::Runtime>, linked: bool) -> wirelab::runner::Servers {
    wirelab::runner::Servers {
        handle: rt
            .as_ref()
            .map_or_else(tokio::runtime::Handle::current, |r| r.handle().clone()),
        separate: rt.is_some(),
        listen: if linked {
            wirelab_link::SERVER_ADDR.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        },
        link: None,
    }
}
