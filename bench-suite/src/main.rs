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
//! ```

mod opts;
mod run;
mod serve;

use std::process::ExitCode;

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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wl-client")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `run` serves from its own runtime, so server and client CPU time can be told apart.
    let server_rt = match &cli.command {
        Command::Run(_) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(wirelab::probe::SERVER_THREAD)
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                eprintln!("error: cannot start the server runtime: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(a) => {
                let servers = wirelab::runner::Servers {
                    handle: server_rt
                        .as_ref()
                        .map_or_else(tokio::runtime::Handle::current, |r| r.handle().clone()),
                    separate: server_rt.is_some(),
                };
                run::run(a, servers).await
            }
            Command::Report(a) => run::report_cmd(a),
            Command::Compare(a) => run::compare_cmd(a),
            Command::Serve(a) => serve::serve(a).await,
            Command::Client(a) => serve::client(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
