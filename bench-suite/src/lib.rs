//! The wirelab harness as a library: transports by id, client workloads (closed loop, open
//! loop, setup, server-stream goodput), scenarios as data, statistics, results, reports and
//! charts, and the head-of-line experiment over the link emulator. The `wirelab` binary and the criterion benches are thin layers over it.

pub mod browser;
pub mod cdp;
pub mod chart;
pub mod compare;
pub mod control;
pub mod driver;
pub mod env;
pub mod fanout;
pub mod hol;
pub mod holindex;
pub mod probe;
pub mod report;
pub mod results;
pub mod resume;
pub mod runner;
pub mod scale;
pub mod scenario;
pub mod stats;
pub mod topology;
pub mod transports;
pub mod workload;
