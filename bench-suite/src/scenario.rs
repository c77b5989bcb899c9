//! Scenarios: what the harness measures, as data. Each is a TOML file in `bench-suite/scenarios/`
//! whose name encodes its parameters (`echo_64B_c8_shared`: 64-byte echoes on 8 streams sharing
//! one connection); the files are compiled into the binary, and `--scenario FILE` reads one from
//! disk.

use std::path::Path;

use serde::{Deserialize, Serialize};
use wirelab_core::Sharing;

/// What a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Closed-loop echo: each stream sends, waits for the echo, sends the next. Latency and
    /// throughput at a given concurrency.
    Echo,
    /// Open-loop echo at a fixed total rate, latency from the intended send time.
    Open,
    /// Open-loop runs at rising rates: the highest rate sustained within the latency objective.
    Saturate,
    /// From nothing to the first echo on a new session, repeated.
    Setup,
    /// One server stream, as fast as the transport takes it: goodput.
    Stream,
    /// N connections (one logical stream each), first idle, then active at a low total rate:
    /// server memory and CPU per connection, and connections per second at set-up. The server
    /// runs in a child process (`wirelab serve`) so its memory is its own.
    Scale,
    /// Unreliable datagram echo at a fixed rate (transports with datagrams: wt): loss and
    /// reordering of the echoes, and the round trip of those that came back (never
    /// retransmitted). What has not come back a bounded wait after the last send is lost.
    Datagram,
    /// One publisher, N subscribers of one topic, a fixed publish rate: per message the
    /// slowest subscriber's latency from the intended send time, every delivery's latency,
    /// deliveries per second, and what the slow-subscriber policy did (push transports only).
    Fanout,
}

/// How K logical streams map onto connections, as written in scenario files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingName {
    /// One connection carries all K streams.
    Shared,
    /// A pool of connections (one per stream; h1: 6).
    Pool,
}

impl From<SharingName> for Sharing {
    fn from(s: SharingName) -> Self {
        match s {
            SharingName::Shared => Sharing::Shared,
            SharingName::Pool => Sharing::Pool,
        }
    }
}

fn default_streams() -> u32 {
    1
}
fn default_sharing() -> SharingName {
    SharingName::Shared
}
fn default_size() -> String {
    "64B".into()
}

/// One scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The file name without `.toml`; must equal [`Scenario::canonical_name`].
    #[serde(default)]
    pub name: String,
    /// One sentence: what it shows.
    pub about: String,
    /// What it measures.
    pub kind: Kind,
    /// Sets it belongs to besides `full` (which has every scenario): `quick`, `default`.
    #[serde(default)]
    pub sets: Vec<String>,
    /// Message size: `64B`, `1KiB`, `64KiB`.
    #[serde(default = "default_size")]
    pub size: String,
    /// Logical streams (K).
    #[serde(default = "default_streams")]
    pub streams: u32,
    /// How the streams map onto connections.
    #[serde(default = "default_sharing")]
    pub sharing: SharingName,
    /// echo: measured messages per repetition over all streams; stream: messages in each
    /// stream's server stream; setup: sessions opened per repetition.
    #[serde(default)]
    pub messages: u64,
    /// open: messages per second over all streams; saturate: the first rate tried.
    #[serde(default)]
    pub rate: f64,
    /// open: how long messages are sent; saturate: length of each step.
    #[serde(default)]
    pub duration_ms: u64,
    /// saturate: the 99th-percentile latency (from intended send time) a sustained rate keeps.
    #[serde(default)]
    pub slo_ms: f64,
    /// setup: resume with 0-RTT (quic, h3 only).
    #[serde(default)]
    pub zero_rtt: bool,
    /// scale: connections opened (each one logical stream).
    #[serde(default)]
    pub connections: u64,
    /// fanout: subscribers (each its own connection with `pool`, or its own stream of one
    /// connection with `shared` on transports that multiplex).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subscribers: u64,
    /// fanout: what the server does with a subscriber whose queue is full: `block` (the
    /// default), `drop` (oldest) or `disconnect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// fanout: messages the server queues per subscriber (default 1024).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub queue: u64,
    /// fanout: subscribers that stop reading (the last ones), to show the policy at work.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stalled: u64,
    /// fanout: how long stalled subscribers stop reading (0: until the publisher is done;
    /// `block` needs a time, or the publisher would wait for them forever).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stall_ms: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The default per-subscriber queue of fan-out scenarios.
