//! The browser lab: Debian's headless Chromium, driven over the DevTools protocol
//! ([`crate::cdp`]), runs the page every HTTP server serves at `/` ([`wirelab_core::page`])
//! against the lab's servers, and its figures are saved like `run`'s (placement `browser`).
//!
//! What a browser can speak is data: [`TARGETS`] lists each (transport, security, browser API)
//! the lab measures; the page's `APIS` table (crates/wirelab-core/src/page.html) holds the
//! JavaScript of each API. A new browser API (WebTransport streams and datagrams) is one row
//! here and one entry there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cdp::{self, Cdp};
use crate::stats::{self, HistData};

/// One thing the browser measures: a transport's server, at a security, through a browser API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The transport id whose server the page is loaded from (same origin).
    pub transport: &'static str,
    /// Over TLS (`https://`, `wss://`).
    pub tls: bool,
    /// The page's API (a key of the page's `APIS`): `websocket`, `fetch`, `duplex`,
    /// `eventsource`, `webtransport` (a bidirectional stream), `wtdatagram`.
    pub api: &'static str,
    /// The workloads it runs: `echo`, `stream`.
    pub workloads: &'static [&'static str],
    /// The server whose origin the page is loaded from when it is not the target's own
    /// (transport, TLS): a cross-origin run (CORS; a "cold" WebSocket with no HTTP/2
    /// connection to its origin yet).
    pub from: Option<(&'static str, bool)>,
}

const BOTH: &[&str] = &["echo", "stream"];
/// Echo, stream, and fan-out (one publisher, subscribers on channels of their own) where the
/// server pushes to the page.
const PUSHED: &[&str] = &["echo", "stream", "fanout"];

/// Everything the browser lab measures, in report order. HTTP/2 and HTTP/3 need TLS in a
/// browser (no h2c); h3 is reached by forcing QUIC for its origin.
pub const TARGETS: &[Target] = &[
    Target {
        transport: "ws",
        tls: false,
        api: "websocket",
        workloads: PUSHED,
        from: None,
    },
    Target {
        transport: "ws",
        tls: true,
        api: "websocket",
        workloads: PUSHED,
        from: None,
    },
    Target {
        transport: "h1",
        tls: false,
        api: "fetch",
        workloads: BOTH,
        from: None,
    },
    Target {
        transport: "h2",
        tls: true,
        api: "fetch",
        workloads: BOTH,
        from: None,
    },
    Target {
        transport: "h2",
        tls: true,
        api: "duplex",
        workloads: &["echo"],
        from: None,
    },
    Target {
        transport: "h2ws",
        tls: true,
        api: "websocket",
        workloads: PUSHED,
        from: None,
    },
    Target {
        transport: "h3",
        tls: true,
        api: "fetch",
        workloads: BOTH,
        from: None,
    },
    Target {
        transport: "h3",
        tls: true,
        api: "duplex",
        workloads: &["echo"],
        from: None,
    },
    Target {
        transport: "sse",
        tls: false,
        api: "eventsource",
        workloads: BOTH,
        from: None,
    },
    Target {
        transport: "sse",
        tls: true,
        api: "eventsource",
        workloads: PUSHED,
        from: None,
    },
    // From another origin's page: the WebSocket opens a connection of its own offering only
    // ALPN http/1.1, and the h2ws server answers with the RFC 6455 upgrade.
    Target {
        transport: "h2ws",
        tls: true,
        api: "websocket",
        workloads: &["echo"],
        from: Some(("ws", true)),
    },
    // fetch from another origin: CORS.
    Target {
        transport: "h2",
        tls: true,
        api: "fetch",
        workloads: &["echo"],
        from: Some(("ws", true)),
    },
    // WebTransport: the wt server serves no page, so the page comes from the h2 server and
    // opens a session (a QUIC connection of its own) to the wt origin; a bidirectional stream
    // for echo and stream, datagrams for echo.
    Target {
        transport: "wt",
        tls: true,
        api: "webtransport",
        workloads: PUSHED,
        from: Some(("h2", true)),
    },
    Target {
        transport: "wt",
        tls: true,
        api: "wtdatagram",
        workloads: &["echo"],
        from: Some(("h2", true)),
    },
];

