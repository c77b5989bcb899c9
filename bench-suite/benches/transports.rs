//! `cargo bench`: every transport side by side in criterion groups, one group per workload.
//!
//! Groups: `echo_64B`, `echo_1KiB`, `echo_64KiB` (one closed-loop echo on one stream of a
//! session opened beforehand), `stream_1KiB` (a server stream of 1000 × 1 KiB), `setup` (a new
//! session to its first echo; quic and h3 also with 0-RTT), `datagram_64B` (one unreliable
//! datagram echo, sent again after 1 s without its echo; transports with datagrams: wt). Each
//! function is a transport
//! variant (`tcp`, `h2-rr`, `h3-duplex`, ...). Filter like any criterion bench:
//! `cargo bench -p wirelab -- echo_64B/` or `cargo bench -p wirelab -- quic`.
//!
//! Servers and clients share one runtime here; `wirelab run` separates them and reports
//! percentiles, repetitions and costs. Criterion reports means with its own intervals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use tokio::runtime::Runtime;
use wirelab::transports::{self, Variant};
use wirelab::{with_client, workload};
use wirelab_core::codec::{self, Kind, StreamRequest};
use wirelab_core::tls::{self, Identity, Trust};
use wirelab_core::{clock, CancellationToken, Channel, Client, ClientConfig, ServerConfig};

struct Target {
    variant: Variant,
    cfg: ClientConfig,
}

fn start_all(rt: &Runtime, shutdown: &CancellationToken) -> Vec<Target> {
    let ident = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("certificate");
    let trust = Trust::Certificates(vec![ident.certificate()]);
    transports::variants(&transports::ids(), false)
        .into_iter()
        .map(|v| {
            let mut scfg = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
            let alpn = [transports::alpn(v.id)];
            if v.tls {
                scfg.tls = Some(ident.server_config(&alpn).expect("server TLS"));
            }
            let (addr, _task) = rt
                .block_on(transports::start_server(
                    v.id,
                    scfg,
                    shutdown.clone(),
                    rt.handle(),
                ))
                .expect("server starts");
            let mut cfg = ClientConfig::new(addr);
            cfg.mode = v.mode;
            if v.tls {
                cfg.tls = Some(tls::client_config(&trust, &alpn).expect("client TLS"));
            }
            Target { variant: v, cfg }
        })
        .collect()
}

/// A session of one stream, opened before measuring; its channel shared with the iterations.
type Shared<C> = Arc<tokio::sync::Mutex<<C as Client>::Channel>>;

fn open<C: Client>(rt: &Runtime, t: &Target) -> (C, Shared<C>) {
    let mut client = rt.block_on(C::connect(&t.cfg)).expect("connect");
    let ch = client.channels().pop().expect("one channel");
    (client, Arc::new(tokio::sync::Mutex::new(ch)))
}

fn close<C: Client>(rt: &Runtime, client: C, ch: Shared<C>) {
    drop(ch);
    rt.block_on(client.close()).expect("close");
}

fn echo<C: Client>(g: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, t: &Target, size: usize) {
    let (client, ch) = open::<C>(rt, t);
    g.bench_function(t.variant.slug(), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ch = ch.clone();
            async move {
                let mut ch = ch.lock().await;
                let id = ch.id();
                let t0 = Instant::now();
                for seq in 0..iters {
                    let msg = codec::encode(id, seq, clock::now_ns(), Kind::Echo, size).unwrap();
                    ch.echo(msg).await.expect("echo");
                }
                t0.elapsed()
            }
        })
    });
    close(rt, client, ch);
}

fn stream<C: Client>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    t: &Target,
    req: StreamRequest,
) {
    let (client, ch) = open::<C>(rt, t);
    g.bench_function(t.variant.slug(), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ch = ch.clone();
            async move {
                let mut ch = ch.lock().await;
                let t0 = Instant::now();
                for _ in 0..iters {
                    let got = ch.server_stream(req).await.expect("stream");
                    assert_eq!(got.len(), req.count as usize);
                }
                t0.elapsed()
            }
        })
    });
    close(rt, client, ch);
}

fn setup<C: Client>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    t: &Target,
    zero_rtt: bool,
) {
    let mut cfg = t.cfg.clone();
    let mut name = t.variant.slug();
    if zero_rtt {
        cfg.zero_rtt = true;
        name.push_str("-0rtt");
    }
    g.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let cfg = cfg.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: a fresh ticket for every 0-RTT session (see workload::setup_many).
                    if cfg.zero_rtt {
                        let p = workload::prime_open::<C>(&cfg)
                            .await
                            .expect("priming session");
                        tokio::spawn(p.close());
                    }
                    let (took, client) = workload::setup_open::<C>(&cfg, 64).await.expect("setup");
                    total += took;
                    // Closes (QUIC draining included) finish in the background, untimed.
                    tokio::spawn(client.close());
                }
                total
            }
        })
    });
}

/// One 64-byte datagram echo per iteration on a session opened beforehand (wt). A datagram
/// whose echo has not come within 1 s is sent again, so a loss costs time instead of hanging.
fn datagram(g: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, t: &Target) {
    let client = rt
        .block_on(wirelab_wt::WtClient::connect(&t.cfg))
        .expect("session");
    let d = client.datagrams().expect("a session has datagrams");
    let m = codec::encode(0, 0, 0, Kind::Echo, 64).expect("message");
    g.bench_function(t.variant.slug(), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    loop {
                        d.send(&m).expect("datagram sent");
                        match tokio::time::timeout(Duration::from_secs(1), d.recv()).await {
                            Ok(r) => {
                                r.expect("datagram echo");
                                break;
                            }
                            Err(_) => continue,
                        }
                    }
                }
                start.elapsed()
            })
        })
    });
    rt.block_on(client.close()).expect("close");
}

fn quick(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let shutdown = CancellationToken::new();
    let targets = start_all(&rt, &shutdown);
    for (group, size) in [
        ("echo_64B", 64),
        ("echo_1KiB", 1024),
        ("echo_64KiB", 64 << 10),
    ] {
        let mut g = c.benchmark_group(group);
        quick(&mut g);
        g.throughput(Throughput::Elements(1));
        for t in &targets {
            with_client!(t.variant.id, C => echo::<C>(&mut g, &rt, t, size));
        }
        g.finish();
    }
    let req = StreamRequest {
        count: 1000,
        size: 1024,
        interval_ms: 0,
    };
    let mut g = c.benchmark_group("stream_1KiB");
    quick(&mut g);
    g.throughput(Throughput::Bytes(u64::from(req.count * req.size)));
    for t in &targets {
        with_client!(t.variant.id, C => stream::<C>(&mut g, &rt, t, req));
    }
    g.finish();
    let mut g = c.benchmark_group("datagram_64B");
    quick(&mut g);
    g.throughput(Throughput::Elements(1));
    for t in &targets {
        if t.variant.id == <wirelab_wt::Wt as wirelab_core::Transport>::DESCRIPTOR.id {
            datagram(&mut g, &rt, t);
        }
    }
    g.finish();
    let mut g = c.benchmark_group("setup");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for t in &targets {
        with_client!(t.variant.id, C => setup::<C>(&mut g, &rt, t, false));
        if transports::has_zero_rtt(t.variant.id) {
            with_client!(t.variant.id, C => setup::<C>(&mut g, &rt, t, true));
        }
    }
    g.finish();
    shutdown.cancel();
}

criterion_group!(transport_benches, benches);
criterion_main!(transport_benches);
