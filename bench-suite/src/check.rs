//! A client workload, generic over the transport: closed-loop echo on K logical streams and a
//! server-stream check. Used by `wirelab client` and `wirelab run`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::sync::Barrier;
use wirelab_core::codec::{self, Kind, StreamRequest};
use wirelab_core::{clock, Channel, Client, ClientConfig};

use crate::stats;

/// What the client does.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    /// Message size in bytes.
    pub size: usize,
    /// Measured echoes per logical stream.
    pub count: u64,
    /// Unmeasured echoes per logical stream before measuring.
    pub warmup: u64,
    /// A server stream to request on stream 0 after the echoes, and check.
    pub stream: Option<StreamRequest>,
}

/// What the client saw.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Time to open the session (connections and handshakes).
    pub setup: Duration,
    /// Echo round-trip times, ns.
    pub rtt: Histogram<u64>,
    /// Wall time of the measured echo phase.
    pub elapsed: Duration,
    /// Server stream: messages received and one-way delays (ns, same-host clock).
    pub stream: Option<(u64, Histogram<u64>)>,
    /// Whether the session resumed with 0-RTT early data (see [`Client::early_data`]).
    pub early_data: Option<bool>,
}

impl Outcome {
    pub(crate) fn messages_per_sec(&self) -> f64 {
        self.rtt.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn echo_loop<C: Channel>(
    mut ch: C,
    work: Arc<Work>,
    barrier: Arc<Barrier>,
) -> Result<(C, Histogram<u64>)> {
    let id = ch.id();
    let mut hist = stats::histogram();
    for seq in 0..work.warmup + work.count {
        if seq == work.warmup {
            barrier.wait().await;
        }
        let t0 = clock::now_ns();
        let msg = codec::encode(id, seq, t0, Kind::Echo, work.size)?;
        let back = ch
            .echo(msg.clone())
            .await
            .with_context(|| format!("echo {seq} on stream {id}"))?;
        let rtt = clock::now_ns().saturating_sub(t0);
        if back != msg {
            bail!(
                "stream {id}: echo {seq} came back different ({} bytes)",
                back.len()
            );
        }
        if seq >= work.warmup {
            hist.record(rtt.max(1))?;
        }
    }
    if work.count == 0 {
        barrier.wait().await;
    }
    Ok((ch, hist))
}

/// Opens a session, runs the echoes on every stream at once, checks a server stream, closes.
///
/// With 0-RTT asked for, a priming session (one echo) runs first so the TLS config holds a
/// session ticket; the measured session then resumes with early data.
pub(crate) async fn run<C: Client>(cfg: &ClientConfig, work: &Work) -> Result<Outcome> {
    if cfg.zero_rtt {
        let mut prime = cfg.clone();
        prime.streams = 1;
        prime.zero_rtt = false;
        let mut c = C::connect(&prime)
            .await
            .context("priming session for 0-RTT")?;
        let mut chans = c.channels();
        if let Some(ch) = chans.first_mut() {
            let msg = codec::encode(0, 0, clock::now_ns(), Kind::Echo, codec::HEADER_LEN)?;
            ch.echo(msg).await.context("priming echo")?;
        }
        drop(chans);
        c.close().await.context("closing the priming session")?;
    }
    let t0 = Instant::now();
    let mut client = C::connect(cfg).await.context("connecting")?;
    let setup = t0.elapsed();
    let channels = client.channels();
    let work = Arc::new(work.clone());
    // All streams and this task meet before measuring, so `elapsed` covers only measured echoes.
    let barrier = Arc::new(Barrier::new(channels.len() + 1));
    let tasks: Vec<_> = channels
        .into_iter()
        .map(|ch| tokio::spawn(echo_loop(ch, work.clone(), barrier.clone())))
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut rtt = stats::histogram();
    let mut chans = Vec::new();
    for t in tasks {
        let (ch, h) = t.await.context("echo task panicked")??;
        rtt.add(&h)?;
        chans.push(ch);
    }
    let elapsed = start.elapsed();
    let stream = match (work.stream, chans.first_mut()) {
        (Some(req), Some(ch)) => Some(check_stream(ch, req).await?),
        _ => None,
    };
    drop(chans);
    let early_data = client.early_data().await;
    if cfg.zero_rtt && early_data != Some(true) {
        bail!("0-RTT was asked for but not used (early data: {early_data:?})");
    }
    client.close().await.context("closing the session")?;
    Ok(Outcome {
        setup,
        rtt,
        elapsed,
        stream,
        early_data,
    })
}

async fn check_stream<C: Channel>(ch: &mut C, req: StreamRequest) -> Result<(u64, Histogram<u64>)> {
    let got = ch.server_stream(req).await.context("server stream")?;
    if got.len() != req.count as usize {
        bail!(
            "server stream: {} of {} messages arrived",
            got.len(),
            req.count
        );
    }
    let mut owd = stats::histogram();
    for (i, r) in got.iter().enumerate() {
        let h = codec::decode(&r.msg, usize::MAX)?;
        if h.seq != i as u64 || h.kind != Kind::StreamData || h.len != req.size {
            bail!("server stream: message {i} is out of order or malformed: {h:?}");
        }
        if h.stream != ch.id() {
            bail!(
                "server stream: message {i} is stamped for stream {}",
                h.stream
            );
        }
        owd.record(r.at_ns.saturating_sub(h.sent_ns).max(1))?;
    }
    Ok((got.len() as u64, owd))
}
