//! The resume experiment: a long resumable server stream, broken mid-flight, resumed.
//!
//! Per transport and break kind, the client starts a stream with the contract's
//! [`codec::Resume`] (a token, epoch 0), processes messages by offset through
//! [`resume::Dedup`], breaks the connection at a set offset, stays away for the outage,
//! reconnects with jittered exponential backoff ([`resume::backoff`]) and presents its epoch and
//! the first offset it has not processed. The server replays from its bounded window, or says
//! explicitly that it cannot. Measured: the time from the start of the reconnection attempt
//! that succeeded to the first new message (the backoff's waits apart), what was replayed, lost (must be 0 inside the window) and dropped
//! as duplicates, and the server's answer.
//!
//! Break kinds:
//! - `cut`: the client drops its connection (for TCP transports a FIN, for QUIC a close) and
//!   comes back after the outage, inside the window: nothing may be lost.
//! - `restart`: the server process's state is gone (the server is stopped and a new one started
//!   on the same port, with a new epoch): the answer must be `epoch changed`, never a gap.
//! - `window`: the client stays away longer than the server's window: the answer must be
//!   `outside window`.
//! - `dark`: the path loses every packet, both ways, for the outage (the link emulator's
//!   settings switched to 100% loss and back); the client keeps its connection and reads on.
//!   The transport's own recovery is measured: from the path's return to the first new message
//!   (TCP's retransmission timeout, QUIC's probe timeout). Its answer is `held` when the
//!   connection survived; otherwise the client resumes as for `cut`.
//! - `migrate`: the client's address changes and the old one is gone at once (a NAT rebinding,
//!   or a phone moving from Wi-Fi to cellular); with the link emulator the path is first dark
//!   for the outage and comes back under the new address. A QUIC client moves its connection to
//!   a new UDP socket (no new handshake; answer `migrated`); a TCP-based client cannot keep its
//!   connection and opens a new one at once, and resumes (answer `ok`). Measured from the
//!   address change to the first new message.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use wirelab_core::codec::{self, Kind, Resume, ResumeAnswer, ResumeStatus, StreamRequest};
use wirelab_core::resume::{self, Dedup, Seen};
use wirelab_core::{Channel, Client, ClientConfig};

use crate::runner::{Certs, Servers, VariantServer};
use crate::transports::Variant;

/// How the stream is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Break {
    /// The client drops its connection and comes back inside the window.
    Cut,
    /// The server restarts (its replay state is lost; a new epoch).
    Restart,
    /// The client stays away longer than the server's window.
    Window,
    /// The path goes dark (every packet lost, both directions) for the outage, then returns;
    /// the client keeps its connection. Needs the link emulator (`--link`).
    Dark,
    /// The client's address changes (its old one is gone at once): QUIC migrates the
    /// connection, TCP-based transports reconnect and resume. With `--link` the path is dark
    /// for the outage first.
    Migrate,
}

impl Break {
    /// Every kind, in report order.
    pub const ALL: [Break; 5] = [
        Break::Cut,
        Break::Restart,
        Break::Window,
        Break::Dark,
        Break::Migrate,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Break::Cut => "cut",
            Break::Restart => "restart",
            Break::Window => "window",
            Break::Dark => "dark",
            Break::Migrate => "migrate",
        }
    }

    /// The answer a correct server gives to the resume (for `dark`, if the connection did
    /// not survive and the client had to resume).
    pub fn expected(self) -> ResumeStatus {
        match self {
            Break::Cut | Break::Dark | Break::Migrate => ResumeStatus::Ok,
            Break::Restart => ResumeStatus::EpochChanged,
            Break::Window => ResumeStatus::OutsideWindow,
        }
    }
}

/// What runs across the break.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// A long server stream, resumed with the contract's resume protocol (offsets, an epoch,
    /// the server's bounded window).
    #[default]
    Stream,
    /// An echo stream: the client sends one message every interval and keeps those not yet
    /// answered; after a reconnection it sends them again (an echo is idempotent, and the
    /// client drops an answer it already has). No server state, so no window and no epoch.
    Echo,
}

impl Workload {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Stream => "stream",
            Workload::Echo => "echo",
        }
    }
}

