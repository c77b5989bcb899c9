//! The message codec on arbitrary bytes, as every server and client meets them: `decode` of one
//! delivered message, `peek_header`, `split_first` over a byte stream (the HTTP streaming body)
//! fed in arbitrary chunks, `StreamRequest::decode` and the server's `classify`.
//!
//! Asserts: no panic; a decoder never claims more bytes than it was given nor fewer than a
//! header; every accepted message re-encodes to the same header bytes; splitting a stream in
//! chunks gives the same messages as splitting it whole, and the messages plus what is left
//! are exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelab_core::codec::{self, Header, StreamRequest, HEADER_LEN, STREAM_REQUEST_LEN};
use wirelab_core::service::{self, Action};
use wirelab_core::Limits;

/// The header bytes `h` encodes to (reserved bytes zero).
fn header_bytes(h: &Header) -> Vec<u8> {
    // `encode` pads to the size it is given; only the header is compared, so encode the
    // smallest message and write the declared length in.
    let mut b = codec::encode(h.stream, h.seq, h.sent_ns, h.kind, HEADER_LEN)
        .unwrap()
        .to_vec();
    b[24..28].copy_from_slice(&h.len.to_be_bytes());
    b
}

fn check_header(h: &Header, bytes: &[u8]) {
    assert!(h.len as usize >= HEADER_LEN);
    let mut want = header_bytes(h);
    // The reserved word is not checked by the decoder: compare it as sent.
    want[28..32].copy_from_slice(&bytes[28..32]);
    assert_eq!(&want[..], &bytes[..HEADER_LEN], "header does not re-encode");
}

/// Splits `data` as `read_messages` does with a body arriving in `chunks`; returns the messages
/// and the bytes left over, or the error.
fn split_stream(
    data: &[u8],
    chunks: &[usize],
    max: usize,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), codec::CodecError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = chunks.iter().copied().cycle();
    while at < data.len() {
        let n = sizes.next().unwrap_or(data.len()).clamp(1, data.len() - at);
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        while let Some((h, len)) = codec::split_first(&buf, max)? {
            assert!(
                len <= buf.len(),
                "split_first claimed {len} of {} bytes",
                buf.len()
            );
            assert!(len >= HEADER_LEN && len <= max);
            assert_eq!(h.len as usize, len);
            let msg: Vec<u8> = buf.drain(..len).collect();
            assert_eq!(codec::decode(&msg, max), Ok(h));
            out.push(msg);
        }
    }
    Ok((out, buf))
}

fuzz_target!(|data: &[u8]| {
    // First byte picks a limit, the next few the chunk sizes of the streamed body.
    let (max, chunks, data) = match data {
        [m, c0, c1, c2, rest @ ..] => {
            let max = match m % 4 {
                0 => HEADER_LEN,
                1 => 256,
                2 => 4096,
                _ => 16 << 20,
            };
            let chunks = [*c0 as usize, *c1 as usize, *c2 as usize];
            (max, chunks, rest)
        }
        _ => (16 << 20, [1, 1, 1], data),
    };

    // One delivered message.
    if let Ok(h) = codec::decode(data, max) {
        assert_eq!(h.len as usize, data.len());
        assert!(data.len() <= max);
        check_header(&h, data);
        assert_eq!(codec::peek_header(data), Ok(h));
    }
    if let Ok(h) = codec::peek_header(data) {
        check_header(&h, data);
    }
    if let Ok(r) = StreamRequest::decode(data) {
        assert_eq!(data.len(), STREAM_REQUEST_LEN);
        let h = codec::peek_header(data).ok();
        let again = r.encode(
            h.map_or(0, |h| h.stream),
            h.map_or(0, |h| h.seq),
            h.map_or(0, |h| h.sent_ns),
        );
        assert_eq!(&again[HEADER_LEN..], &data[HEADER_LEN..]);
    }

    // What a server does with it.
    let limits = Limits {
        max_message: max,
        max_stream_count: 1000,
        ..Limits::default()
    };
    match service::classify(data, &limits) {
        Ok(Action::Echo) => {
            assert_eq!(
                codec::decode(data, max).map(|h| h.kind),
                Ok(codec::Kind::Echo)
            );
        }
        Ok(Action::Stream(plan)) => {
            let req = StreamRequest::decode(data).unwrap();
            assert_eq!(plan.req, req);
            assert!(req.validate(max, 1000).is_ok());
            // The first message of the stream (when small enough to build every run) and the
            // end marker are valid messages.
            if req.size <= 1 << 16 {
                let first = plan.data(0, 1);
                assert_eq!(first.len(), req.size as usize);
                assert!(codec::decode(&first, max).is_ok());
            }
            assert!(codec::decode(&plan.end(2), max).is_ok());
        }
        Ok(Action::Subscribe { stream, req }) => {
            let h = codec::decode(data, max).unwrap();
            assert_eq!((h.kind, h.stream), (codec::Kind::Subscribe, stream));
            assert_eq!(codec::Subscribe::decode(data), Ok(req));
            assert!(req.queue >= 1);
        }
        Ok(Action::Publish { topic }) => {
            assert_eq!(codec::decode(data, max).unwrap().kind, codec::Kind::Publish);
            assert_eq!(codec::publish_topic(data), Ok(topic));
        }
        Ok(Action::Resume { stream, req }) => {
            let h = codec::decode(data, max).unwrap();
            assert_eq!((h.kind, h.stream), (codec::Kind::Resume, stream));
            assert_eq!(codec::Resume::decode(data), Ok(req));
            assert!(req.stream.validate(max, 1000).is_ok());
            // Re-encoding gives the same payload.
            assert_eq!(&req.encode(stream, h.seq, h.sent_ns)[HEADER_LEN..], &data[HEADER_LEN..]);
        }
        Err(_) => {}
    }

    // A byte stream of concatenated messages, whole and in chunks.
    let whole = split_stream(data, &[data.len().max(1)], max);
    let chunked = split_stream(data, &chunks, max);
    match (&whole, &chunked) {
        (Ok((wm, wl)), Ok((cm, cl))) => {
            assert_eq!(wm, cm, "chunking changed the messages");
            assert_eq!(wl, cl);
            let mut all: Vec<u8> = wm.concat();
            all.extend_from_slice(wl);
            assert_eq!(all, data, "messages and leftover are not the input");
        }
        // An error may show up earlier when chunked (the header of a bad message arrives
        // before its end), never only in one of the two.
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole {a:?} but chunked {b:?}"),
    }
});
