//! The environment a run was measured in, recorded beside every result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where and with what a result was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Env {
    /// wirelab's version.
    pub wirelab: String,
    /// Git revision of the build, and `clean`/`dirty`/`unknown`.
    pub git_rev: String,
    /// Whether the work tree had uncommitted changes at build time.
    pub git_state: String,
    /// `rustc -V` of the build.
    pub rustc: String,
    /// `release` or `debug` (debug figures are not comparable).
    pub profile: String,
    /// Versions of the protocol crates, from the build's Cargo.lock.
    pub crates: BTreeMap<String, String>,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// The CPUs this process may run on (`Cpus_allowed_list`): pinning, if any.
    pub cpus_allowed: String,
    /// Kernel release.
    pub kernel: String,
    /// TCP congestion control in use.
    pub tcp_congestion_control: String,
    /// When the run started (UTC, RFC 3339).
    pub started: String,
    /// The command line.
    pub command: String,
}

/// The crates whose versions matter to the figures.
const CRATES: [&str; 12] = [
    "tokio",
    "hyper",
    "h2",
    "tungstenite",
    "tokio-tungstenite",
    "rustls",
    "tokio-rustls",
    "ring",
    "quinn",
    "quinn-proto",
    "h3",
    "h3-quinn",
];

/// Versions of `names` in a Cargo.lock text.
pub fn lock_versions(lock: &str, names: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if names.contains(&n.as_str()) {
                out.insert(n, v.trim_matches('"').to_string());
            }
        }
    }
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A UNIX time as RFC 3339 UTC, e.g. `2026-11-24T09:05:00Z`.
pub fn rfc3339(unix: u64) -> String {
    let (y, m, d) = civil((unix / 86_400) as i64);
    let s = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Seconds since the UNIX epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Env {
    /// Reads this machine and this build.
    pub fn capture() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let (cores, cpus_allowed) = process_cpus();
        Env {
            wirelab: env!("CARGO_PKG_VERSION").into(),
            git_rev: env!("WIRELAB_GIT_REV").into(),
            git_state: env!("WIRELAB_GIT_STATE").into(),
            rustc: env!("WIRELAB_RUSTC").into(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            crates: lock_versions(include_str!("../../Cargo.lock"), &CRATES),
            cpu_model,
            cores,
            cpus_allowed,
            kernel: read("/proc/sys/kernel/osrelease"),
            tcp_congestion_control: read("/proc/sys/net/ipv4/tcp_congestion_control"),
            started: rfc3339(unix_now()),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

/// The CPUs the process may use as it started: their count and `Cpus_allowed_list`. Read once
/// and kept, because `--cpu` later pins every thread (the main one included) to one CPU, after
/// which the thread's own view is that one CPU. [`crate::topology::Pinning::resolve`] reads it
/// before it pins anything.
pub fn process_cpus() -> (usize, String) {
    static CPUS: std::sync::OnceLock<(usize, String)> = std::sync::OnceLock::new();
    CPUS.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        (
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            allowed,
        )
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_515_900), "2026-11-24T10:25:00Z");
    }

    #[test]
    fn versions_come_from_the_lock_file() {
        let lock = "[[package]]\nname = \"hyper\"\nversion = \"1.12.0\"\n\n[[package]]\nname = \"h2\"\nversion = \"0.4.20\"\n";
        let v = lock_versions(lock, &["hyper", "h2", "quinn"]);
        assert_eq!(v.get("hyper").map(String::as_str), Some("1.12.0"));
        assert_eq!(v.len(), 2);
        let real = Env::capture();
        assert!(real.crates.contains_key("quinn"), "{:?}", real.crates);
        assert!(real.cores >= 1);
    }
}
