//! `wirelab run`, `wirelab report` and `wirelab compare`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use wirelab::control::Remote;
use wirelab::runner::{self, Plan, Servers};
use wirelab::{compare, env, report, results, scenario, transports};
use wirelab_core::TransportId;

/// Options of `wirelab run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// QUIC congestion control of the quic, h3 and wt clients and servers (quinn's); recorded
    /// in every result. `--cc` sets TCP's.
    #[arg(long, value_name = "CC", default_value = "cubic", value_parser = ["cubic", "newreno", "bbr"])]
    pub(crate) quic_cc: String,
    /// The small set (about a minute on 2 cores; CI runs it).
    #[arg(long, conflicts_with_all = ["full", "scenario"])]
    quick: bool,
    /// Every scenario.
    #[arg(long, conflicts_with = "scenario")]
    full: bool,
    /// Scenarios by name (see --list) or as paths to .toml files, comma-separated.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Transports to compare, comma-separated; default: all.
    #[arg(long, value_delimiter = ',', value_parser = crate::opts::transport_parser())]
    transports: Vec<TransportId>,
    /// Directory for the results; default `results/run-<UTC date>-<time>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measured repetitions of each scenario per transport. 6 or more give a 95% interval
    /// for the median; fewer give min–max with a lower, stated coverage.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Unmeasured repetitions first.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Also run the other security of each transport: ws and h1 over TLS, h2 and h2ws cleartext.
    #[arg(long)]
    tls: bool,
    /// List the scenarios and their sets, then exit.
    #[arg(long)]
    list: bool,
    /// Run over the link emulator instead of loopback (needs root), e.g.
    /// `rtt=40ms,loss=1%` (keys: rtt delay jitter loss burst rate queue seed). Setup times
    /// are then also given in round trips. With --server it needs --router: the link is then
    /// the lab router's.
    #[arg(long, value_name = "SPEC")]
    link: Option<String>,
    /// Measure a remote server over the real network instead of local ones: the control
    /// endpoint of `wirelab serve --control ADDR` on that host, as HOST or HOST:PORT (port
    /// 7799 by default). Every transport it serves is measured at the security it serves.
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "tls")]
    server: Option<String>,
    /// With --server: trust the server's certificate through this CA (PEM), checking its name
    /// against HOST, instead of by the fingerprint its control endpoint gives.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca: Option<PathBuf>,
    /// With --server: the server is reached through the lab's router (`wirelab link router`)
    /// whose control endpoint is HOST or HOST:PORT (port 7798 by default); the router carries
    /// the --link settings (placement `lab`). See the lab chapter of the docs.
    #[arg(long, value_name = "HOST[:PORT]", requires = "server")]
    router: Option<String>,
    #[command(flatten)]
    link_setup: crate::link_cmd::LinkSetup,
    #[command(flatten)]
    cpu: crate::opts::CpuOpts,
}

impl RunArgs {
    /// The `--link` spec, parsed, when it is for the in-process link emulator (not the lab's
    /// router).
    pub(crate) fn local_link_spec(&self) -> Result<Option<wirelab_link::LinkSpec>> {
        if self.router.is_some() {
            return Ok(None);
        }
        if self.link.is_some() && self.server.is_some() {
            bail!("--link with --server needs --router (the lab's router carries the link)");
        }
        self.link_spec()
    }

    /// The `--link` spec, parsed.
    pub(crate) fn link_spec(&self) -> Result<Option<wirelab_link::LinkSpec>> {
        self.link
            .as_deref()
            .map(|s| s.parse().map_err(|e| anyhow::anyhow!("--link {s}: {e}")))
            .transpose()
    }

    /// Where the client and server threads run.
    pub(crate) fn cpu(&self) -> Option<wirelab::topology::Cpus> {
        self.cpu.cpu
    }

    /// How to set the link up.
    pub(crate) fn link_setup(&self) -> &crate::link_cmd::LinkSetup {
        &self.link_setup
    }
}

fn default_out() -> PathBuf {
    let t = env::rfc3339(env::unix_now());
    let stamp: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    PathBuf::from("results").join(format!("run-{}-{}", &stamp[..8], &stamp[8..]))
}