impl Target {
    /// Whether its server is reached over QUIC (UDP), so Chromium must be told to use QUIC
    /// for its origin: see [`over_quic`].
    pub fn quic(&self) -> bool {
        over_quic(self.transport)
    }

    /// Whether the page reaches it through the WebTransport API (streams or datagrams).
    pub fn webtransport(&self) -> bool {
        matches!(self.api, "webtransport" | "wtdatagram")
    }

    /// The page's origin on a server listening at `addr`.
    pub fn origin(&self, addr: SocketAddr) -> String {
        format!("{}://{addr}", if self.tls { "https" } else { "http" })
    }

    /// The URL the page's API is pointed at (`None`: the page's default for its own origin).
    pub fn url(&self, addr: SocketAddr) -> String {
        match self.api {
            "websocket" => format!("{}://{addr}/ws", if self.tls { "wss" } else { "ws" }),
            "webtransport" | "wtdatagram" => format!("https://{addr}/wt"),
            _ => self.origin(addr),
        }
    }

    /// Its label in tables: `browser ws`, `browser h2 fetch`, `browser sse-h2`,
    /// `browser h2ws (page of another origin)`.
    pub fn label(&self, transport_label: &str) -> String {
        let base = match self.api {
            "fetch" | "duplex" => format!("browser {transport_label} {}", self.api),
            "wtdatagram" => format!("browser {transport_label} datagram"),
            _ => format!("browser {transport_label}"),
        };
        match self.from {
            // A WebTransport server serves no page: every wt run is from another origin.
            Some(_) if !self.webtransport() => format!("{base} (page of another origin)"),
            _ => base,
        }
    }

    /// The server the page is loaded from: (transport, TLS).
    pub fn page_server(&self) -> (&'static str, bool) {
        self.from.unwrap_or((self.transport, self.tls))
    }
}

/// Whether a transport's server speaks QUIC (its floor is `quic`, as for h3), so a browser
/// reaches it only with QUIC forced for its origin.
pub fn over_quic(transport: &str) -> bool {
    crate::transports::parse(transport)
        .map(|id| crate::transports::descriptor(id).floor.map(|f| f.as_str()) == Some("quic"))
        .unwrap_or(false)
}

/// Where Chromium is: `$WIRELAB_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
/// `google-chrome` on `PATH`. The error says how to install it.
pub fn find_chromium() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WIRELAB_CHROMIUM") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("WIRELAB_CHROMIUM={} is not a file", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "Chromium was not found (looked for chromium, chromium-browser, google-chrome on PATH). \
         Install Debian's package: `sudo apt-get install -y --no-install-recommends chromium`, \
         or point WIRELAB_CHROMIUM at a Chromium or Chrome binary"
    )
}

/// Chromium's command line (pure): headless, no sandbox when root (a container's root cannot
/// use the sandbox), nothing that reaches the Internet, a fresh profile, DevTools on an
/// OS-chosen port, the lab's self-signed certificate trusted by its public key's hash, and
/// QUIC forced for the given origins (Chromium otherwise learns HTTP/3 only from Alt-Svc).
pub fn chromium_args(
    profile: &Path,
    spki: &str,
    force_quic: &[SocketAddr],
    netlog: Option<&Path>,
    root: bool,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if root {
        a.push("--no-sandbox".into());
    }
    a.push(format!("--user-data-dir={}", profile.display()));
    a.push(format!("--ignore-certificate-errors-spki-list={spki}"));
    if !force_quic.is_empty() {
        a.push("--enable-quic".into());
        let origins: Vec<String> = force_quic.iter().map(SocketAddr::to_string).collect();
        a.push(format!("--origin-to-force-quic-on={}", origins.join(",")));
    }
    if let Some(p) = netlog {
        a.push(format!("--log-net-log={}", p.display()));
        a.push("--net-log-capture-mode=Default".into());
    }
    a.push("about:blank".into());
    a
}

