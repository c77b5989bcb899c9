//! RFC 9220 (WebSocket over HTTP/3) is deliberately NOT built: the released h3 crate cannot
//! express `:protocol websocket`. This test documents that refusal at the API level, so that the
//! day an h3 release can say `websocket` (hyperium/h3#236 is on its main branch, unreleased),
//! updating the lock file turns it red and points at the work to do: an `h3ws` transport (h3
//! extended CONNECT + the RFC 6455 session `ws` and `h2ws` share), the HTTP/3 chapter's
//! "WebSocket over HTTP/3" section and the claims-ledger row. The wire-level refusal (our h3
//! server resets such a request with H3_MESSAGE_ERROR) is checked with aioquic in
//! `bench-suite/tests/peers.rs`.

use std::str::FromStr;

#[test]
fn h3_cannot_express_protocol_websocket_so_rfc9220_stays_out_of_the_build() {
    // The API is what we think it is: the extension type exists and parses the tokens it knows.
    assert!(h3::ext::Protocol::from_str("webtransport").is_ok());
    assert!(h3::ext::Protocol::from_str("connect-udp").is_ok());
    assert!(
        h3::ext::Protocol::from_str("websocket").is_err(),
        "this h3 release can express `:protocol websocket`: RFC 9220 can now be built. Add the \
         h3ws transport, update docs/src/http3.md (WebSocket over HTTP/3) and the claims ledger, \
         and turn this test (and peers.rs's rfc9220 refusal test) into the transport's tests"
    );
}
