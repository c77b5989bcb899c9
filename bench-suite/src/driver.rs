//! The one experiment driver: plan → a server per row → cases → warm-up and measured
//! repetitions → a saved result per (case, row) → load → statistics → report.
//!
//! `wirelab run` (scenarios × transport variants, [`crate::runner`]) and `wirelab hol` (grid
//! cells × ways of carrying K streams, [`crate::hol`]) are [`Experiment`]s on it; each keeps its
//! own measurement of one repetition, its own metrics and its own report. What they share is
//! here: the order of work, progress, failures that do not stop the others, result files
//! ([`Saved`]: versioned JSON at `DIR/<case>/<row>.json`) and loading them back.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::runner::{Certs, Servers, VariantServer};
use crate::transports::Variant;

/// A measurement that failed, and why. The others still run.
#[derive(Debug)]
pub struct Failure {
    /// The case (scenario or grid cell).
    pub scenario: String,
    /// The row's label.
    pub variant: String,
    /// The error chain.
    pub error: String,
}

/// One repetition, as the driver sees it.
pub struct Repetition<'a, R: ?Sized, C: ?Sized> {
    /// The row (its server is running).
    pub row: &'a R,
    /// The case.
    pub case: &'a C,
    /// 0-based index over warm-up and measured repetitions together.
    pub index: u32,
    /// Whether it is a warm-up repetition (its record is not kept).
    pub warmup: bool,
    /// The row's server.
    pub server: &'a VariantServer,
}

/// An experiment on the driver.
pub trait Experiment {
    /// What gets its own server: a transport variant, or a way of carrying K streams.
    type Row;
    /// What is measured on each row: a scenario, or a grid cell.
    type Case;
    /// The record of one repetition.
    type Rep;
    /// The result of one case on one row (saved as it finishes).
    type Result: Saved;

    /// The rows, in order.
    fn rows(&self) -> &[Self::Row];
    /// The transport variant a row's server runs.
    fn variant<'a>(&self, row: &'a Self::Row) -> &'a Variant;
    /// A row's label in progress and failures.
    fn row_label(&self, row: &Self::Row) -> String;
    /// The cases that apply to a row, in order.
    fn cases(&self, row: &Self::Row) -> Vec<&Self::Case>;
    /// A case's name in progress and failures.
    fn case_name(&self, case: &Self::Case) -> String;
    /// Warm-up and measured repetitions per case.
    fn repetitions(&self) -> (u32, u32);
    /// Where results go.
    fn out(&self) -> &Path;
    /// Runs one repetition.
    fn one(
        &self,
        r: Repetition<'_, Self::Row, Self::Case>,
    ) -> impl Future<Output = Result<Self::Rep>>;
    /// A note a repetition leaves (e.g. the generator fell behind).
    fn note(&self, rep: &Self::Rep) -> Option<String>;
    /// The result of a case on a row from its measured repetitions and notes.
    fn finish(
        &self,
        row: &Self::Row,
        case: &Self::Case,
        reps: Vec<Self::Rep>,
        notes: Vec<String>,
    ) -> Result<Self::Result>;
}

/// How many repetitions the experiment runs in all (for progress bars).
pub fn total_reps<E: Experiment>(e: &E) -> u64 {
    let (w, m) = e.repetitions();
    let pairs: usize = e.rows().iter().map(|r| e.cases(r).len()).sum();
    pairs as u64 * u64::from(w + m)
}

/// Runs the experiment: for each row its server (local, or the remote one's), then each case's
/// repetitions; saves each result as it finishes. A failed case does not stop the others: it
/// is returned with the results.
pub async fn execute<E: Experiment>(
    e: &E,
    servers: &Servers,
    pb: &ProgressBar,
) -> Result<(Vec<E::Result>, Vec<Failure>)> {
    let out = e.out();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let certs = Certs::new()?;
    let (warmup, measured) = e.repetitions();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for row in e.rows() {
        let cases = e.cases(row);
        if cases.is_empty() {
            continue;
        }
        let label = e.row_label(row);
        let server = VariantServer::start(e.variant(row), &certs, servers).await?;
        for case in cases {
            let name = e.case_name(case);
            pb.set_message(format!("{name} · {label}"));
            let mut reps = Vec::new();
            let mut notes = Vec::new();
            let mut error = None;
            for index in 0..warmup + measured {
                let is_warmup = index < warmup;
                let r = Repetition {
                    row,
                    case,
                    index,
                    warmup: is_warmup,
                    server: &server,
                };
                match e.one(r).await {
                    Ok(rep) => {
                        if let Some(why) = e.note(&rep) {
                            let which = if is_warmup {
                                format!("warm-up repetition {}", index + 1)
                            } else {
                                format!("repetition {}", index - warmup + 1)
                            };
                            notes.push(format!("{which}: {why}"));
                        }
                        if !is_warmup {
                            reps.push(rep);
                        }
                    }
                    Err(err) => {
                        error = Some(format!("{err:#}"));
                        pb.inc(u64::from(warmup + measured - index));
                        break;
                    }
                }
                pb.inc(1);
            }
            if let Some(error) = error {
                pb.println(format!("FAILED {name} · {label}: {error}"));
                failures.push(Failure {
                    scenario: name,
                    variant: label.clone(),
                    error,
                });
                continue;
            }
            let result = e.finish(row, case, reps, notes)?;
            result.save(out)?;
            if pb.is_hidden() {
                eprintln!("done {name} · {label}");
            }
            results.push(result);
        }
        server.stop().await;
    }
    Ok((results, failures))
}

/// A result file: versioned JSON at `DIR/<case>/<row>.json`.
pub trait Saved: Serialize + DeserializeOwned + Sized {
    /// The schema id every file carries in its `schema` field.
    const SCHEMA: &'static str;
    /// What a reader calls it in errors ("result", "HOL result").
    const WHAT: &'static str;

    /// Its path under a run directory.
    fn path_in(&self, dir: &Path) -> PathBuf;

    /// Writes it under `dir`; returns the path.
    fn save(&self, dir: &Path) -> Result<PathBuf> {
        let path = self.path_in(dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Parses and checks the text of one file (pure). `origin` names it in errors.
    fn from_json(text: &str, origin: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("{origin} is not JSON"))?;
        match v.get("schema").and_then(|s| s.as_str()) {
            Some(s) if s == Self::SCHEMA => {}
            Some(other) => bail!(
                "{origin}: schema {other}, this wirelab reads {}",
                Self::SCHEMA
            ),
            None => bail!("{origin}: not a wirelab {} (no schema)", Self::WHAT),
        }
        serde_json::from_value(v).with_context(|| format!("{origin}: bad {} file", Self::WHAT))
    }

    /// Reads and checks one file.
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text, &path.display().to_string())
    }
}

/// Every result file under a run directory (`DIR/<case>/<row>.json`), in case then row order.
pub fn load_dir<T: Saved>(dir: &Path) -> Result<Vec<T>> {
    if !dir.is_dir() {
        bail!("{} is not a directory of results", dir.display());
    }
    let mut out = Vec::new();
    let mut subdirs: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for sub in subdirs {
        let mut files: Vec<_> = std::fs::read_dir(&sub)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            out.push(T::load(&f)?);
        }
    }
    if out.is_empty() {
        bail!(
            "no {} files (DIR/<case>/<variant>.json) in {}",
            T::WHAT,
            dir.display()
        );
    }
    Ok(out)
}
