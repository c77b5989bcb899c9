//! The message codec shared by every transport (sans-IO, no clock, no sockets).
//!
//! Every service message starts with a fixed 32-byte header written by its sender; the rest is
//! padding up to the requested size, so the smallest message is [`HEADER_LEN`] bytes.
//!
//! ```text
//!  0       2   3   4               8                              16
//! +-------+---+---+---------------+-------------------------------+
//! | "WL"  |ver|knd| stream id u32 |        sequence u64           |
//! +-------+---+---+---------------+-------------------------------+
//! |      send time u64 (ns)       | total length  |   reserved    |
//! +-------------------------------+---------------+---------------+
//! 16                              24              28              32
//! ```
//! All integers are big-endian. The total length covers header and padding, which lets a
//! receiver split a byte stream of concatenated messages (the HTTP/1.1 streaming body) and lets
//! every decoder reject a message whose transport framing disagrees with its own header.

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the fixed header, and so the smallest valid message.
pub const HEADER_LEN: usize = 32;
/// The two bytes every message starts with.
pub const MAGIC: [u8; 2] = *b"WL";
/// The only header version this codec reads and writes.
pub const VERSION: u8 = 1;
/// Size of a [`StreamRequest`] message: the header plus three `u32` fields.
pub const STREAM_REQUEST_LEN: usize = HEADER_LEN + 12;
/// Size of a [`Subscribe`] message: the header, the topic, the policy and the queue bound.
pub const SUBSCRIBE_LEN: usize = HEADER_LEN + 12;
/// Size of a [`Resume`] message: the header, token, epoch and offset, and the stream's shape.
pub const RESUME_LEN: usize = HEADER_LEN + 24 + 12;
/// Size of a [`ResumeAnswer`] message: the header, epoch, first offset, oldest offset, status.
pub const RESUME_ANSWER_LEN: usize = HEADER_LEN + 24 + 4;
/// Smallest [`Kind::Publish`] message: the header and the topic.
pub const PUBLISH_MIN_LEN: usize = HEADER_LEN + 4;

/// What a message asks for or carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client to server: return these exact bytes.
    Echo = 0,
    /// Client to server: send a stream of messages (payload: [`StreamRequest`]).
    StreamRequest = 1,
    /// Server to client: one message of a server stream, stamped with the server's clock.
    StreamData = 2,
    /// Server to client: the server stream on this logical stream is complete.
    StreamEnd = 3,
    /// Client to server: subscribe this logical stream to a topic (payload: [`Subscribe`]).
    /// The server answers with the same message once the subscription is registered; every
    /// delivery comes after that answer.
    Subscribe = 4,
    /// Client to server: broadcast this message to every subscriber of a topic (payload: the
    /// topic, `u32`, then padding). The header's send time is the publisher's *intended* send
    /// time.
    Publish = 5,
    /// Server to client: one published message, delivered to a subscriber. The publisher's
    /// bytes with the kind set to `Deliver` and the stream id set to the subscriber's logical
    /// stream; sequence number and send time are the publisher's.
    Deliver = 6,
    /// Client to server: start, or resume after a broken connection, a resumable server stream
    /// (payload: [`Resume`]). Its [`Kind::StreamData`] messages carry their offset in the
    /// stream as the sequence number.
    Resume = 7,
    /// Server to client: the answer to [`Kind::Resume`] (payload: [`ResumeAnswer`]), before any
    /// replayed or live message.
    ResumeAnswer = 8,
}

impl Kind {
    fn from_u8(v: u8) -> Result<Self, CodecError> {
        Ok(match v {
            0 => Self::Echo,
            1 => Self::StreamRequest,
            2 => Self::StreamData,
            3 => Self::StreamEnd,
            4 => Self::Subscribe,
            5 => Self::Publish,
            6 => Self::Deliver,
            7 => Self::Resume,
            8 => Self::ResumeAnswer,
            other => return Err(CodecError::UnknownKind(other)),
        })
    }
}

/// The decoded fixed header of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Logical stream the message belongs to.
    pub stream: u32,
    /// Sequence number within the logical stream, chosen by the sender.
    pub seq: u64,
    /// Sender's monotonic clock at send time, in nanoseconds (see [`crate::clock`]).
    pub sent_ns: u64,
    /// What the message is.
    pub kind: Kind,
    /// Total message length, header included.
    pub len: u32,
}