pub const DEFAULT_QUEUE: u64 = 1024;

/// Formats a size the way scenario names write it: `64B`, `1KiB`, `64KiB`, `1MiB`.
pub fn size_label(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// Parses `64B`, `1KiB`, `64KiB`, `1MiB`.
pub fn parse_size_label(s: &str) -> Result<usize, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else if let Some(n) = s.strip_suffix('B') {
        (n, 1)
    } else {
        return Err(format!("size '{s}' needs a unit: B, KiB or MiB"));
    };
    num.parse::<usize>()
        .ok()
        .and_then(|v| v.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size"))
}

impl Scenario {
    /// Parses a scenario file's text; `name` is the file stem.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| format!("scenario {name}: {e}"))?;
        s.name = name.to_string();
        s.validate()?;
        Ok(s)
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: no file name", path.display()))?;
        Self::parse(stem, &text)
    }

    /// Message size in bytes.
    pub fn size_bytes(&self) -> usize {
        parse_size_label(&self.size).unwrap_or(0)
    }

    /// The name its parameters give it.
    pub fn canonical_name(&self) -> String {
        let sharing = match self.sharing {
            SharingName::Shared => "shared",
            SharingName::Pool => "pool",
        };
        let shape = format!("{}_c{}_{sharing}", self.size, self.streams);
        match self.kind {
            Kind::Echo => format!("echo_{shape}"),
            Kind::Open => format!("open_{shape}_r{}", self.rate),
            Kind::Saturate => format!("saturate_{shape}"),
            Kind::Setup if self.zero_rtt => "setup_0rtt".into(),
            Kind::Setup => "setup_1rtt".into(),
            // One stream keeps its short name (stream_64KiB).
            Kind::Stream if self.streams == 1 && self.sharing == SharingName::Shared => {
                format!("stream_{}", self.size)
            }
            Kind::Stream => format!("stream_{shape}"),
            Kind::Scale => format!("scale_c{}", self.connections),
            Kind::Datagram => format!("datagram_{}_r{}", self.size, self.rate),
            Kind::Fanout => {
                let mut n = format!(
                    "fanout_{}_n{}_{sharing}_r{}",
                    self.size, self.subscribers, self.rate
                );
                if let Some(p) = self.policy.as_deref().filter(|p| *p != "block") {
                    n.push('_');
                    n.push_str(p);
                }
                if self.stalled > 0 {
                    n.push_str(&format!("_stall{}", self.stalled));
                }
                n
            }
        }
    }

    /// fanout: the slow-subscriber policy.
    pub fn slow_policy(&self) -> Result<wirelab_core::codec::SlowPolicy, String> {
        self.policy.as_deref().unwrap_or("block").parse()
    }

    /// Checks the fields the kind needs and that the name matches them.
    pub fn validate(&self) -> Result<(), String> {
        let err = |m: &str| Err(format!("scenario {}: {m}", self.name));
        let size =
            parse_size_label(&self.size).map_err(|e| format!("scenario {}: {e}", self.name))?;
        if !(wirelab_core::codec::HEADER_LEN..=16 << 20).contains(&size) {
            return err("size must be between 32 B (the header) and 16 MiB");
        }
        if size_label(size) != self.size {
            return err(&format!("write the size as {}", size_label(size)));
        }
        if self.streams == 0 || self.streams > 1000 {
            return err("streams must be 1..=1000");
        }
        // Also where the kind does not use them: the scenario is copied into every result file,
        // and JSON has no NaN or infinity (serde_json writes null, which does not load back).
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return err("rate must be a finite number, not negative");
        }
        if !(self.slo_ms.is_finite() && self.slo_ms >= 0.0) {
            return err("slo_ms must be a finite number, not negative");
        }
        for set in &self.sets {
            if set != "quick" && set != "default" {
                return err(&format!(
                    "unknown set '{set}' (quick, default; full has all)"
                ));
            }
        }
        match self.kind {
            Kind::Echo | Kind::Stream | Kind::Setup if self.messages == 0 => {
                return err("needs messages > 0")
            }
            Kind::Open | Kind::Saturate
                if !(self.rate.is_finite() && self.rate > 0.0) || self.duration_ms == 0 =>
            {
                return err("needs rate > 0 and duration_ms > 0")
            }
            Kind::Open if self.rate.fract() != 0.0 => return err("rate must be whole"),
            Kind::Datagram
                if !(self.rate.is_finite() && self.rate >= 1.0 && self.rate.fract() == 0.0)
                    || self.duration_ms == 0
                    || self.streams != 1
                    || self.sharing != SharingName::Shared =>
            {
                return err("needs a whole rate >= 1, duration_ms > 0, one shared stream")
            }
            Kind::Saturate if !self.slo_ms.is_finite() || self.slo_ms <= 0.0 => {
                return err("needs slo_ms > 0")
            }
            Kind::Scale
                if !((1..=100_000).contains(&self.connections)
                    && self.rate.is_finite()
                    && self.rate > 0.0
                    && self.duration_ms > 0) =>
            {
                return err("needs connections in 1..=100000, rate > 0 and duration_ms > 0")
            }
            _ => {}
        }
        if self.kind == Kind::Fanout {
            let policy = self
                .slow_policy()
                .map_err(|e| format!("scenario {}: {e}", self.name))?;
            if !(1..=100_000).contains(&self.subscribers) {
                return err("needs subscribers in 1..=100000");
            }
            if !(self.rate > 0.0 && self.rate.fract() == 0.0 && self.duration_ms > 0) {
                return err("needs a whole rate > 0 and duration_ms > 0");
            }
            if size < wirelab_core::codec::PUBLISH_MIN_LEN {
                return err("size must hold the topic: at least 36 B");
            }
            if self.sharing == SharingName::Shared && self.subscribers > 100 {
                return err("shared (streams of one connection) is for up to 100 subscribers, the servers' stream limit");
            }
            if self.queue > u64::from(wirelab_core::fanout::MAX_QUEUE) {
                return err("queue is over the servers' limit of 65536");
            }
            if self.stalled > self.subscribers {
                return err("stalled must not exceed subscribers");
            }
            if self.stalled > 0
                && self.stall_ms == 0
                && policy == wirelab_core::codec::SlowPolicy::Block
            {
                return err("a stalled subscriber under block needs stall_ms (or the publisher waits forever)");
            }
        } else if self.subscribers != 0
            || self.policy.is_some()
            || self.queue != 0
            || self.stalled != 0
            || self.stall_ms != 0
        {
            return err(
                "subscribers, policy, queue, stalled and stall_ms are for fanout scenarios",
            );
        }
        if self.connections != 0 && self.kind != Kind::Scale {
            return err("connections is for scale scenarios");
        }
        if self.zero_rtt && self.kind != Kind::Setup {
            return err("zero_rtt is for setup scenarios");
        }
        let want = self.canonical_name();
        if self.name != want {
            return err(&format!("its parameters name it '{want}'"));
        }
        Ok(())
    }

    /// Whether it belongs to `set` (`quick`, `default` or `full`).
    pub fn in_set(&self, set: &str) -> bool {
        set == "full" || self.sets.iter().any(|s| s == set)
    }
}