/// One resume run's parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spec {
    /// What runs across the break.
    #[serde(default)]
    pub workload: Workload,
    /// Messages in the stream.
    pub messages: u32,
    /// One message every this many ms.
    pub interval_ms: u32,
    /// Message size, bytes.
    pub size: u32,
    /// The offset after which the client breaks the connection.
    pub break_at: u64,
    /// How long the client stays away (for `window`: the window's length in time, doubled).
    pub outage_ms: u64,
    /// Backoff base, ms.
    pub backoff_base_ms: u64,
    /// Backoff cap, ms.
    pub backoff_max_ms: u64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The break kind.
    pub kind: Break,
    /// How long the client stayed away, ms.
    pub outage_ms: f64,
    /// Reconnection attempts (1: the first succeeded).
    pub attempts: u32,
    /// Time spent in backoff waits before the attempts, ms (random: the jitter).
    pub backoff_ms: f64,
    /// From the start of the reconnection attempt that succeeded to the first new message
    /// processed, ms: connection setup plus the resume's round trip (`None` when the resume
    /// was refused).
    pub resume_ms: Option<f64>,
    /// The server's answer to the resume: `ok`, `epoch changed`, `outside window`, `unknown`.
    pub answer: String,
    /// Whether that is the answer a correct server gives for this break.
    pub answer_as_expected: bool,
    /// Messages processed in all (each offset once).
    pub processed: u64,
    /// Messages produced while the client was away and sent from the replay window.
    pub replayed: u64,
    /// Offsets that never came although the resume was accepted (must be 0).
    pub lost: u64,
    /// Messages received twice and dropped by the client's dedup.
    pub duplicates: u64,
}

fn status_name(s: ResumeStatus) -> &'static str {
    match s {
        ResumeStatus::Ok => "ok",
        ResumeStatus::EpochChanged => "epoch changed",
        ResumeStatus::OutsideWindow => "outside window",
        ResumeStatus::Unknown => "unknown",
    }
}

/// A uniform draw in `[0, 1)` from the OS-seeded hasher (jitter needs no more).
fn unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wirelab_core::clock::now_ns());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads until the answer to a resume arrives.
async fn answer<Ch: Channel>(ch: &mut Ch, bound: Duration) -> Result<ResumeAnswer> {
    loop {
        let m = tokio::time::timeout(bound, ch.recv())
            .await
            .context("no answer to the resume")??;
        if codec::peek_header(&m)?.kind == Kind::ResumeAnswer {
            return Ok(ResumeAnswer::decode(&m)?);
        }
    }
}

/// One run of `kind` on variant `v`, against `server` (restarted there for `restart`).
pub async fn run_one(
    v: &Variant,
    server: &mut VariantServer,
    certs: &Certs,
    servers: &Servers,
    spec: &Spec,
    kind: Break,
    qlog_dir: Option<&std::path::Path>,
) -> Result<Outcome> {
    match spec.workload {
        Workload::Stream => {
            crate::with_client!(v.id, C => run_typed::<C>(v, server, certs, servers, spec, kind, qlog_dir).await)
        }
        Workload::Echo => {
            crate::with_client!(v.id, C => run_echo::<C>(v, server, certs, servers, spec, kind, qlog_dir).await)
        }
    }
}

/// The client config of one resumable stream on `v` (both workloads).
fn one_stream_client(
    v: &Variant,
    server: &VariantServer,
    qlog_dir: Option<&std::path::Path>,
) -> ClientConfig {
    let mut cfg = server.client();
    cfg.qlog_dir = qlog_dir.map(Into::into);
    cfg.mode = v.mode;
    cfg.streams = 1;
    cfg
}