/// The DevTools URL in a line Chromium prints on stderr (pure).
pub fn devtools_url(line: &str) -> Option<&str> {
    let rest = line.split("DevTools listening on ").nth(1)?;
    let url = rest.trim();
    url.starts_with("ws://").then_some(url)
}

/// What the protocol of a WebSocket was, from the status of its handshake's response as the
/// browser reports it (pure): 101 is the HTTP/1.1 Upgrade (RFC 6455), 200 an extended CONNECT
/// over HTTP/2 (RFC 8441) or HTTP/3 (RFC 9220).
pub fn websocket_protocol(status: u64) -> &'static str {
    match status {
        101 => "http/1.1 (RFC 6455 Upgrade)",
        200 => "h2 (RFC 8441 extended CONNECT)",
        _ => "unknown",
    }
}

/// How slow requests that each take `interval_ms` finished (pure): the number that finished
/// in each wave (completion times grouped by the nearest multiple of the interval); a
/// per-host connection limit of 6 shows as `[6, 6, 6]`, none as one wave. Failed requests
/// (negative times) are left out.
pub fn waves(done_ms: &[f64], interval_ms: f64) -> Vec<usize> {
    let mut buckets: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
    if interval_ms <= 0.0 {
        return Vec::new();
    }
    for &t in done_ms.iter().filter(|t| **t >= 0.0) {
        *buckets.entry((t / interval_ms).round() as u64).or_default() += 1;
    }
    buckets.into_values().collect()
}

/// The pace of WebSocket opens (pure): opens per second between the first and the last open
/// of a `wsLimit` result (its `open_ms`), if at least two opened.
pub fn opens_per_s(v: &Value) -> Option<f64> {
    let t: Vec<f64> = v
        .get("open_ms")?
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let (first, last) = (t.first()?, t.last()?);
    (t.len() >= 2 && last > first).then(|| (t.len() - 1) as f64 / ((last - first) / 1000.0))
}

/// One run of the page's `wirelab.run`, as the page returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageRun {
    /// Messages echoed or received.
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Round trips, µs (echo).
    #[serde(default)]
    pub latencies_us: Vec<f64>,
    /// The measured phase, ms.
    pub elapsed_ms: f64,
    /// `nextHopProtocol` of every resource the run fetched from its origin.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// A fan-out run: what each subscriber received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<PageFanout>,
}

/// What the subscribers of a page's fan-out run received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageFanout {
    /// One entry per subscriber.
    pub subscribers: Vec<PageSubscriber>,
}

/// One subscriber of a page's fan-out run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageSubscriber {
    /// `[sequence, latency from the page's send of that publish, µs]` per delivery, in arrival
    /// order.
    pub got: Vec<(u64, f64)>,
    /// Why it stopped before the last message, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

impl PageRun {
    /// As a repetition of `run`'s results for scenario `s`: a fan-out run is folded as the
    /// Rust harness folds its own ([`crate::fanout::fold`]); the others by [`PageRun::rep`].
    pub fn rep_for(&self, s: &crate::scenario::Scenario) -> Result<crate::results::Rep> {
        let Some(f) = &self.fanout else {
            return Ok(self.rep());
        };
        let spec = crate::fanout::spec_of(s)?;
        let subs: Vec<crate::fanout::SubRecord> = f
            .subscribers
            .iter()
            .map(|p| crate::fanout::SubRecord {
                got: p
                    .got
                    .iter()
                    .map(|&(seq, us)| (seq, (us * 1000.0).round().max(1.0) as u64))
                    .collect(),
                stalled: false,
                cut: p.error.is_some(),
                error: p.error.clone(),
                last_at_ns: 0,
            })
            .collect();
        let figures = crate::fanout::fold(spec.messages, &subs)?;
        let elapsed = Duration::from_secs_f64(self.elapsed_ms.max(0.0) / 1000.0);
        Ok(crate::fanout::rep_of(&spec, &figures, None, elapsed, None))
    }