/// The scenario files compiled into the binary.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "echo_64B_c1_shared",
        include_str!("../scenarios/echo_64B_c1_shared.toml"),
    ),
    (
        "echo_64B_c8_shared",
        include_str!("../scenarios/echo_64B_c8_shared.toml"),
    ),
    (
        "echo_64B_c8_pool",
        include_str!("../scenarios/echo_64B_c8_pool.toml"),
    ),
    (
        "echo_64B_c64_shared",
        include_str!("../scenarios/echo_64B_c64_shared.toml"),
    ),
    (
        "echo_1KiB_c1_shared",
        include_str!("../scenarios/echo_1KiB_c1_shared.toml"),
    ),
    (
        "echo_1KiB_c8_shared",
        include_str!("../scenarios/echo_1KiB_c8_shared.toml"),
    ),
    (
        "echo_64KiB_c1_shared",
        include_str!("../scenarios/echo_64KiB_c1_shared.toml"),
    ),
    (
        "open_64B_c8_shared_r4000",
        include_str!("../scenarios/open_64B_c8_shared_r4000.toml"),
    ),
    (
        "open_64B_c1_shared_r1000",
        include_str!("../scenarios/open_64B_c1_shared_r1000.toml"),
    ),
    (
        "saturate_64B_c8_shared",
        include_str!("../scenarios/saturate_64B_c8_shared.toml"),
    ),
    ("setup_1rtt", include_str!("../scenarios/setup_1rtt.toml")),
    ("setup_0rtt", include_str!("../scenarios/setup_0rtt.toml")),
    ("stream_1KiB", include_str!("../scenarios/stream_1KiB.toml")),
    (
        "stream_64KiB",
        include_str!("../scenarios/stream_64KiB.toml"),
    ),
    ("scale_c500", include_str!("../scenarios/scale_c500.toml")),
    (
        "scale_c10000",
        include_str!("../scenarios/scale_c10000.toml"),
    ),
    (
        "datagram_64B_r1000",
        include_str!("../scenarios/datagram_64B_r1000.toml"),
    ),
    (
        "fanout_64B_n10_pool_r200",
        include_str!("../scenarios/fanout_64B_n10_pool_r200.toml"),
    ),
    (
        "fanout_64B_n1_pool_r100",
        include_str!("../scenarios/fanout_64B_n1_pool_r100.toml"),
    ),
    (
        "fanout_64B_n10_pool_r100",
        include_str!("../scenarios/fanout_64B_n10_pool_r100.toml"),
    ),
    (
        "fanout_64B_n100_pool_r100",
        include_str!("../scenarios/fanout_64B_n100_pool_r100.toml"),
    ),
    (
        "fanout_64B_n100_shared_r100",
        include_str!("../scenarios/fanout_64B_n100_shared_r100.toml"),
    ),
    (
        "fanout_64B_n1000_pool_r100",
        include_str!("../scenarios/fanout_64B_n1000_pool_r100.toml"),
    ),
    (
        "fanout_64B_n10000_pool_r100",
        include_str!("../scenarios/fanout_64B_n10000_pool_r100.toml"),
    ),
    (
        "fanout_64KiB_n4_pool_r500_stall1",
        include_str!("../scenarios/fanout_64KiB_n4_pool_r500_stall1.toml"),
    ),
    (
        "fanout_64KiB_n4_pool_r500_drop_stall1",
        include_str!("../scenarios/fanout_64KiB_n4_pool_r500_drop_stall1.toml"),
    ),
    (
        "fanout_64KiB_n4_pool_r500_disconnect_stall1",
        include_str!("../scenarios/fanout_64KiB_n4_pool_r500_disconnect_stall1.toml"),
    ),
];