#[allow(clippy::too_many_arguments)]
async fn run_typed<C: Client>(
    v: &Variant,
    server: &mut VariantServer,
    certs: &Certs,
    servers: &Servers,
    spec: &Spec,
    kind: Break,
    qlog_dir: Option<&std::path::Path>,
) -> Result<Outcome> {
    let bound = Duration::from_secs(10);
    let cfg = one_stream_client(v, server, qlog_dir);
    let plan = StreamRequest {
        count: spec.messages,
        size: spec.size,
        interval_ms: spec.interval_ms,
    };
    let token = (unit() * u64::MAX as f64) as u64 | 1;
    let mut dedup = Dedup::default();
    let (mut duplicates, mut lost) = (0u64, 0u64);

    // The stream, up to the break.
    let mut client = C::connect(&cfg).await.context("connecting")?;
    let mut ch = client.channels().pop().context("no channel")?;
    ch.send(
        Resume {
            token,
            epoch: 0,
            offset: 0,
            stream: plan,
        }
        .encode(ch.id(), 0, wirelab_core::clock::now_ns()),
    )
    .await?;
    let first = answer(&mut ch, bound).await?;
    if first.status != ResumeStatus::Ok {
        bail!("the new stream was refused: {}", status_name(first.status));
    }
    let epoch = first.epoch;
    while dedup.next() < spec.break_at {
        let m = tokio::time::timeout(bound, ch.recv())
            .await
            .context("the stream stalled before the break")??;
        let h = codec::peek_header(&m)?;
        match h.kind {
            Kind::StreamData => match dedup.accept(h.seq) {
                Seen::New => {}
                Seen::Duplicate => duplicates += 1,
                Seen::Gap { from } => lost += h.seq - from,
            },
            Kind::StreamEnd => bail!("the stream ended before the break"),
            _ => {}
        }
    }

    if kind == Break::Dark {
        return dark::<C>(client, ch, servers, spec, dedup, duplicates, lost, bound).await;
    }

    if kind == Break::Migrate {
        let mut client = client;
        let (outage_ms, back, back_ns) = dark_then_back(
            servers,
            &mut ch,
            spec,
            &mut dedup,
            &mut duplicates,
            &mut lost,
        )
        .await?;
        // The path has returned; now under the client's new address.
        let migrated = client
            .migrate()
            .await
            .context("changing the client's address")?;
        if migrated {
            let out = survived(kind, "migrated", outage_ms, &dedup, lost, duplicates);
            return held(client, ch, spec, dedup, out, back, back_ns, bound).await;
        }
        // The old address is gone and a TCP connection with it: a new one, and resume.
        drop(ch);
        drop(client);
        let state = Resumed {
            token,
            epoch,
            plan,
            dedup,
            lost,
            duplicates,
        };
        return reconnect::<C>(&cfg, spec, kind, outage_ms, state, bound).await;
    }

    // The break.
    drop(ch);
    drop(client);
    let outage = Duration::from_millis(spec.outage_ms);
    let away = Instant::now();
    if kind == Break::Restart {
        server
            .restart(v, certs, servers)
            .await
            .context("restarting the server")?;
    }
    tokio::time::sleep(outage.saturating_sub(away.elapsed())).await;
    let outage_ms = away.elapsed().as_secs_f64() * 1e3;
    let state = Resumed {
        token,
        epoch,
        plan,
        dedup,
        lost,
        duplicates,
    };
    reconnect::<C>(&cfg, spec, kind, outage_ms, state, bound).await
}

/// Connects again with jittered exponential backoff (at most 8 attempts), counting the
/// attempts and the time spent waiting; returns the client, its channel and when the attempt
/// that succeeded started. After an address change the client knows its connection is gone, so
/// the first attempt does not wait; otherwise every attempt waits (the server may be down).
async fn connect_again<C: Client>(
    cfg: &ClientConfig,
    spec: &Spec,
    kind: Break,
    attempts: &mut u32,
    backoff_ms: &mut f64,
) -> Result<(C, C::Channel, Instant)> {
    loop {
        let wait = if kind == Break::Migrate && *attempts == 0 {
            Duration::ZERO
        } else {
            resume::backoff(
                *attempts,
                Duration::from_millis(spec.backoff_base_ms),
                Duration::from_millis(spec.backoff_max_ms),
                unit(),
            )
        };
        tokio::time::sleep(wait).await;
        *backoff_ms += wait.as_secs_f64() * 1e3;
        *attempts += 1;
        let start = Instant::now();
        match C::connect(cfg).await {
            Ok(mut c) => match c.channels().pop() {
                Some(ch) => return Ok((c, ch, start)),
                None => bail!("no channel"),
            },
            Err(e) if *attempts < 8 => {
                tracing::debug!("resume: reconnect attempt {attempts}: {e}");
            }
            Err(e) => return Err(e).context("reconnecting"),
        }
    }
}