    /// As a repetition of `run`'s results (latencies in ns; at least 1).
    pub fn rep(&self) -> crate::results::Rep {
        let latency = if self.latencies_us.is_empty() {
            None
        } else {
            let mut h = stats::histogram();
            for us in &self.latencies_us {
                let ns = (us * 1000.0).round().max(1.0) as u64;
                let _ = h.record(ns);
            }
            Some(HistData::from_histogram(&h))
        };
        crate::results::Rep {
            messages: self.messages,
            elapsed_s: self.elapsed_ms / 1000.0,
            payload_bytes: self.bytes,
            latency,
            ..crate::results::Rep::default()
        }
    }
}

/// A running headless Chromium and its DevTools connection.
#[derive(Debug)]
pub struct Chromium {
    child: Child,
    cdp: Cdp,
    profile: PathBuf,
    /// `product` of `Browser.getVersion`, e.g. `HeadlessChrome/156.0.8078.108`.
    pub version: String,
}

/// One tab, attached as a flattened session, in a browser context of its own (its own
/// cookies, caches and connection pools: nothing is reused from another tab's connections).
#[derive(Debug, Clone)]
pub struct Tab {
    session: String,
    context: String,
}

impl Chromium {
    /// Starts Chromium with [`chromium_args`] and connects to its DevTools endpoint.
    pub async fn launch(
        spki: &str,
        force_quic: &[SocketAddr],
        netlog: Option<&Path>,
    ) -> Result<Self> {
        let bin = find_chromium()?;
        let profile = std::env::temp_dir().join(format!(
            "wirelab-chromium-{}-{}",
            std::process::id(),
            crate::env::unix_now()
        ));
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("cannot create {}", profile.display()))?;
        let root = rustix::process::geteuid().is_root();
        let mut child = Command::new(&bin)
            .args(chromium_args(&profile, spki, force_quic, netlog, root))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(u) = devtools_url(&line) {
                    return Ok(u.to_string());
                }
                if seen.len() < 20 {
                    seen.push(line);
                }
            }
            Err(anyhow!(
                "Chromium exited before printing its DevTools address"
            ))
        })
        .await
        .map_err(|_| anyhow!("Chromium printed no DevTools address in 30 s"))
        .and_then(|r| r)
        .with_context(|| format!("{} said:\n{}", bin.display(), seen.join("\n")))?;
        // Keep draining stderr, or Chromium blocks once the pipe is full.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let cdp = Cdp::connect(&url).await?;
        let v = cdp
            .call(
                "Browser.getVersion",
                json!({}),
                None,
                Duration::from_secs(10),
            )
            .await?;
        let version = v["product"].as_str().unwrap_or("unknown").to_string();
        Ok(Self {
            child,
            cdp,
            profile,
            version,
        })
    }

    /// The DevTools connection.
    pub fn cdp(&self) -> &Cdp {
        &self.cdp
    }

    /// Opens a tab in a new browser context, with the page, runtime and network domains
    /// enabled.
    pub async fn tab(&self) -> Result<Tab> {
        let t = Duration::from_secs(10);
        let r = self
            .cdp
            .call("Target.createBrowserContext", json!({}), None, t)
            .await?;
        let context = r["browserContextId"]
            .as_str()
            .context("no browserContextId")?
            .to_string();
        let r = self
            .cdp
            .call(
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context}),
                None,
                t,
            )
            .await?;
        let target = r["targetId"].as_str().context("no targetId")?.to_string();
        let r = self
            .cdp
            .call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
                None,
                t,
            )
            .await?;
        let session = r["sessionId"].as_str().context("no sessionId")?.to_string();
        for domain in ["Page.enable", "Runtime.enable", "Network.enable"] {
            self.cdp.call(domain, json!({}), Some(&session), t).await?;
        }
        Ok(Tab { session, context })
    }

    /// Closes a tab and its browser context (and so its connections).
    pub async fn close_tab(&self, tab: Tab) {
        let _ = self
            .cdp
            .call(
                "Target.disposeBrowserContext",
                json!({"browserContextId": tab.context}),
                None,
                Duration::from_secs(10),
            )
            .await;
    }

    /// Loads `url` in `tab` and waits for its load event.
    pub async fn goto(&self, tab: &Tab, url: &str) -> Result<()> {
        let t = Duration::from_secs(20);
        self.cdp.take_events();
        let r = self
            .cdp
            .call("Page.navigate", json!({"url": url}), Some(&tab.session), t)
            .await?;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            bail!("loading {url}: {e}");
        }
        self.cdp
            .wait_event("Page.loadEventFired", Some(&tab.session), t)
            .await
            .with_context(|| format!("loading {url}"))?;
        Ok(())
    }

    /// Evaluates `expr` in `tab`, awaiting a promise, and returns its value.
    pub async fn eval(&self, tab: &Tab, expr: &str, timeout: Duration) -> Result<Value> {
        let r = self
            .cdp
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
                Some(&tab.session),
                timeout,
            )
            .await?;
        cdp::evaluated(&r).map_err(|e| anyhow!("in the page: {e}"))
    }

    /// The protocols of the WebSocket handshakes the browser reported in `tab` since the last
    /// call (from `Network.webSocketHandshakeResponseReceived`).
    pub fn websocket_protocols(&self, tab: &Tab) -> Vec<String> {
        let mut out: Vec<String> = self
            .cdp
            .take_events()
            .iter()
            .filter(|e| e.method == "Network.webSocketHandshakeResponseReceived")
            .filter(|e| e.session.as_deref() == Some(tab.session.as_str()))
            .filter_map(|e| e.params.pointer("/response/status").and_then(Value::as_u64))
            .map(|s| websocket_protocol(s).to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Closes the browser (asking first, then killing it) and removes its profile.
    pub async fn close(mut self) {
        let _ = self
            .cdp
            .call("Browser.close", json!({}), None, Duration::from_secs(5))
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devtools_address_is_found_in_stderr() {
        assert_eq!(
            devtools_url("\nDevTools listening on ws://127.0.0.1:40001/devtools/browser/ab-cd\n"),
            Some("ws://127.0.0.1:40001/devtools/browser/ab-cd")
        );
        assert_eq!(
            devtools_url("[1130/092000.1:ERROR:bus.cc(407)] Failed"),
            None
        );
    }

    #[test]
    fn command_line_trusts_the_key_and_forces_quic() {
        let a = chromium_args(
            Path::new("/tmp/p"),
            "AAAA=",
            &["127.0.0.1:7706".parse().unwrap()],
            None,
            true,
        );
        assert!(a.contains(&"--ignore-certificate-errors-spki-list=AAAA=".to_string()));
        assert!(a.contains(&"--origin-to-force-quic-on=127.0.0.1:7706".to_string()));
        assert!(a.contains(&"--no-sandbox".to_string()));
        assert!(a.contains(&"--user-data-dir=/tmp/p".to_string()));
        let a = chromium_args(Path::new("/tmp/p"), "AAAA=", &[], None, false);
        assert!(!a.iter().any(|s| s.starts_with("--origin-to-force-quic-on")));
        assert!(!a.contains(&"--no-sandbox".to_string()));
    }

    #[test]
    fn targets_point_the_page_at_their_own_origin() {
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let ws = TARGETS[0];
        assert_eq!(ws.url(addr), "ws://127.0.0.1:9000/ws");
        let h2 = TARGETS.iter().find(|t| t.transport == "h2").unwrap();
        assert_eq!(h2.url(addr), "https://127.0.0.1:9000");
        assert_eq!(h2.label("h2"), "browser h2 fetch");
        let cold = TARGETS.iter().find(|t| t.from.is_some()).unwrap();
        assert!(cold.label("h2ws").ends_with("(page of another origin)"));
        assert_ne!(cold.page_server(), (cold.transport, cold.tls));
        assert!(TARGETS.iter().filter(|t| t.quic()).all(|t| t.tls));
        assert!(over_quic("h3") && over_quic("wt"));
        assert!(!over_quic("h2") && !over_quic("nonsense"));
        let wt: Vec<_> = TARGETS.iter().filter(|t| t.webtransport()).collect();
        assert_eq!(wt.len(), 2);
        for t in wt {
            assert_eq!(t.url(addr), "https://127.0.0.1:9000/wt");
            assert!(t.quic() && t.from.is_some());
        }
        let dg = TARGETS.iter().find(|t| t.api == "wtdatagram").unwrap();
        assert_eq!(dg.label("wt"), "browser wt datagram");
    }

    #[test]
    fn waves_show_a_connection_limit() {
        let h1: Vec<f64> = (0..18)
            .map(|i| 1000.0 * f64::from(i / 6 + 1) + f64::from(i))
            .collect();
        assert_eq!(waves(&h1, 1000.0), vec![6, 6, 6]);
        assert_eq!(waves(&[1010.0, 1020.0, -1.0], 1000.0), vec![2]);
        assert!(waves(&[1.0], 0.0).is_empty());
    }

    #[test]
    fn open_pace() {
        let v = json!({"open_ms": [10.0, 510.0, 1010.0]});
        assert_eq!(opens_per_s(&v), Some(2.0));
        assert_eq!(opens_per_s(&json!({"open_ms": [5.0]})), None);
        assert_eq!(opens_per_s(&json!({})), None);
    }

    #[test]
    fn websocket_status_names_the_protocol() {
        assert!(websocket_protocol(101).starts_with("http/1.1"));
        assert!(websocket_protocol(200).starts_with("h2"));
    }

    #[test]
    fn a_page_run_becomes_a_repetition() {
        let r: PageRun = serde_json::from_value(json!({
            "api": "websocket", "messages": 3, "bytes": 192, "latencies_us": [100.0, 200.5, 0.0],
            "elapsed_ms": 2.0, "protocols": []
        }))
        .unwrap();
        let rep = r.rep();
        assert_eq!(rep.messages, 3);
        assert_eq!(rep.elapsed_s, 0.002);
        let h = rep.latency.unwrap().to_histogram().unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h.min(), 1);
        let none = PageRun::default().rep();
        assert!(none.latency.is_none());
    }

    #[test]
    fn a_page_fanout_is_folded_like_the_rust_one() {
        let s = crate::scenario::embedded()
            .unwrap()
            .into_iter()
            .find(|s| s.name == "fanout_64B_n10_pool_r100")
            .unwrap();
        let all: Vec<Value> = (0..100).map(|k| json!([k, 500.0 + k as f64])).collect();
        let mut subs: Vec<Value> = (0..9).map(|_| json!({"got": all})).collect();
        // The tenth lost message 7 and then its connection.
        let short: Vec<Value> = (0..50)
            .filter(|k| *k != 7)
            .map(|k| json!([k, 900.0]))
            .collect();
        subs.push(json!({"got": short, "error": "WebSocket closed 1006"}));
        let r: PageRun = serde_json::from_value(json!({
            "messages": 949, "bytes": 949 * 64, "elapsed_ms": 1000.0,
            "fanout": {"subscribers": subs}
        }))
        .unwrap();
        let rep = r.rep_for(&s).unwrap();
        let f = rep.fanout.unwrap();
        assert_eq!((f.subscribers, f.published, f.deliveries), (10, 100, 949));
        assert_eq!((f.cut, f.disordered), (1, 0));
        assert_eq!(f.missed, 51);
        assert!(rep.lateness.is_none() && rep.behind.is_none());
        // The slowest subscriber per message, over the messages every subscriber got (0..50
        // but 7), as in the Rust fold: there the tenth, at 900 µs, is the slowest.
        let slowest = rep.latency.unwrap().to_histogram().unwrap();
        assert_eq!(slowest.len(), 49);
        assert!(slowest.min() > 899_000 && slowest.max() < 901_000);
        // Any other run is folded as before.
        let echo = PageRun::default();
        assert!(echo.rep_for(&s).unwrap().fanout.is_none());
    }
}
