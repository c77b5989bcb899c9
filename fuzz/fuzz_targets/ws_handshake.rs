//! The `ws` server's opening handshake on arbitrary bytes, exactly as the server reads it:
//! httparse with 64 header slots, then `handshake::check` on a complete head.
//!
//! Asserts: no panic; an accepted head has a valid key and gets the RFC 6455 accept value of
//! that key (28 base64 characters), and its `101` answer is a well-formed HTTP/1.1 response; every
//! refusal's answer is a well-formed HTTP/1.1 response with the refusal's status, a
//! `Content-Length` equal to its body, and `Sec-WebSocket-Version: 13` on a 426.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelab_ws::handshake;

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

/// Parses an answer the server would send; returns (status, headers, body).
fn parse_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("answer is not a complete HTTP response: {other:?}"),
    };
    assert_eq!(resp.version, Some(1));
    let hs = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    (resp.code.unwrap(), hs, bytes[n..].to_vec())
}

fn check_reject(r: &handshake::Reject) {
    let (status, hs, body) = parse_response(&r.response());
    assert_eq!(status, r.status);
    let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(get("connection"), Some("close"));
    if status == 426 {
        assert_eq!(get("sec-websocket-version"), Some("13"));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let outcome = match req.parse(data) {
        Ok(httparse::Status::Complete(_)) => handshake::check(&req),
        Ok(httparse::Status::Partial) => return,
        Err(httparse::Error::TooManyHeaders) => Err(handshake::TOO_LARGE),
        Err(_) => Err(handshake::MALFORMED),
    };
    match outcome {
        Ok(accept) => {
            assert_eq!(req.method, Some("GET"));
            assert_eq!(req.version, Some(1));
            let key = header(&req, "sec-websocket-key").expect("accepted without a key");
            assert_eq!(key.len(), 24);
            assert_eq!(accept, handshake::accept_key(key));
            assert_eq!(accept.len(), 28);
            assert!(accept.ends_with('='));
            assert!(accept[..27]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'));
            let (status, hs, body) = parse_response(&handshake::switching_protocols(&accept));
            assert_eq!(status, 101);
            assert!(body.is_empty());
            assert!(hs
                .iter()
                .any(|(k, v)| k == "sec-websocket-accept" && *v == accept));
        }
        Err(r) => check_reject(&r),
    }
});