/// What a client carries across a break to resume its stream.
struct Resumed {
    token: u64,
    epoch: u64,
    plan: StreamRequest,
    dedup: Dedup,
    lost: u64,
    duplicates: u64,
}

/// Reconnects with jittered exponential backoff, then resumes. The resume time runs from the
/// start of the attempt that succeeded (the backoff's random waits are reported apart).
async fn reconnect<C: Client>(
    cfg: &ClientConfig,
    spec: &Spec,
    kind: Break,
    outage_ms: f64,
    state: Resumed,
    bound: Duration,
) -> Result<Outcome> {
    let Resumed {
        token,
        epoch,
        plan,
        mut dedup,
        lost,
        duplicates,
    } = state;
    let back_ns = wirelab_core::clock::now_ns();
    let mut attempts = 0u32;
    let mut backoff_ms = 0.0;
    let (client, mut ch, back) =
        connect_again::<C>(cfg, spec, kind, &mut attempts, &mut backoff_ms).await?;
    ch.send(
        Resume {
            token,
            epoch,
            offset: dedup.next(),
            stream: plan,
        }
        .encode(ch.id(), 1, wirelab_core::clock::now_ns()),
    )
    .await?;
    let a = answer(&mut ch, bound).await?;
    let mut out = Outcome {
        kind,
        outage_ms,
        attempts,
        backoff_ms,
        resume_ms: None,
        answer: status_name(a.status).into(),
        answer_as_expected: a.status == kind.expected(),
        processed: dedup.next(),
        replayed: 0,
        lost,
        duplicates,
    };
    if a.status == ResumeStatus::Ok {
        if let Some(late) = follow(&mut ch, &mut dedup, &mut out, back, back_ns, bound).await? {
            bail!(
                "the server stopped the resumed stream: {}",
                status_name(late.status)
            );
        }
        out.lost += u64::from(spec.messages).saturating_sub(dedup.next());
        out.processed = dedup.next();
    }
    let _ = tokio::time::timeout(bound, client.close()).await;
    Ok(out)
}

/// Reads the rest of a stream after a break: each offset through `dedup` (duplicates dropped
/// and counted, gaps counted as lost), the first new one's time since `back` as the resume
/// time, and those produced before `back_ns` as replayed. Returns at the end marker (`None`),
/// or with the server's answer if it ends the stream with one.
async fn follow<Ch: Channel>(
    ch: &mut Ch,
    dedup: &mut Dedup,
    out: &mut Outcome,
    back: Instant,
    back_ns: u64,
    bound: Duration,
) -> Result<Option<ResumeAnswer>> {
    loop {
        let m = tokio::time::timeout(bound, ch.recv())
            .await
            .context("the stream stalled")??;
        let h = codec::peek_header(&m)?;
        match h.kind {
            Kind::StreamData => {
                match dedup.accept(h.seq) {
                    Seen::New => {}
                    Seen::Duplicate => {
                        out.duplicates += 1;
                        continue;
                    }
                    Seen::Gap { from } => out.lost += h.seq - from,
                }
                if out.resume_ms.is_none() {
                    out.resume_ms = Some(back.elapsed().as_secs_f64() * 1e3);
                }
                // Produced before the client was back: it came from the window (or, when the
                // connection was kept, from the transport's queues).
                if h.sent_ns < back_ns {
                    out.replayed += 1;
                }
            }
            Kind::StreamEnd => return Ok(None),
            Kind::ResumeAnswer => return Ok(Some(ResumeAnswer::decode(&m)?)),
            _ => {}
        }
    }
}

