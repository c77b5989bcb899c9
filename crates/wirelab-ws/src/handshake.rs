//! The server's opening handshake (RFC 6455 §4.2), checked here rather than by tungstenite,
//! because tungstenite drops the TCP connection without an HTTP answer on a bad request.
//! Pure: takes a parsed request, returns the accept key or the exact HTTP answer to send.

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The endpoint path every wirelab WebSocket server serves.
pub const PATH: &str = "/ws";

/// Why a handshake is refused, and the HTTP answer that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status code.
    pub status: u16,
    /// A short reason, sent as the reason phrase's body.
    pub reason: &'static str,
}

impl Reject {
    const fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }

    /// The full HTTP/1.1 response, with `Sec-WebSocket-Version: 13` on a version mismatch
    /// (RFC 6455 §4.4) and `Connection: close`.
    pub fn response(&self) -> Vec<u8> {
        let phrase = match self.status {
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let body = format!("{}\n", self.reason);
        let extra = match self.status {
            426 => "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
            405 => "Allow: GET\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// Refusal for a request head larger than the server's limit.
pub const TOO_LARGE: Reject = Reject::new(431, "request head too large");
/// Refusal for a request that is not HTTP.
pub const MALFORMED: Reject = Reject::new(400, "malformed HTTP request");
/// Answer to a client that did not finish its request in time.
pub const TIMEOUT: Reject = Reject::new(408, "handshake timed out");

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
///
/// ```
/// // RFC 6455 §1.3's example, also the reference material's.
/// assert_eq!(
///     wirelab_ws::handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &str) -> String {
    derive_accept_key(key.as_bytes())
}

/// A valid `Sec-WebSocket-Key` is base64 of exactly 16 bytes: 22 base64 characters and `==`.
fn key_is_valid(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b.ends_with(b"==")
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Whether a request asks for the browser page (`GET /` without an `Upgrade` header) rather
/// than a WebSocket.
pub fn wants_page(req: &httparse::Request<'_, '_>) -> bool {
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    wirelab_core::page::is_page(req.method.unwrap_or(""), path) && header(req, "upgrade").is_none()
}

/// The HTTP/1.1 answer that serves the browser page ([`wirelab_core::page`]), closing the
/// connection after it (the page then opens its WebSocket on a connection of its own). No body
/// for `HEAD`.
pub fn page_response(head: bool) -> Vec<u8> {
    let html = wirelab_core::page::render("ws");
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", html.len());
    for (k, v) in wirelab_core::page::HEADERS {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n");
    let mut out = out.into_bytes();
    if !head {
        out.extend_from_slice(html.as_bytes());
    }
    out
}

/// Checks a complete request head. Returns the `Sec-WebSocket-Accept` value on success.
pub fn check(req: &httparse::Request<'_, '_>) -> Result<String, Reject> {
    if req.method != Some("GET") {
        return Err(Reject::new(405, "WebSocket handshakes use GET"));
    }
    if req.version != Some(1) {
        return Err(Reject::new(400, "WebSocket handshakes need HTTP/1.1"));
    }
    let path = req.path.unwrap_or("");
    if path.split('?').next() != Some(PATH) {
        return Err(Reject::new(404, "no WebSocket endpoint here; use /ws"));
    }
    if header(req, "host").is_none() {
        return Err(Reject::new(400, "missing Host header"));
    }
    if !has_token(header(req, "upgrade"), "websocket") {
        return Err(Reject::new(400, "missing 'Upgrade: websocket' header"));
    }
    if !has_token(header(req, "connection"), "upgrade") {
        return Err(Reject::new(400, "missing 'Connection: Upgrade' header"));
    }
    if header(req, "sec-websocket-version") != Some("13") {
        return Err(Reject::new(
            426,
            "unsupported Sec-WebSocket-Version; this server speaks 13",
        ));
    }
    match header(req, "sec-websocket-key") {
        Some(k) if key_is_valid(k) => Ok(accept_key(k)),
        Some(_) => Err(Reject::new(
            400,
            "Sec-WebSocket-Key is not base64 of 16 bytes",
        )),
        None => Err(Reject::new(400, "missing Sec-WebSocket-Key header")),
    }
}

/// The `101 Switching Protocols` answer for `accept`. No subprotocol and no extension is
/// selected (permessage-deflate is not supported, so offers of it are declined by omission).
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: &str) -> Result<String, Reject> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(raw.as_bytes()).unwrap().is_complete());
        check(&req)
    }

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn page(raw: &str) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(raw.as_bytes()).unwrap().is_complete());
        wants_page(&req)
    }

    #[test]
    fn the_page_is_served_at_slash_without_upgrade() {
        assert!(page("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(page("GET /?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!page(GOOD));
        assert!(!page(&GOOD.replace("/ws", "/")));
        assert!(!page("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"));
        let r = String::from_utf8(page_response(false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("const SERVER = \"ws\";"));
        let head = String::from_utf8(page_response(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn rfc_6455_sample_key() {
        // RFC 6455 §1.3's worked example.
        assert_eq!(run(GOOD).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_fault_gets_its_answer() {
        let cases = [
            (GOOD.replace("GET", "POST"), 405),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (GOOD.replace("/ws", "/other"), 404),
            (GOOD.replace("Host: x\r\n", ""), 400),
            (GOOD.replace("Upgrade: websocket\r\n", ""), 400),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (GOOD.replace("Version: 13", "Version: 8"), 426),
            (GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""), 426),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                400,
            ),
        ];
        for (raw, status) in cases {
            assert_eq!(run(&raw).unwrap_err().status, status, "{raw}");
        }
    }

    #[test]
    fn version_mismatch_names_the_supported_version() {
        let r = run(&GOOD.replace("Version: 13", "Version: 8")).unwrap_err();
        let text = String::from_utf8(r.response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 "));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }
}
