//! `wirelab`: serve the echo/stream service over every transport, check it as a client, and
//! compare transports on loopback.
//!
//! ```text
//! wirelab run                                   # every transport on loopback, comparison table
//! wirelab serve                                 # all transports on 127.0.0.1:7700, 7701, ...
//! wirelab serve --transport ws --listen 127.0.0.1:9000 --tls --cert-out /tmp/c.pem
//! wirelab client --transport ws --connect 127.0.0.1:9000 --tls --ca /tmp/c.pem -k 8
//! ```

mod check;
mod opts;
mod run;
mod serve;
mod stats;
mod transports;

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
    /// Compare every available transport on loopback and print a table.
    Run(run::RunArgs),
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
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(a) => run::run(a).await,
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