/// Why bytes are not a valid message. Every decoder returns one of these, never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the fixed header.
    #[error("message of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short {
        /// Bytes available.
        len: usize,
    },
    /// Larger than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Declared or actual length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The first two bytes are not `WL`.
    #[error("bad magic {0:02x?}: not a wirelab message")]
    BadMagic([u8; 2]),
    /// A header version this codec does not know.
    #[error("unsupported header version {0}")]
    BadVersion(u8),
    /// A kind byte outside [`Kind`].
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The header's length disagrees with the bytes the transport delivered.
    #[error("header declares {declared} bytes but {actual} were delivered")]
    LengthMismatch {
        /// Length in the header.
        declared: usize,
        /// Length delivered.
        actual: usize,
    },
    /// A stream request whose fields are out of range.
    #[error("invalid stream request: {0}")]
    BadStreamRequest(&'static str),
}

/// Builds a message of exactly `size` bytes (`size >= HEADER_LEN`), padding filled with a pattern
/// derived from the sequence number so corruption and cross-talk are detectable.
pub fn encode(
    stream: u32,
    seq: u64,
    sent_ns: u64,
    kind: Kind,
    size: usize,
) -> Result<Bytes, CodecError> {
    if size < HEADER_LEN {
        return Err(CodecError::Short { len: size });
    }
    let len = u32::try_from(size).map_err(|_| CodecError::Oversized {
        len: size,
        max: u32::MAX as usize,
    })?;
    let mut buf = BytesMut::with_capacity(size);
    put_header(
        &mut buf,
        &Header {
            stream,
            seq,
            sent_ns,
            kind,
            len,
        },
    );
    let seed = seq as u8;
    buf.extend((0..size - HEADER_LEN).map(|i| (i as u8).wrapping_add(seed)));
    Ok(buf.freeze())
}

fn put_header(buf: &mut BytesMut, h: &Header) {
    buf.put_slice(&MAGIC);
    buf.put_u8(VERSION);
    buf.put_u8(h.kind as u8);
    buf.put_u32(h.stream);
    buf.put_u64(h.seq);
    buf.put_u64(h.sent_ns);
    buf.put_u32(h.len);
    buf.put_u32(0);
}

/// Decodes the header of one complete message and checks it against the delivered length and
/// the limit `max`.
pub fn decode(msg: &[u8], max: usize) -> Result<Header, CodecError> {
    if msg.len() > max {
        return Err(CodecError::Oversized {
            len: msg.len(),
            max,
        });
    }
    let h = peek_header(msg)?;
    if h.len as usize != msg.len() {
        return Err(CodecError::LengthMismatch {
            declared: h.len as usize,
            actual: msg.len(),
        });
    }
    Ok(h)
}

/// Decodes only the header at the start of `buf`, without checking the total length.
pub fn peek_header(buf: &[u8]) -> Result<Header, CodecError> {
    if buf.len() < HEADER_LEN {
        return Err(CodecError::Short { len: buf.len() });
    }
    let magic = [buf[0], buf[1]];
    if magic != MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    if buf[2] != VERSION {
        return Err(CodecError::BadVersion(buf[2]));
    }
    let kind = Kind::from_u8(buf[3])?;
    let u32_at = |o: usize| u32::from_be_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let u64_at = |o: usize| (u64::from(u32_at(o)) << 32) | u64::from(u32_at(o + 4));
    let len = u32_at(24);
    if (len as usize) < HEADER_LEN {
        return Err(CodecError::LengthMismatch {
            declared: len as usize,
            actual: HEADER_LEN,
        });
    }
    Ok(Header {
        stream: u32_at(4),
        seq: u64_at(8),
        sent_ns: u64_at(16),
        kind,
        len,
    })
}

/// Splits the first whole message off a buffer of concatenated messages.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((header, len)))` when the first `len`
/// bytes are one message, and an error when the bytes can never become a valid message.
pub fn split_first(buf: &[u8], max: usize) -> Result<Option<(Header, usize)>, CodecError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = peek_header(buf)?;
    let len = h.len as usize;
    if len > max {
        return Err(CodecError::Oversized { len, max });
    }
    Ok((buf.len() >= len).then_some((h, len)))
}