/// The client's side of an echo stream across a break.
struct Echoes {
    /// Messages in the stream.
    n: u64,
    /// Whether each sequence number has been answered.
    answered: Vec<bool>,
    /// Sent and not answered yet: what a new connection must carry again.
    outstanding: std::collections::BTreeSet<u64>,
    /// The next sequence number to send.
    next: u64,
    /// Answered so far (each sequence number once).
    done: u64,
    /// Answers for a sequence number already answered (dropped).
    duplicates: u64,
    /// Message size.
    size: usize,
    /// The schedule: message `i` is due at `start + i * interval`.
    start: tokio::time::Instant,
    interval: Duration,
}

impl Echoes {
    fn new(spec: &Spec) -> Self {
        Self {
            n: u64::from(spec.messages),
            answered: vec![false; spec.messages as usize],
            outstanding: Default::default(),
            next: 0,
            done: 0,
            duplicates: 0,
            size: (spec.size as usize).max(codec::HEADER_LEN),
            start: tokio::time::Instant::now(),
            interval: Duration::from_millis(u64::from(spec.interval_ms)),
        }
    }

    fn message(&self, id: u32, seq: u64) -> Result<bytes::Bytes> {
        Ok(codec::encode(
            id,
            seq,
            wirelab_core::clock::now_ns(),
            Kind::Echo,
            self.size,
        )?)
    }

    /// Sends again everything outstanding (after a reconnection); returns how many.
    async fn resend<Ch: Channel>(&mut self, ch: &mut Ch) -> Result<u64> {
        let again: Vec<u64> = self.outstanding.iter().copied().collect();
        for &seq in &again {
            ch.send(self.message(ch.id(), seq)?).await?;
        }
        Ok(again.len() as u64)
    }

    /// Sends on schedule and reads answers until `stop` says so, `until` passes (then
    /// `Ok(false)`), or nothing is answered for `bound` while something is outstanding (an
    /// error: the stream stalled).
    async fn pump<Ch: Channel>(
        &mut self,
        ch: &mut Ch,
        until: Option<tokio::time::Instant>,
        bound: Duration,
        mut stop: impl FnMut(&Self) -> bool,
    ) -> Result<bool> {
        let mut last = tokio::time::Instant::now();
        loop {
            if stop(self) {
                return Ok(true);
            }
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                return Ok(false);
            }
            let due = self.start + self.interval * self.next as u32;
            let sending = self.next < self.n;
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                m = ch.recv() => {
                    let h = codec::peek_header(&m?)?;
                    if h.kind != Kind::Echo || h.seq >= self.n {
                        continue;
                    }
                    last = tokio::time::Instant::now();
                    let i = h.seq as usize;
                    if self.answered[i] {
                        self.duplicates += 1;
                    } else {
                        self.answered[i] = true;
                        self.outstanding.remove(&h.seq);
                        self.done += 1;
                    }
                }
                _ = tokio::time::sleep_until(due), if sending => {
                    let seq = self.next;
                    ch.send(self.message(ch.id(), seq)?).await?;
                    self.outstanding.insert(seq);
                    self.next += 1;
                }
                _ = tokio::time::sleep_until(until.unwrap_or(far)), if until.is_some() => {}
                _ = tokio::time::sleep_until(last + bound), if until.is_none() => {
                    bail!("the echo stream stalled: nothing answered for {} s", bound.as_secs());
                }
            }
        }
    }
}

