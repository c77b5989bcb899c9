//! `sse`: Server-Sent Events (WHATWG HTML §9.2) with `POST`s, the server-push baseline.
//!
//! SSE is one-way: a `text/event-stream` response the server keeps writing to. The lab's
//! service needs both directions, so each logical stream uses two kinds of request:
//!
//! - `GET /events?session=S&stream=N` (header `Accept: text/event-stream`): the server's answers
//!   for logical stream N of session S, one event per service message:
//!   `id: <offset>\ndata: <base64 of the message>\n\n`. The id is the message's offset in that
//!   stream (0, 1, 2, ...), so a reconnecting client's `Last-Event-ID` names exactly what it
//!   has. Base64 because `data:` must be UTF-8 without line breaks; see the `event` module.
//! - `POST /send?session=S&stream=N`: one or more service messages, concatenated (a client
//!   batches whatever is queued, at most [`wirelab_core::Limits::max_message`] bytes). `202`
//!   once they are accepted; their echoes, and the server streams they ask for (with their end
//!   marker), arrive as events on that stream's event stream.
//!
//! The session id is a random 64-bit number the client picks, so that the events of two
//! clients' stream 0 do not mix.
//!
//! # HTTP/1.1 and HTTP/2, mapped onto TLS
//!
//! The descriptor's TLS policy selects the HTTP version, so both are compared without a new
//! [`wirelab_core::Mode`] (whose two values mean request/response and duplex bodies, neither of
//! which describes SSE):
//!
//! - cleartext (the default, label `sse-h1`): HTTP/1.1. An event stream occupies its connection,
//!   so each logical stream has its own event-stream connection, and the `POST`s go over a small
//!   keep-alive pool beside them: one connection in `shared`, `pool_size` (6) in `pool`.
//! - TLS (`--tls`, label `sse-h2`): HTTP/2, negotiated by ALPN `h2`. Every event stream and every
//!   `POST` of the session share one connection (`shared`), or one connection per logical stream
//!   (`pool`), as browsers do over HTTP/2.
//!
//! # Server behaviour
//!
//! - Each event stream starts with `retry:` ([`SseSettings::retry`]); while idle it carries a
//!   comment `: ka` every [`wirelab_core::Timeouts::ping_interval`].
//! - A `GET` with `Last-Event-ID: L` resumes after offset L from a replay buffer bounded per
//!   logical stream ([`SseSettings`]): exactly the events after L, then new ones. When the buffer
//!   no longer holds event L+1, or the session is unknown (expired, or another server process),
//!   the answer is `204 No Content`, which tells an SSE client to stop rather than reconnect.
//! - Bounds: a `POST` body over the message limit gets `413`, one that is not a sequence of valid
//!   service messages `400` (and none of its messages is queued), a `POST` for a stream with no
//!   event stream `404`. An event stream a client does not read stops the server reading that
//!   stream's `POST`s (the buffer fills, `POST` answers wait): backpressure, not memory. A
//!   logical stream without an event stream for the idle timeout is forgotten (checked
//!   whenever an event stream opens).
//! - Shutdown: the listener stops accepting; event streams keep sending what is queued and what
//!   `POST`s already received produce, until quiet for [`wirelab_core::service::DRAIN_QUIET`]
//!   (at most [`wirelab_core::service::DRAIN_MAX`]); then they end and the connections close
//!   (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
//!
//! # Client behaviour
//!
//! The event stream is parsed by the `sse-stream` crate; this crate only bounds line length
//! first (a line over the limit ends the stream with an error). When an event stream ends or
//! fails, the client waits the server's `retry:` delay and reconnects with `Last-Event-ID`. A
//! `204`, a refused reconnection, or three reconnections in a row that bring nothing end the
//! channel: `recv` returns [`wirelab_core::Error::ConnectionClosed`], which is also what a
//! client sees when the server shuts down ([`wirelab_core::Goodbye::EventStreamEnd`]).
//! `recv` is cancel-safe.
//!
//! ```no_run
//! # async fn demo() -> wirelab_core::Result<()> {
//! use wirelab_core::{Channel, Client, ClientConfig};
//! let mut client = wirelab_sse::SseClient::connect(&ClientConfig::new("127.0.0.1:8443".parse().unwrap())).await?;
//! let mut ch = client.channels().remove(0);
//! let msg = wirelab_core::codec::encode(0, 0, 0, wirelab_core::codec::Kind::Echo, 64)?;
//! assert_eq!(ch.echo(msg.clone()).await?, msg);
//! # Ok(()) }
//! ```

mod client;
mod event;
mod server;

use std::time::Duration;

pub use client::{SseChannel, SseClient};
pub use server::SseServer;

/// The random id a client gives its session, so logical streams of different clients stay apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A fresh random id (std's randomly seeded hasher; no RNG dependency needed for this).
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(wirelab_core::clock::now_ns());
        Self(h.finish())
    }
}

/// Server settings specific to SSE; the rest come from [`wirelab_core::ServerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseSettings {
    /// The reconnection delay sent as `retry:`. Default 500 ms (browsers default to about 3 s;
    /// shorter, so a lab client that lost its stream measures the resume, not the wait).
    pub retry: Duration,
    /// Events kept per logical stream for `Last-Event-ID` resume. Default 256.
    pub replay_events: usize,
    /// Bytes of encoded events kept per logical stream. Default 1 MiB. Events not yet written
    /// to the connection are never dropped: a full buffer makes `POST`s wait instead.
    pub replay_bytes: usize,
}

impl Default for SseSettings {
    fn default() -> Self {
        Self {
            retry: Duration::from_millis(500),
            replay_events: 256,
            replay_bytes: 1 << 20,
        }
    }
}

/// The `sse` transport: Server-Sent Events for answers, `POST`s for requests.
#[derive(Debug, Clone, Copy)]
pub struct Sse;

impl wirelab_core::Transport for Sse {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("sse"),
            summary: "Server-Sent Events + POSTs: HTTP/1.1 cleartext, HTTP/2 over TLS",
            alpn: tls::ALPN_H2,
            tls: TlsPolicy::Optional { by_default: false },
            modes: &[Mode::Duplex],
            sharings: &[Sharing::Pool],
            zero_rtt: false,
            datagrams: false,
            floor: Some(TransportId::new("tcp")),
            labels: ["sse-h1", "sse-h2"],
            schemes: ["http://", "https://"],
            path: "/events",
            goodbye: Goodbye::EventStreamEnd,
        }
    };
    type Client = SseClient;
    type Server = SseServer;
}