/// A request for a server stream: `count` messages of `size` bytes, one every `interval_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRequest {
    /// Number of messages.
    pub count: u32,
    /// Size of each message in bytes (at least [`HEADER_LEN`]).
    pub size: u32,
    /// Pause between messages in milliseconds (0 = as fast as the transport takes them).
    pub interval_ms: u32,
}

impl StreamRequest {
    /// Checks the fields against the server's limits.
    pub fn validate(&self, max_message: usize, max_count: u32) -> Result<(), CodecError> {
        if (self.size as usize) < HEADER_LEN {
            return Err(CodecError::BadStreamRequest(
                "size is smaller than the header",
            ));
        }
        if self.size as usize > max_message {
            return Err(CodecError::Oversized {
                len: self.size as usize,
                max: max_message,
            });
        }
        if self.count > max_count {
            return Err(CodecError::BadStreamRequest(
                "count is over the server's limit",
            ));
        }
        Ok(())
    }

    /// Encodes the request as a [`Kind::StreamRequest`] message on `stream`.
    pub fn encode(&self, stream: u32, seq: u64, sent_ns: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(STREAM_REQUEST_LEN);
        put_header(
            &mut buf,
            &Header {
                stream,
                seq,
                sent_ns,
                kind: Kind::StreamRequest,
                len: STREAM_REQUEST_LEN as u32,
            },
        );
        buf.put_u32(self.count);
        buf.put_u32(self.size);
        buf.put_u32(self.interval_ms);
        buf.freeze()
    }

    /// Decodes the payload of a message whose header says [`Kind::StreamRequest`].
    pub fn decode(msg: &[u8]) -> Result<Self, CodecError> {
        if msg.len() != STREAM_REQUEST_LEN {
            return Err(CodecError::LengthMismatch {
                declared: STREAM_REQUEST_LEN,
                actual: msg.len(),
            });
        }
        let f = |o: usize| u32::from_be_bytes([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]]);
        Ok(Self {
            count: f(HEADER_LEN),
            size: f(HEADER_LEN + 4),
            interval_ms: f(HEADER_LEN + 8),
        })
    }

    /// Renders the request as the query string of `GET /stream`.
    pub fn to_query(&self) -> String {
        format!(
            "count={}&size={}&interval_ms={}",
            self.count, self.size, self.interval_ms
        )
    }

    /// Parses `count=&size=&interval_ms=` (any order; `interval_ms` defaults to 0).
    pub fn from_query(query: &str) -> Result<Self, CodecError> {
        let (mut count, mut size, mut interval_ms) = (None, None, 0);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or(CodecError::BadStreamRequest("query pair without '='"))?;
            let v: u32 = v
                .parse()
                .map_err(|_| CodecError::BadStreamRequest("query value is not a u32"))?;
            match k {
                "count" => count = Some(v),
                "size" => size = Some(v),
                "interval_ms" => interval_ms = v,
                _ => return Err(CodecError::BadStreamRequest("unknown query parameter")),
            }
        }
        Ok(Self {
            count: count.ok_or(CodecError::BadStreamRequest("count is missing"))?,
            size: size.ok_or(CodecError::BadStreamRequest("size is missing"))?,
            interval_ms,
        })
    }
}

/// What the server does when a subscriber's queue is full (the subscriber reads slower than
/// the topic is published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SlowPolicy {
    /// Hold the publisher until the slow subscriber has room: nothing is lost, and everyone
    /// waits for the slowest.
    Block = 0,
    /// Drop the oldest queued message to make room for the new one; the subscriber sees a gap
    /// in the sequence numbers.
    DropOldest = 1,
    /// Cut the slow subscriber off: its connection (or stream) is closed.
    Disconnect = 2,
}

impl SlowPolicy {
    /// Every policy, in wire order.
    pub const ALL: [SlowPolicy; 3] = [Self::Block, Self::DropOldest, Self::Disconnect];

    fn from_u8(v: u8) -> Result<Self, CodecError> {
        Self::ALL
            .into_iter()
            .find(|p| *p as u8 == v)
            .ok_or(CodecError::BadStreamRequest(
                "unknown slow-subscriber policy",
            ))
    }