pub(crate) async fn run(
    a: RunArgs,
    mut servers: Servers,
    link: Option<std::sync::Arc<wirelab_link::Link>>,
) -> Result<()> {
    if let (Some(l), Some(spec)) = (link, a.local_link_spec()?) {
        servers.link = Some((l, spec));
    }

    let all = scenario::embedded().map_err(anyhow::Error::msg)?;
    if a.list {
        println!("| scenario | sets | what it shows |\n|---|---|---|");
        for s in &all {
            let mut sets = s.sets.clone();
            sets.push("full".into());
            println!("| {} | {} | {} |", s.name, sets.join(", "), s.about);
        }
        return Ok(());
    }
    let scenarios = if !a.scenario.is_empty() {
        scenario::resolve(&a.scenario).map_err(anyhow::Error::msg)?
    } else {
        let set = if a.quick {
            "quick"
        } else if a.full {
            "full"
        } else {
            "default"
        };
        all.into_iter().filter(|s| s.in_set(set)).collect()
    };
    let ids = if a.transports.is_empty() {
        transports::ids()
    } else {
        a.transports.clone()
    };
    if a.reps < 6 {
        eprintln!(
            "note: with {} repetitions the interval for the median covers less than 95% (6 reach it)",
            a.reps
        );
    }
    let variants = match &a.server {
        None => transports::variants(&ids, a.tls),
        Some(server) => {
            let (server, ca) = (server.clone(), a.ca.clone());
            let remote = Remote::connect_async(server, ca).await?;
            eprint!("{}", remote.describe());
            let variants = remote_variants(&remote, &ids);
            if variants.is_empty() {
                bail!(
                    "the remote server serves none of the transports asked for ({})",
                    ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(" ")
                );
            }
            servers.remote = Some(std::sync::Arc::new(remote));
            variants
        }
    };
    if let Some(addr) = &a.router {
        let spec = a.link_spec()?.unwrap_or_default();
        let (router, info) = crate::link_cmd::connect_router(addr, &spec, &servers)?;
        servers.link = Some((router, spec));
        servers.router = Some(info);
    }
    let plan = Plan {
        scenarios,
        variants,
        reps: a.reps,
        warmup_reps: a.warmup,
        out: a.out.clone().unwrap_or_else(default_out),
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; for figures use `cargo run --release -p wirelab -- run`"
        );
    }
    let total = runner::total_reps(&plan);
    eprintln!(
        "wirelab run: {} scenarios × {} transport variants, {} repetitions each (+{} warm-up) -> {}",
        plan.scenarios.len(),
        plan.variants.len(),
        plan.reps,
        plan.warmup_reps,
        plan.out.display()
    );
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} repetitions, eta {eta}  {msg}",
            )
            .context("progress template")?
            .progress_chars("=> "),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let t0 = Instant::now();
    let (results, failures) = runner::execute(&plan, &servers, &pb).await?;
    pb.finish_and_clear();
    if results.is_empty() {
        for f in &failures {
            eprintln!("FAILED {} · {}: {}", f.scenario, f.variant, f.error);
        }
        bail!("no measurement succeeded ({} failed)", failures.len());
    }
    let path = report::write(&plan.out, &results)?;
    println!("{}", report::terminal(&results));
    println!(
        "\n{} results in {:.0} s. Report: {}",
        results.len(),
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED {} · {}: {}", f.scenario, f.variant, f.error);
        }
        bail!(
            "{} measurements failed (the others are in the report)",
            failures.len()
        );
    }
    Ok(())
}

/// The variants of `ids` the remote server serves, at the security it serves them.
pub(crate) fn remote_variants(r: &Remote, ids: &[TransportId]) -> Vec<transports::Variant> {
    let mut out = Vec::new();
    for &id in ids {
        let served: Vec<_> = r
            .info
            .served
            .iter()
            .filter(|s| s.transport == id.as_str())
            .collect();
        if served.is_empty() {
            eprintln!("note: the remote server does not serve {id}; left out");
        }
        for s in served {
            for &mode in transports::descriptor(id).modes {
                out.push(transports::Variant {
                    id,
                    tls: s.tls,
                    mode,
                });
            }
        }
    }
    out
}

/// Options of `wirelab report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// A run directory (what `wirelab run --out` wrote).
    dir: PathBuf,
}

pub(crate) fn report_cmd(a: ReportArgs) -> Result<()> {
    let results = results::load_dir(&a.dir)?;
    let path = report::write(&a.dir, &results)?;
    println!("{}", report::terminal(&results));
    println!("\nReport: {}", path.display());
    Ok(())
}

/// Options of `wirelab compare`.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// The baseline run directory.
    a: PathBuf,
    /// The run directory compared with it.
    b: PathBuf,
}

pub(crate) fn compare_cmd(a: CompareArgs) -> Result<()> {
    let ra = results::load_dir(&a.a)?;
    let rb = results::load_dir(&a.b)?;
    print!("{}", compare::compare(&ra, &rb));
    Ok(())
}