/// One run of `kind` on an echo stream: the client keeps what is unanswered and sends it again
/// on a new connection (or, where the connection survives, waits for the transport).
#[allow(clippy::too_many_arguments)]
async fn run_echo<C: Client>(
    v: &Variant,
    server: &mut VariantServer,
    certs: &Certs,
    servers: &Servers,
    spec: &Spec,
    kind: Break,
    qlog_dir: Option<&std::path::Path>,
) -> Result<Outcome> {
    let bound = Duration::from_secs(10);
    let cfg = one_stream_client(v, server, qlog_dir);
    if kind == Break::Window {
        bail!("an echo stream has no server window: the window break is for streams");
    }
    let mut e = Echoes::new(spec);
    let mut client = C::connect(&cfg).await.context("connecting")?;
    let mut ch = client.channels().pop().context("no channel")?;
    e.start = tokio::time::Instant::now();
    let break_at = spec.break_at;
    e.pump(&mut ch, None, bound, |e| e.done >= break_at)
        .await
        .context("before the break")?;

    let mut out = Outcome {
        kind,
        outage_ms: 0.0,
        attempts: 0,
        backoff_ms: 0.0,
        resume_ms: None,
        answer: "held".into(),
        answer_as_expected: false,
        processed: 0,
        replayed: 0,
        lost: 0,
        duplicates: 0,
    };
    // Where the connection may survive: the path dark for the outage (sending and reading on
    // meanwhile), then back (under a new address for `migrate`).
    let mut held = false;
    if matches!(kind, Break::Dark | Break::Migrate) && go_dark(servers)? {
        let away = Instant::now();
        let until = tokio::time::Instant::now() + Duration::from_millis(spec.outage_ms);
        e.pump(&mut ch, Some(until), bound, |_| false).await?;
        restore(servers)?;
        out.outage_ms = away.elapsed().as_secs_f64() * 1e3;
    } else if kind == Break::Dark {
        bail!("the dark break needs the link emulator (--link)");
    }
    let back = Instant::now();
    match kind {
        Break::Dark => held = true,
        Break::Migrate => {
            held = client
                .migrate()
                .await
                .context("changing the client's address")?;
            out.answer = if held { "migrated" } else { "resent" }.into();
        }
        _ => {}
    }
    let back = if held {
        back
    } else {
        // The connection is gone (cut, a restarted server, or an address TCP cannot keep):
        // stay away for the outage (not after a migration), reconnect with backoff, send again
        // what is outstanding.
        drop(ch);
        drop(client);
        if matches!(kind, Break::Cut | Break::Restart) {
            let away = Instant::now();
            if kind == Break::Restart {
                server
                    .restart(v, certs, servers)
                    .await
                    .context("restarting the server")?;
            }
            let outage = Duration::from_millis(spec.outage_ms);
            tokio::time::sleep(outage.saturating_sub(away.elapsed())).await;
            out.outage_ms = away.elapsed().as_secs_f64() * 1e3;
        }
        let (c, new_ch, attempt) =
            connect_again::<C>(&cfg, spec, kind, &mut out.attempts, &mut out.backoff_ms).await?;
        client = c;
        ch = new_ch;
        out.replayed = e.resend(&mut ch).await?;
        out.answer = "resent".into();
        attempt
    };
    let before = e.done;
    e.pump(&mut ch, None, bound, |e| e.done > before)
        .await
        .context("after the break")?;
    out.resume_ms = Some(back.elapsed().as_secs_f64() * 1e3);
    let n = e.n;
    let ended = e.pump(&mut ch, None, bound, |e| e.done >= n).await;
    if let Err(err) = ended {
        tracing::debug!("echo resume: {err:#}");
    }
    out.processed = e.done;
    out.lost = e.n - e.done;
    out.duplicates = e.duplicates;
    out.answer_as_expected = out.lost == 0;
    let _ = tokio::time::timeout(bound, client.close()).await;
    Ok(out)
}

/// Darkens the link (every packet lost, both ways) for the outage, reading whatever the
/// transport still delivers meanwhile so that the reader never holds the stream back, then
/// [`restore`]s it; without the link emulator there is no outage. Returns the outage, ms, and
/// when the path came back (on both clocks).
async fn dark_then_back<Ch: Channel>(
    servers: &Servers,
    ch: &mut Ch,
    spec: &Spec,
    dedup: &mut Dedup,
    duplicates: &mut u64,
    lost: &mut u64,
) -> Result<(f64, Instant, u64)> {
    let mut outage_ms = 0.0;
    if go_dark(servers)? {
        let away = Instant::now();
        let mut early = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.outage_ms);
        while let Ok(m) = tokio::time::timeout_at(deadline, ch.recv()).await {
            let h = codec::peek_header(&m?)?;
            if h.kind == Kind::StreamData {
                match dedup.accept(h.seq) {
                    Seen::New => early += 1,
                    Seen::Duplicate => *duplicates += 1,
                    Seen::Gap { from } => *lost += h.seq - from,
                }
            }
        }
        outage_ms = away.elapsed().as_secs_f64() * 1e3;
        tracing::debug!("{early} messages arrived while the path was dark");
    }
    restore(servers)?;
    Ok((outage_ms, Instant::now(), wirelab_core::clock::now_ns()))
}