    /// The name in scenario files and on the command line: `block`, `drop`, `disconnect`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::DropOldest => "drop",
            Self::Disconnect => "disconnect",
        }
    }
}

impl std::str::FromStr for SlowPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown slow-subscriber policy '{s}' (known: block drop disconnect)")
            })
    }
}

/// A subscription request: deliver `topic`'s messages on this logical stream, queueing at most
/// `queue` of them for this subscriber, and apply `policy` when that queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribe {
    /// The topic (logical broadcast stream).
    pub topic: u32,
    /// What happens when this subscriber falls `queue` messages behind.
    pub policy: SlowPolicy,
    /// Messages the server queues for this subscriber (at least 1).
    pub queue: u32,
}

impl Subscribe {
    /// Checks the fields against the server's limit on a subscriber's queue.
    pub fn validate(&self, max_queue: u32) -> Result<(), CodecError> {
        if self.queue == 0 {
            return Err(CodecError::BadStreamRequest("subscriber queue of 0"));
        }
        if self.queue > max_queue {
            return Err(CodecError::BadStreamRequest(
                "subscriber queue over the server's limit",
            ));
        }
        Ok(())
    }

    /// Encodes the request as a [`Kind::Subscribe`] message on `stream`.
    pub fn encode(&self, stream: u32, seq: u64, sent_ns: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(SUBSCRIBE_LEN);
        put_header(
            &mut buf,
            &Header {
                stream,
                seq,
                sent_ns,
                kind: Kind::Subscribe,
                len: SUBSCRIBE_LEN as u32,
            },
        );
        buf.put_u32(self.topic);
        buf.put_u8(self.policy as u8);
        buf.put_slice(&[0; 3]);
        buf.put_u32(self.queue);
        buf.freeze()
    }

    /// Decodes the payload of a message whose header says [`Kind::Subscribe`].
    pub fn decode(msg: &[u8]) -> Result<Self, CodecError> {
        if msg.len() != SUBSCRIBE_LEN {
            return Err(CodecError::LengthMismatch {
                declared: SUBSCRIBE_LEN,
                actual: msg.len(),
            });
        }
        let f = |o: usize| u32::from_be_bytes([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]]);
        Ok(Self {
            topic: f(HEADER_LEN),
            policy: SlowPolicy::from_u8(msg[HEADER_LEN + 4])?,
            queue: f(HEADER_LEN + 8),
        })
    }
}

/// Builds a [`Kind::Publish`] message of `size` bytes (at least [`PUBLISH_MIN_LEN`]) for
/// `topic`, stamped with the publisher's intended send time `intended_ns`.
pub fn publish(
    stream: u32,
    seq: u64,
    intended_ns: u64,
    topic: u32,
    size: usize,
) -> Result<Bytes, CodecError> {
    if size < PUBLISH_MIN_LEN {
        return Err(CodecError::Short { len: size });
    }
    let mut m = BytesMut::from(&encode(stream, seq, intended_ns, Kind::Publish, size)?[..]);
    m[HEADER_LEN..PUBLISH_MIN_LEN].copy_from_slice(&topic.to_be_bytes());
    Ok(m.freeze())
}

/// The topic of a [`Kind::Publish`] message (its header already decoded).
pub fn publish_topic(msg: &[u8]) -> Result<u32, CodecError> {
    if msg.len() < PUBLISH_MIN_LEN {
        return Err(CodecError::Short { len: msg.len() });
    }
    Ok(u32::from_be_bytes([
        msg[HEADER_LEN],
        msg[HEADER_LEN + 1],
        msg[HEADER_LEN + 2],
        msg[HEADER_LEN + 3],
    ]))
}

/// The delivery of a published message `msg` to a subscriber on logical stream `stream`: the
/// same bytes, kind [`Kind::Deliver`], stream id `stream` (one copy per distinct stream id,
/// shared by every subscriber on that id).
pub fn deliver(msg: &[u8], stream: u32) -> Bytes {
    let mut m = BytesMut::from(msg);
    if m.len() >= HEADER_LEN {
        m[3] = Kind::Deliver as u8;
        m[4..8].copy_from_slice(&stream.to_be_bytes());
    }
    m.freeze()
}

