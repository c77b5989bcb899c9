//! `wirelab-link`: the link emulator (DESIGN §4).
//!
//! A userspace link between two TUN devices in two network namespaces (the mahimahi design):
//! `client ns [tun] ⇄ forwarder ⇄ [tun] server ns`, MTU 1500, offloads off so every packet is
//! at most one MTU. Per direction: loss (Bernoulli or Gilbert-Elliott, seeded and decided by
//! packet index, so every transport meets the same losses) → a rate-limited drop-tail byte
//! queue → propagation delay with jitter (order kept unless reordering is asked for).
//!
//! The models ([`loss`], [`path`], [`spec`]) are pure: no I/O, time passed in. The I/O half is
//! [`netns`] (anonymous namespaces, entered per thread), [`forward`] (the forwarding thread)
//! and [`link`] (sets both up and tears them down), and [`check`] measures the result.
//! Creating namespaces and TUN devices needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN);
//! without it [`Link::start`] fails with [`Error::Privilege`].
//!
//! The same forwarder and models have a second front end, [`router`]: the docker compose
//! lab's router, between two Ethernet interfaces over AF_PACKET sockets ([`frame`] parses
//! and rebuilds the frames), driven from the client container through [`RouterClient`]. Both
//! are a [`LinkControl`] to the harness.

pub mod check;
pub mod forward;
pub mod frame;
pub mod link;
pub mod loss;
pub mod netns;
pub mod path;
pub mod router;
pub mod spec;

pub use link::{
    Link, LinkConfig, LinkControl, LinkInfo, LinkOptions, LinkStats, CLIENT_ADDR, SERVER_ADDR,
};
pub use loss::{LossModel, LossProcess};
pub use path::{Counters, Direction, DirectionConfig, Fate};
pub use router::{Router, RouterClient, RouterOptions};
pub use spec::LinkSpec;

/// What can go wrong setting up or running the link.
#[derive(Debug)]
pub enum Error {
    /// The process may not create namespaces or TUN devices; says what is missing.
    Privilege(String),
    /// Settings that cannot be used.
    Config(String),
    /// Setting up failed.
    Setup(String),
    /// An I/O call failed.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_string(),
            source,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Privilege(why) => write!(
                f,
                "the link emulator needs root or CAP_NET_ADMIN (and CAP_SYS_ADMIN for the \
                 network namespaces): {why}. Run it as root, e.g. `sudo target/release/wirelab \
                 link check`"
            ),
            Error::Config(why) => write!(f, "link settings: {why}"),
            Error::Setup(why) => write!(f, "link set-up: {why}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A uniform number in [0, 1) from a seed and an index (SplitMix64 of their mix): the same
/// pair always gives the same number, whatever was asked before.
pub fn uniform(seed: u64, index: u64) -> f64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn uniform_is_a_function_of_seed_and_index_and_looks_uniform() {
        assert_eq!(super::uniform(7, 42), super::uniform(7, 42));
        assert_ne!(super::uniform(7, 42), super::uniform(8, 42));
        let n = 100_000;
        let mean: f64 = (0..n).map(|i| super::uniform(1, i)).sum::<f64>() / n as f64;
        // Mean of U(0,1): 0.5 with standard error 0.289/sqrt(n) = 0.0009.
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let below: usize = (0..n).filter(|&i| super::uniform(1, i) < 0.1).count();
        assert!((9_000..11_000).contains(&below), "{below}");
    }
}