/// The outcome so far of a break the connection survived (`dark`, `migrate` on QUIC): no
/// reconnection, nothing replayed; [`held`] follows the stream to its end.
fn survived(
    kind: Break,
    answer: &str,
    outage_ms: f64,
    dedup: &Dedup,
    lost: u64,
    duplicates: u64,
) -> Outcome {
    Outcome {
        kind,
        outage_ms,
        attempts: 0,
        backoff_ms: 0.0,
        resume_ms: None,
        answer: answer.into(),
        answer_as_expected: true,
        processed: dedup.next(),
        replayed: 0,
        lost,
        duplicates,
    }
}

/// Switches the link (or the lab's router) to 100% loss both ways; `false` without one.
fn go_dark(servers: &Servers) -> Result<bool> {
    let Some((link, link_spec)) = servers.link.as_ref() else {
        return Ok(false);
    };
    let mut dark = link_spec.config();
    dark.up.loss = wirelab_link::LossModel::Bernoulli { p: 1.0 };
    dark.down.loss = wirelab_link::LossModel::Bernoulli { p: 1.0 };
    link.configure(dark).context("darkening the link")?;
    Ok(true)
}

/// Brings the link back to its settings (nothing without the link emulator).
fn restore(servers: &Servers) -> Result<()> {
    if let Some((link, link_spec)) = servers.link.as_ref() {
        link.configure(link_spec.config())
            .context("restoring the link")?;
    }
    Ok(())
}

/// The `dark` break: the path loses everything for the outage, the connection is kept.
#[allow(clippy::too_many_arguments)]
async fn dark<C: Client>(
    client: C,
    mut ch: C::Channel,
    servers: &Servers,
    spec: &Spec,
    mut dedup: Dedup,
    mut duplicates: u64,
    mut lost: u64,
    bound: Duration,
) -> Result<Outcome> {
    if servers.link.is_none() {
        bail!("the dark break needs the link emulator (--link)");
    }
    let (outage_ms, back, back_ns) = dark_then_back(
        servers,
        &mut ch,
        spec,
        &mut dedup,
        &mut duplicates,
        &mut lost,
    )
    .await?;
    let out = survived(Break::Dark, "held", outage_ms, &dedup, lost, duplicates);
    held(client, ch, spec, dedup, out, back, back_ns, bound).await
}

/// Follows a stream whose connection survived the break (`dark`, `migrate` on QUIC) to its end.
#[allow(clippy::too_many_arguments)]
async fn held<C: Client>(
    client: C,
    mut ch: C::Channel,
    spec: &Spec,
    mut dedup: Dedup,
    mut out: Outcome,
    back: Instant,
    back_ns: u64,
    bound: Duration,
) -> Result<Outcome> {
    let late = follow(&mut ch, &mut dedup, &mut out, back, back_ns, bound)
        .await
        .context("after the path's return")?;
    if let Some(late) = late {
        // The transport held the connection, but its queue of unsent messages fell behind
        // the server's window while the path was dark: the server says so (explicitly, not
        // as a gap), and the stream ends here.
        out.answer = format!("{}, then {}", out.answer, status_name(late.status));
        out.processed = dedup.next();
        out.answer_as_expected = out.lost == 0 && late.status == ResumeStatus::OutsideWindow;
        let _ = tokio::time::timeout(bound, client.close()).await;
        return Ok(out);
    }
    out.lost += u64::from(spec.messages).saturating_sub(dedup.next());
    out.processed = dedup.next();
    out.answer_as_expected = out.lost == 0;
    let _ = tokio::time::timeout(bound, client.close()).await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_break_has_its_correct_answer() {
        assert_eq!(Break::Cut.expected(), ResumeStatus::Ok);
        assert_eq!(Break::Restart.expected(), ResumeStatus::EpochChanged);
        assert_eq!(Break::Window.expected(), ResumeStatus::OutsideWindow);
        let names: Vec<_> = Break::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(names, ["cut", "restart", "window", "dark", "migrate"]);
        for _ in 0..100 {
            let u = unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
