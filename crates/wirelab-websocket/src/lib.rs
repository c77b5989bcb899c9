//! RFC 6455 session logic shared by the WebSocket transports (`ws` over an HTTP/1.1 Upgrade,
//! `h2ws` over HTTP/2 extended CONNECT). Not a transport: the transports use it, never each
//! other. Framing is tokio-tungstenite's; this crate adds what the lab requires on top:
//!
//! - [`server::session`]: echoes and server streams, keepalive pings, an idle timeout, and close
//!   codes that tell the truth (1001 shutdown/idle, 1002 protocol error, 1003 unsupported data,
//!   1007 invalid UTF-8, 1009 too big); after the close handshake it ends its sending side
//!   (FIN, or END_STREAM on HTTP/2) and reads to the end;
//! - [`client::open`]: a [`wirelab_core::mux`] connection over a WebSocket, reporting 1006 when
//!   the transport dies without a close frame and ending its sending side after its close frame;
//! - [`gate`]: backpressure under tungstenite, so a peer that does not read (and floods pings
//!   or messages) is not read from either;
//! - [`config`]: tungstenite's limits from the lab's.

pub mod client;
pub mod gate;
pub mod server;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wirelab_core::Limits;

/// tungstenite's config from the lab's limits: frame and message caps, a small read buffer, and a
/// write buffer that starts writing at [`Limits::write_queue`] bytes. Its hard cap stays above
/// one whole message plus that much (tungstenite fails a write over the cap); what keeps a
/// server's write buffer small is [`gate::Gated`] and the session's byte-bounded queue.
///
/// tungstenite's own read buffer is [`gate::TUNGSTENITE_READ`] bytes: it zero-fills the free
/// part of it before every read from the transport (`FrameCodec::read_in`), which at the
/// [`Limits::read_buffer`] size (8 KiB) cost about 7,400 instructions per echo, 38% of the ws
/// client's (counted with `scripts/instructions.sh`). Reads of [`Limits::read_buffer`] bytes
/// are made by [`gate::Gated`] underneath, so wrap the transport in it (servers and clients do).
pub fn config(l: &Limits) -> WebSocketConfig {
    let write = l.write_queue.max(1);
    WebSocketConfig::default()
        .read_buffer_size(gate::TUNGSTENITE_READ)
        .write_buffer_size(write)
        .max_write_buffer_size(l.max_message.saturating_add(write).saturating_mul(2))
        .max_message_size(Some(l.max_message))
        .max_frame_size(Some(l.max_frame))
}