/// A request for a resumable server stream, or to resume one after a broken connection.
///
/// The client names the stream with a `token` of its choosing. With `epoch` 0 it asks for a new
/// stream of `stream`'s shape; otherwise it presents the epoch the server gave it and the offset
/// of the first message it has **not** processed, and the server replays from there out of a
/// bounded buffer before live messages, or answers explicitly that it cannot
/// ([`ResumeStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The client's name for the stream (the same on every connection).
    pub token: u64,
    /// 0 for a new stream, else the epoch of the server's earlier answer.
    pub epoch: u64,
    /// The first offset the client still needs.
    pub offset: u64,
    /// The stream's shape (used when the stream is new).
    pub stream: StreamRequest,
}

impl Resume {
    /// Encodes the request as a [`Kind::Resume`] message on logical stream `id`.
    pub fn encode(&self, id: u32, seq: u64, sent_ns: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(RESUME_LEN);
        put_header(
            &mut buf,
            &Header {
                stream: id,
                seq,
                sent_ns,
                kind: Kind::Resume,
                len: RESUME_LEN as u32,
            },
        );
        buf.put_u64(self.token);
        buf.put_u64(self.epoch);
        buf.put_u64(self.offset);
        buf.put_u32(self.stream.count);
        buf.put_u32(self.stream.size);
        buf.put_u32(self.stream.interval_ms);
        buf.freeze()
    }

    /// Decodes the payload of a message whose header says [`Kind::Resume`].
    pub fn decode(msg: &[u8]) -> Result<Self, CodecError> {
        if msg.len() != RESUME_LEN {
            return Err(CodecError::LengthMismatch {
                declared: RESUME_LEN,
                actual: msg.len(),
            });
        }
        let u64_at = |o: usize| u64::from_be_bytes(msg[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_be_bytes(msg[o..o + 4].try_into().unwrap_or([0; 4]));
        Ok(Self {
            token: u64_at(HEADER_LEN),
            epoch: u64_at(HEADER_LEN + 8),
            offset: u64_at(HEADER_LEN + 16),
            stream: StreamRequest {
                count: u32_at(HEADER_LEN + 24),
                size: u32_at(HEADER_LEN + 28),
                interval_ms: u32_at(HEADER_LEN + 32),
            },
        })
    }
}

/// What the server says to a [`Resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ResumeStatus {
    /// Replay from the asked offset follows, then live messages.
    Ok = 0,
    /// The server's epoch differs (it restarted, or the stream is another incarnation's): its
    /// earlier messages are gone. Start a new stream.
    EpochChanged = 1,
    /// The asked offset is older than the oldest message the server still keeps.
    OutsideWindow = 2,
    /// The epoch matches but the server has no stream of that token (expired or never made).
    Unknown = 3,
}

impl ResumeStatus {
    fn from_u8(v: u8) -> Result<Self, CodecError> {
        Ok(match v {
            0 => Self::Ok,
            1 => Self::EpochChanged,
            2 => Self::OutsideWindow,
            3 => Self::Unknown,
            _ => return Err(CodecError::BadStreamRequest("unknown resume status")),
        })
    }
}

/// The server's answer to a [`Resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeAnswer {
    /// The server's epoch: present it on the next resume.
    pub epoch: u64,
    /// With [`ResumeStatus::Ok`], the offset the replay starts at (the asked one).
    pub from: u64,
    /// The oldest offset the server still keeps for this stream (its window's start).
    pub oldest: u64,
    /// The verdict.
    pub status: ResumeStatus,
}

impl ResumeAnswer {
    /// Encodes the answer as a [`Kind::ResumeAnswer`] message on logical stream `id`.
    pub fn encode(&self, id: u32, sent_ns: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(RESUME_ANSWER_LEN);
        put_header(
            &mut buf,
            &Header {
                stream: id,
                seq: 0,
                sent_ns,
                kind: Kind::ResumeAnswer,
                len: RESUME_ANSWER_LEN as u32,
            },
        );
        buf.put_u64(self.epoch);
        buf.put_u64(self.from);
        buf.put_u64(self.oldest);
        buf.put_u8(self.status as u8);
        buf.put_slice(&[0; 3]);
        buf.freeze()
    }

