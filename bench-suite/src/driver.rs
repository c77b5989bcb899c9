//! The one experiment driver: plan → a server per row → per case, warm-up and measured
//! repetitions in rounds over the rows → a saved result per (case, row) → load → statistics →
//! report.
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

/// Runs the experiment: every row's server (local, or the remote one's) first, then case by
/// case, the repetitions in rounds: round i runs repetition i of every row that has the case
/// (warm-ups first), so a machine that drifts over minutes (a noisy neighbour, the host moving
/// a vCPU) moves every row of a case alike instead of whichever row ran then, and the ratios
/// between rows stay comparable from run to run. Saves each result as its case finishes. A
/// failed repetition ends its row's case, not the others: it is returned with the results.
pub async fn execute<E: Experiment>(
    e: &E,
    servers: &Servers,
    pb: &ProgressBar,
) -> Result<(Vec<E::Result>, Vec<Failure>)> {
    /// One row's part in a case.
    struct Slot<'a, E: Experiment> {
        row: &'a E::Row,
        case: &'a E::Case,
        server: &'a VariantServer,
        label: String,
        reps: Vec<E::Rep>,
        notes: Vec<String>,
        error: Option<String>,
    }
    let out = e.out();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let certs = Certs::new()?;
    let (warmup, measured) = e.repetitions();
    let mut started = Vec::new();
    let mut order: Vec<String> = Vec::new();
    for row in e.rows() {
        let cases = e.cases(row);
        if cases.is_empty() {
            started.push(None);
            continue;
        }
        for case in cases {
            let name = e.case_name(case);
            if !order.contains(&name) {
                order.push(name);
            }
        }
        started.push(Some(
            VariantServer::start(e.variant(row), &certs, servers).await?,
        ));
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for name in &order {
        let mut slots: Vec<Slot<'_, E>> = e
            .rows()
            .iter()
            .zip(&started)
            .filter_map(|(row, server)| {
                let case = e.cases(row).into_iter().find(|c| e.case_name(c) == *name)?;
                Some(Slot {
                    row,
                    case,
                    server: server.as_ref()?,
                    label: e.row_label(row),
                    reps: Vec::new(),
                    notes: Vec::new(),
                    error: None,
                })
            })
            .collect();
        for index in 0..warmup + measured {
            let is_warmup = index < warmup;
            for slot in slots.iter_mut().filter(|s| s.error.is_none()) {
                pb.set_message(format!("{name} · {}", slot.label));
                let r = Repetition {
                    row: slot.row,
                    case: slot.case,
                    index,
                    warmup: is_warmup,
                    server: slot.server,
                };
                match e.one(r).await {
                    Ok(rep) => {
                        if let Some(why) = e.note(&rep) {
                            let which = if is_warmup {
                                format!("warm-up repetition {}", index + 1)
                            } else {
                                format!("repetition {}", index - warmup + 1)
                            };
                            slot.notes.push(format!("{which}: {why}"));
                        }
                        if !is_warmup {
                            slot.reps.push(rep);
                        }
                        pb.inc(1);
                    }
                    Err(err) => {
                        slot.error = Some(format!("{err:#}"));
                        pb.inc(u64::from(warmup + measured - index));
                    }
                }
            }
        }
        for slot in slots {
            if let Some(error) = slot.error {
                pb.println(format!("FAILED {name} · {}: {error}", slot.label));
                failures.push(Failure {
                    scenario: name.clone(),
                    variant: slot.label,
                    error,
                });
                continue;
            }
            let result = e.finish(slot.row, slot.case, slot.reps, slot.notes)?;
            result.save(out)?;
            if pb.is_hidden() {
                eprintln!("done {name} · {}", slot.label);
            }
            results.push(result);
        }
    }
    for server in started.into_iter().flatten() {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde::Deserialize;

    use super::*;
    use crate::topology::{Cpus, Pinning};

    /// What a fake experiment saves: nothing but where.
    #[derive(Serialize, Deserialize)]
    struct Done {
        case: String,
        row: String,
    }

    impl Saved for Done {
        const SCHEMA: &'static str = "wirelab.test/1";
        const WHAT: &'static str = "test result";
        fn path_in(&self, dir: &Path) -> PathBuf {
            dir.join(&self.case).join(format!("{}.json", self.row))
        }
    }

    /// Two rows (tcp, ws); case "a" only on tcp, "b" on both; 1 warm-up and 2 measured
    /// repetitions; ws fails its second repetition of "b". Records every repetition it runs.
    struct Fake {
        rows: Vec<Variant>,
        cases: Vec<String>,
        out: PathBuf,
        log: Mutex<Vec<(String, String, u32)>>,
    }

    impl Experiment for Fake {
        type Row = Variant;
        type Case = String;
        type Rep = u32;
        type Result = Done;
        fn rows(&self) -> &[Variant] {
            &self.rows
        }
        fn variant<'a>(&self, row: &'a Variant) -> &'a Variant {
            row
        }
        fn row_label(&self, row: &Variant) -> String {
            row.label()
        }
        fn cases(&self, row: &Variant) -> Vec<&String> {
            self.cases
                .iter()
                .filter(|c| *c == "b" || row.id.as_str() == "tcp")
                .collect()
        }
        fn case_name(&self, case: &String) -> String {
            case.clone()
        }
        fn repetitions(&self) -> (u32, u32) {
            (1, 2)
        }
        fn out(&self) -> &Path {
            &self.out
        }
        async fn one(&self, r: Repetition<'_, Variant, String>) -> Result<u32> {
            let label = r.row.label();
            self.log
                .lock()
                .unwrap()
                .push((r.case.clone(), label.clone(), r.index));
            if label == "ws" && r.case == "b" && r.index == 2 {
                bail!("the fake fails here");
            }
            Ok(r.index)
        }
        fn note(&self, _: &u32) -> Option<String> {
            None
        }
        fn finish(
            &self,
            row: &Variant,
            case: &String,
            reps: Vec<u32>,
            _: Vec<String>,
        ) -> Result<Done> {
            assert_eq!(reps, vec![1, 2], "measured repetitions only, in order");
            Ok(Done {
                case: case.clone(),
                row: row.slug(),
            })
        }
    }

    #[tokio::test]
    async fn repetitions_run_in_rounds_over_the_rows_and_a_failure_ends_only_its_row() {
        let out = std::env::temp_dir().join(format!("wirelab-driver-{}", std::process::id()));
        let ids = ["tcp", "ws"].map(|t| crate::transports::parse(t).unwrap());
        let rows = crate::transports::variants(&ids, false);
        let e = Fake {
            rows,
            cases: vec!["a".into(), "b".into()],
            out: out.clone(),
            log: Mutex::new(Vec::new()),
        };
        let servers = Servers {
            handle: tokio::runtime::Handle::current(),
            separate: false,
            listen: std::net::Ipv4Addr::LOCALHOST.into(),
            link: None,
            router: None,
            remote: None,
            cpus: Pinning {
                cpus: Cpus::Free,
                on: None,
            },
            quic_cc: wirelab_core::QuicCongestion::default(),
            qlog_dir: None,
        };
        let (results, failures) = execute(&e, &servers, &ProgressBar::hidden()).await.unwrap();
        let log = e.log.into_inner().unwrap();
        let step = |c: &str, r: &str, i: u32| (c.to_string(), r.to_string(), i);
        assert_eq!(
            log,
            vec![
                step("a", "tcp", 0),
                step("a", "tcp", 1),
                step("a", "tcp", 2),
                step("b", "tcp", 0),
                step("b", "ws", 0),
                step("b", "tcp", 1),
                step("b", "ws", 1),
                step("b", "tcp", 2),
                step("b", "ws", 2),
            ]
        );
        let saved: Vec<_> = results
            .iter()
            .map(|d| (d.case.as_str(), d.row.as_str()))
            .collect();
        assert_eq!(saved, vec![("a", "tcp"), ("b", "tcp")]);
        assert_eq!(failures.len(), 1);
        assert_eq!(
            (failures[0].scenario.as_str(), failures[0].variant.as_str()),
            ("b", "ws")
        );
        assert!(failures[0].error.contains("the fake fails here"));
        let _ = std::fs::remove_dir_all(&out);
    }
}
