//! The message codec from the encoding side: for arbitrary header fields, sizes and stream
//! requests, `decode(encode(m)) == m`, a stream of encoded messages splits back into exactly
//! those messages (fed whole or in reads of 1 to 64 bytes), and a stream request survives its binary
//! and its query-string forms.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wirelab_core::codec::{self, Header, Kind, StreamRequest, HEADER_LEN};

#[derive(Debug, Arbitrary)]
struct Msg {
    stream: u32,
    seq: u64,
    sent_ns: u64,
    kind: u8,
    /// Padding after the header (kept small so runs stay fast).
    extra: u16,
}

#[derive(Debug, Arbitrary)]
struct Input {
    msgs: Vec<Msg>,
    req: (u32, u32, u32),
    req_header: (u32, u64, u64),
    max_extra: u16,
    /// Bytes per read when the stream is fed piecewise (1..=64).
    chunk: u8,
}

fn kind(k: u8) -> Kind {
    match k % 4 {
        0 => Kind::Echo,
        1 => Kind::StreamRequest,
        2 => Kind::StreamData,
        _ => Kind::StreamEnd,
    }
}

fuzz_target!(|input: Input| {
    let max = HEADER_LEN + usize::from(input.max_extra);
    let mut stream = Vec::new();
    let mut headers = Vec::new();
    for m in input.msgs.iter().take(8) {
        let size = HEADER_LEN + usize::from(m.extra % 300);
        let k = kind(m.kind);
        let bytes = codec::encode(m.stream, m.seq, m.sent_ns, k, size).unwrap();
        assert_eq!(bytes.len(), size);
        let want = Header {
            stream: m.stream,
            seq: m.seq,
            sent_ns: m.sent_ns,
            kind: k,
            len: size as u32,
        };
        assert_eq!(codec::peek_header(&bytes), Ok(want));
        if size <= max {
            assert_eq!(codec::decode(&bytes, max), Ok(want));
        } else {
            assert!(matches!(
                codec::decode(&bytes, max),
                Err(codec::CodecError::Oversized { .. })
            ));
        }
        // Any shorter or longer delivery is refused.
        assert!(codec::decode(&bytes[..size - 1], usize::MAX).is_err());
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(codec::decode(&longer, usize::MAX).is_err());
        stream.extend_from_slice(&bytes);
        headers.push(want);
    }

    // The concatenation splits back into the same messages, whole or byte by byte.
    let mut at = 0;
    for want in &headers {
        let (h, len) = codec::split_first(&stream[at..], usize::MAX)
            .unwrap()
            .expect("a whole message is there");
        assert_eq!((h, len), (*want, want.len as usize));
        at += len;
    }
    assert_eq!(at, stream.len());
    assert_eq!(codec::split_first(&stream[at..], usize::MAX), Ok(None));
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for piece in stream.chunks(usize::from(input.chunk % 64) + 1) {
        buf.extend_from_slice(piece);
        while let Some((h, len)) = codec::split_first(&buf, usize::MAX).unwrap() {
            assert!(
                len <= buf.len(),
                "split_first claimed bytes it was not given"
            );
            // Fed a byte at a time, a message is split off the moment it is complete.
            if piece.len() == 1 {
                assert_eq!(len, buf.len(), "a message was split off late or early");
            }
            got.push(h);
            buf.drain(..len);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, headers);

    // Stream requests: binary form and query string.
    let (count, size, interval_ms) = input.req;
    let r = StreamRequest {
        count,
        size,
        interval_ms,
    };
    let (s, seq, sent) = input.req_header;
    let m = r.encode(s, seq, sent);
    let h = codec::decode(&m, usize::MAX).unwrap();
    assert_eq!(
        (h.kind, h.stream, h.seq, h.sent_ns),
        (Kind::StreamRequest, s, seq, sent)
    );
    assert_eq!(StreamRequest::decode(&m), Ok(r));
    assert_eq!(StreamRequest::from_query(&r.to_query()), Ok(r));
    let valid = r.validate(max, 1000).is_ok();
    assert_eq!(
        valid,
        (HEADER_LEN..=max).contains(&(size as usize)) && count <= 1000
    );
});
