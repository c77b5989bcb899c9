//! The wire format, pure: how a service message becomes an event and back, the query string of
//! both routes, and the line-length bound a client applies before the parser buffers a line.
//!
//! An event is `id: <offset>\ndata: <base64>\n\n` (WHATWG HTML §9.2.6, "Interpreting an event
//! stream"). Base64 (RFC 4648 §4, with padding) because `data:` must be UTF-8 without CR or LF
//! and a service message is arbitrary bytes: base64 is lossless, needs no escaping rules of its
//! own, costs 4/3 of the size, and decodes at memory speed. Percent- or JSON-escaping would cost
//! up to 3x or 6x on the binary padding the service sends.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};

use crate::SessionId;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One event: the message `msg` at offset `id` of its logical stream.
pub(crate) fn encode(id: u64, msg: &[u8]) -> Bytes {
    let b64_len = base64::encoded_len(msg.len(), true).unwrap_or(usize::MAX);
    let mut out = BytesMut::with_capacity(b64_len.saturating_add(40));
    out.put_slice(format!("id: {id}\ndata: ").as_bytes());
    let start = out.len();
    out.resize(start + b64_len, 0);
    // The buffer has exactly the encoded length, so this cannot fail; a short event would be
    // refused by the client's decoder rather than panic here.
    let n = B64.encode_slice(msg, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The first bytes of every event stream: the reconnection delay the client should use.
pub(crate) fn retry(ms: u128) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// A comment line that keeps an idle event stream (and every proxy on the way) alive.
pub(crate) const KEEP_ALIVE: &[u8] = b": ka\n\n";

/// Decodes an event's `data`, refusing anything over `max` bytes before decoding it.
pub(crate) fn decode(data: &str, max: usize) -> Result<Bytes, String> {
    if data.len() > max_data_len(max) {
        return Err(format!(
            "event data of {} characters is over the limit",
            data.len()
        ));
    }
    B64.decode(data)
        .map(Bytes::from)
        .map_err(|e| format!("event data is not base64: {e}"))
}

/// The longest `data:` value a message of `max` bytes encodes to.
pub(crate) fn max_data_len(max: usize) -> usize {
    base64::encoded_len(max, true).unwrap_or(usize::MAX)
}

/// The longest line a client accepts in an event stream carrying messages of up to `max`
/// bytes: the data line and its field name.
pub(crate) fn max_line(max: usize) -> usize {
    max_data_len(max).saturating_add(16)
}

/// `session=<hex>&stream=<n>`, the query of both routes.
pub(crate) fn query(session: SessionId, stream: u32) -> String {
    format!("session={:016x}&stream={stream}", session.0)
}

/// Parses [`query`]'s output.
pub(crate) fn parse_query(q: &str) -> Result<(SessionId, u32), &'static str> {
    let (mut session, mut stream) = (None, None);
    for pair in q.split('&') {
        match pair.split_once('=') {
            Some(("session", v)) if v.len() == 16 => {
                session = u64::from_str_radix(v, 16).ok().map(SessionId);
            }
            Some(("stream", v)) => stream = v.parse().ok(),
            _ => {}
        }
    }
    match (session, stream) {
        (Some(s), Some(n)) => Ok((s, n)),
        _ => Err("the query must be session=<16 hex digits>&stream=<number>"),
    }
}

/// Tracks the length of the current line across body chunks, so a client can refuse a line
/// over the limit before the parser has buffered all of it.
#[derive(Debug)]
pub(crate) struct LineGuard {
    max: usize,
    current: usize,
}

impl LineGuard {
    pub(crate) fn new(max: usize) -> Self {
        Self { max, current: 0 }
    }

    /// Feeds one chunk; fails when a line grows over the limit.
    pub(crate) fn check(&mut self, chunk: &[u8]) -> Result<(), usize> {
        match chunk.iter().rposition(|&b| b == b'\n' || b == b'\r') {
            Some(last) => {
                // Lines wholly inside the chunk.
                let mut run = self.current;
                for &b in &chunk[..last] {
                    if b == b'\n' || b == b'\r' {
                        run = 0;
                    } else {
                        run += 1;
                        if run > self.max {
                            return Err(run);
                        }
                    }
                }
                self.current = chunk.len() - last - 1;
            }
            None => self.current += chunk.len(),
        }
        if self.current > self.max {
            Err(self.current)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_every_byte() {
        let msg: Vec<u8> = (0..=255u8).collect();
        let ev = encode(7, &msg);
        let text = std::str::from_utf8(&ev).unwrap();
        let data = text
            .strip_prefix("id: 7\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap();
        assert!(!data.contains(['\n', '\r']));
        assert_eq!(decode(data, 256).unwrap(), msg);
        assert!(decode(data, 100).is_err(), "over the limit");
        assert!(decode("not base64!", 256).is_err());
    }

    #[test]
    fn queries_round_trip_and_bad_ones_are_refused() {
        let q = query(SessionId(0xabc), 3);
        assert_eq!(parse_query(&q), Ok((SessionId(0xabc), 3)));
        for bad in [
            "",
            "session=12&stream=1",
            "stream=1",
            "session=000000000000000g&stream=1",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn line_guard_counts_across_chunks() {
        let mut g = LineGuard::new(10);
        assert!(g.check(b"data: ab").is_ok());
        assert!(g.check(b"c\n\nid: 1").is_ok());
        assert!(g.check(b"23456789").is_err(), "12 characters in one line");
        let mut g = LineGuard::new(4);
        assert!(
            g.check(b"123456\n").is_err(),
            "a long line inside one chunk"
        );
    }
}