/// Every embedded scenario, parsed (in the order above).
pub fn embedded() -> Result<Vec<Scenario>, String> {
    EMBEDDED
        .iter()
        .map(|(name, text)| Scenario::parse(name, text))
        .collect()
}

/// Finds scenarios by name (embedded) or path (a `.toml` file).
pub fn resolve(names: &[String]) -> Result<Vec<Scenario>, String> {
    let all = embedded()?;
    names
        .iter()
        .map(|n| {
            if n.ends_with(".toml") {
                Scenario::load(Path::new(n))
            } else {
                all.iter().find(|s| &s.name == n).cloned().ok_or_else(|| {
                    let known: Vec<_> = all.iter().map(|s| s.name.as_str()).collect();
                    format!("no scenario '{n}'; known: {}", known.join(", "))
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_scenario_parses_and_is_named_by_its_parameters() {
        let all = embedded().unwrap();
        assert_eq!(all.len(), EMBEDDED.len());
        assert!(all.iter().filter(|s| s.in_set("quick")).count() >= 3);
        for s in &all {
            assert_eq!(s.name, s.canonical_name());
            if s.in_set("quick") {
                assert!(
                    s.in_set("default"),
                    "{}: quick must be part of default",
                    s.name
                );
            }
        }
    }

    #[test]
    fn every_file_in_the_directory_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(
                EMBEDDED.iter().any(|(n, _)| *n == stem),
                "{} is not in scenario::EMBEDDED",
                p.display()
            );
        }
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let ok = "about = 'x'\nkind = 'echo'\nsize = '64B'\nstreams = 8\nmessages = 10\n";
        assert!(Scenario::parse("echo_64B_c8_shared", ok).is_ok());
        let e = Scenario::parse("echo_64B_c1_shared", ok).unwrap_err();
        assert!(e.contains("echo_64B_c8_shared"), "{e}");
        let e = Scenario::parse("x", "about='x'\nkind='echo'\nsize='64B'\n").unwrap_err();
        assert!(e.contains("messages"), "{e}");
        let e = Scenario::parse("x", "about='x'\nkind='warp'\n").unwrap_err();
        assert!(e.contains("warp"), "{e}");
        let e =
            Scenario::parse("x", "about='x'\nkind='echo'\nmessages=1\nsize='1024B'\n").unwrap_err();
        assert!(e.contains("1KiB"), "{e}");
        let e = Scenario::parse("x", "about='x'\nkind='echo'\nmessages=1\ncolour=3\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn a_stream_scenario_with_several_streams_says_so_in_its_name() {
        let one = "about = 'x'\nkind = 'stream'\nsize = '64KiB'\nmessages = 16\n";
        assert!(Scenario::parse("stream_64KiB", one).is_ok());
        let eight = format!("{one}streams = 8\n");
        assert!(Scenario::parse("stream_64KiB_c8_shared", &eight).is_ok());
        let e = Scenario::parse("stream_64KiB", &eight).unwrap_err();
        assert!(e.contains("stream_64KiB_c8_shared"), "{e}");
        let pool = format!("{one}sharing = 'pool'\n");
        assert!(Scenario::parse("stream_64KiB_c1_pool", &pool).is_ok());
    }

    /// The `scenario_toml` fuzz target's input (fuzz/fuzz_targets/scenario_toml.rs: the file
    /// stem, then the TOML). An echo scenario with `slo_ms = nan` was accepted; its result files
    /// then held `null` there and did not load.
    #[test]
    fn non_finite_or_negative_numbers_are_refused() {
        let input =
            "echo_64B_c1_shared\nabout = \"x\"\nkind = \"echo\"\nmessages = 1\nslo_ms = nan\n";
        let (name, text) = input.split_once('\n').unwrap();
        let e = Scenario::parse(name, text).unwrap_err();
        assert!(e.contains("slo_ms"), "{e}");
        for (extra, says) in [
            ("rate = inf", "rate"),
            ("rate = -1.0", "rate"),
            ("slo_ms = -inf", "slo_ms"),
        ] {
            let text = format!("about = 'x'\nkind = 'echo'\nmessages = 1\n{extra}\n");
            let e = Scenario::parse("echo_64B_c1_shared", &text).unwrap_err();
            assert!(e.contains(says), "{extra}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size_label(64), "64B");
        assert_eq!(size_label(1024), "1KiB");
        assert_eq!(size_label(65536), "64KiB");
        assert_eq!(size_label(1 << 20), "1MiB");
        assert_eq!(size_label(1500), "1500B");
        assert_eq!(parse_size_label("64KiB"), Ok(65536));
        assert!(parse_size_label("64").is_err());
    }
}