    /// Decodes the payload of a message whose header says [`Kind::ResumeAnswer`].
    pub fn decode(msg: &[u8]) -> Result<Self, CodecError> {
        if msg.len() != RESUME_ANSWER_LEN {
            return Err(CodecError::LengthMismatch {
                declared: RESUME_ANSWER_LEN,
                actual: msg.len(),
            });
        }
        let u64_at = |o: usize| u64::from_be_bytes(msg[o..o + 8].try_into().unwrap_or([0; 8]));
        Ok(Self {
            epoch: u64_at(HEADER_LEN),
            from: u64_at(HEADER_LEN + 8),
            oldest: u64_at(HEADER_LEN + 16),
            status: ResumeStatus::from_u8(msg[HEADER_LEN + 24])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_and_its_answer_round_trip() {
        let r = Resume {
            token: 0xfeed_beef_0000_0001,
            epoch: 42,
            offset: 1234,
            stream: StreamRequest {
                count: 10_000,
                size: 64,
                interval_ms: 1,
            },
        };
        let m = r.encode(3, 9, 7);
        let h = decode(&m, 1 << 20).unwrap();
        assert_eq!(
            (h.kind, h.stream, h.len as usize),
            (Kind::Resume, 3, RESUME_LEN)
        );
        assert_eq!(Resume::decode(&m).unwrap(), r);
        assert!(Resume::decode(&m[..RESUME_LEN - 1]).is_err());
        for status in [
            ResumeStatus::Ok,
            ResumeStatus::EpochChanged,
            ResumeStatus::OutsideWindow,
            ResumeStatus::Unknown,
        ] {
            let a = ResumeAnswer {
                epoch: 42,
                from: 1234,
                oldest: 1000,
                status,
            };
            let m = a.encode(3, 5);
            assert_eq!(decode(&m, 1 << 20).unwrap().kind, Kind::ResumeAnswer);
            assert_eq!(ResumeAnswer::decode(&m).unwrap(), a);
        }
        let mut bad = ResumeAnswer {
            epoch: 1,
            from: 0,
            oldest: 0,
            status: ResumeStatus::Ok,
        }
        .encode(0, 0)
        .to_vec();
        bad[HEADER_LEN + 24] = 9;
        assert!(ResumeAnswer::decode(&bad).is_err());
    }

    #[test]
    fn round_trip_every_kind_and_size() {
        for kind in [Kind::Echo, Kind::StreamData, Kind::StreamEnd] {
            for size in [HEADER_LEN, 125, 126, 127, 65_535, 65_536] {
                let m = encode(7, 42, 123_456_789, kind, size).unwrap();
                assert_eq!(m.len(), size);
                let h = decode(&m, 1 << 20).unwrap();
                assert_eq!(
                    h,
                    Header {
                        stream: 7,
                        seq: 42,
                        sent_ns: 123_456_789,
                        kind,
                        len: size as u32
                    }
                );
            }
        }
    }

    #[test]
    fn short_input_is_a_typed_error() {
        assert_eq!(decode(&[0u8; 31], 100), Err(CodecError::Short { len: 31 }));
        assert_eq!(decode(&[], 100), Err(CodecError::Short { len: 0 }));
        assert_eq!(
            encode(0, 0, 0, Kind::Echo, 31),
            Err(CodecError::Short { len: 31 })
        );
    }

    #[test]
    fn oversized_input_is_a_typed_error() {
        let m = encode(0, 0, 0, Kind::Echo, 200).unwrap();
        assert_eq!(
            decode(&m, 199),
            Err(CodecError::Oversized { len: 200, max: 199 })
        );
        // A declared length over the limit is refused before the bytes arrive.
        assert_eq!(
            split_first(&m[..HEADER_LEN], 100),
            Err(CodecError::Oversized { len: 200, max: 100 })
        );
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let good = encode(1, 2, 3, Kind::Echo, 64).unwrap();
        let mut m = good.to_vec();
        m[0] = b'X';
        assert_eq!(decode(&m, 100), Err(CodecError::BadMagic([b'X', b'L'])));
        let mut m = good.to_vec();
        m[2] = 9;
        assert_eq!(decode(&m, 100), Err(CodecError::BadVersion(9)));
        let mut m = good.to_vec();
        m[3] = 200;
        assert_eq!(decode(&m, 100), Err(CodecError::UnknownKind(200)));
        assert_eq!(
            decode(&good[..63], 100),
            Err(CodecError::LengthMismatch {
                declared: 64,
                actual: 63
            })
        );
        let mut m = good.to_vec();
        m[24..28].copy_from_slice(&5u32.to_be_bytes());
        assert!(matches!(
            decode(&m, 100),
            Err(CodecError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn split_concatenated_messages() {
        let a = encode(1, 0, 0, Kind::StreamData, 40).unwrap();
        let b = encode(1, 1, 0, Kind::StreamData, 100).unwrap();
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let (h, n) = split_first(&all, 1000).unwrap().unwrap();
        assert_eq!((h.seq, n), (0, 40));
        assert_eq!(split_first(&all[40..139], 1000).unwrap(), None);
        let (h, n) = split_first(&all[40..], 1000).unwrap().unwrap();
        assert_eq!((h.seq, n), (1, 100));
        assert_eq!(split_first(&all[..10], 1000).unwrap(), None);
    }

    #[test]
    fn padding_differs_by_sequence() {
        let a = encode(0, 1, 0, Kind::Echo, 64).unwrap();
        let b = encode(0, 2, 0, Kind::Echo, 64).unwrap();
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn stream_request_round_trip_and_limits() {
        let r = StreamRequest {
            count: 10,
            size: 64,
            interval_ms: 5,
        };
        let m = r.encode(3, 9, 1);
        let h = decode(&m, 1000).unwrap();
        assert_eq!((h.kind, h.stream), (Kind::StreamRequest, 3));
        assert_eq!(StreamRequest::decode(&m).unwrap(), r);
        assert_eq!(StreamRequest::from_query(&r.to_query()).unwrap(), r);
        assert!(r.validate(1000, 100).is_ok());
        assert!(StreamRequest { size: 8, ..r }.validate(1000, 100).is_err());
        assert!(StreamRequest { size: 2000, ..r }
            .validate(1000, 100)
            .is_err());
        assert!(StreamRequest { count: 101, ..r }
            .validate(1000, 100)
            .is_err());
        assert!(StreamRequest::from_query("count=1").is_err());
        assert!(StreamRequest::from_query("count=x&size=40").is_err());
        assert!(StreamRequest::from_query("count=1&size=40&evil=1").is_err());
    }

    #[test]
    fn subscribe_publish_deliver_round_trip() {
        for policy in SlowPolicy::ALL {
            let s = Subscribe {
                topic: 9,
                policy,
                queue: 64,
            };
            let m = s.encode(4, 0, 1);
            let h = decode(&m, 1000).unwrap();
            assert_eq!((h.kind, h.stream), (Kind::Subscribe, 4));
            assert_eq!(Subscribe::decode(&m).unwrap(), s);
            assert_eq!(policy.name().parse::<SlowPolicy>().unwrap(), policy);
            assert!(s.validate(64).is_ok());
            assert!(s.validate(63).is_err());
            assert!(Subscribe { queue: 0, ..s }.validate(64).is_err());
        }
        let mut bad = Subscribe {
            topic: 1,
            policy: SlowPolicy::Block,
            queue: 1,
        }
        .encode(0, 0, 0)
        .to_vec();
        bad[HEADER_LEN + 4] = 7;
        assert!(Subscribe::decode(&bad).is_err());
        assert!(Subscribe::decode(&bad[..40]).is_err());
        assert!("nope".parse::<SlowPolicy>().is_err());

        let p = publish(0, 17, 12_345, 9, 64).unwrap();
        let h = decode(&p, 1000).unwrap();
        assert_eq!(
            (h.kind, h.seq, h.sent_ns, h.len),
            (Kind::Publish, 17, 12_345, 64)
        );
        assert_eq!(publish_topic(&p), Ok(9));
        assert!(publish(0, 0, 0, 9, PUBLISH_MIN_LEN - 1).is_err());
        let d = deliver(&p, 3);
        let hd = decode(&d, 1000).unwrap();
        assert_eq!(
            (hd.kind, hd.stream, hd.seq, hd.sent_ns, hd.len),
            (Kind::Deliver, 3, 17, 12_345, 64)
        );
        assert_eq!(d[HEADER_LEN..], p[HEADER_LEN..]);
    }
}
