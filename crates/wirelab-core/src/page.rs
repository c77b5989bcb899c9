//! The browser page every HTTP server serves at `/` (pure: text in, text out).
//!
//! One self-contained HTML file (no CDN, no build step) that runs the lab's workloads from a
//! browser with its own APIs (WebSocket, fetch, fetch with a streamed request body,
//! EventSource) and the lab's message format, and shows a table and a latency chart. `wirelab
//! browser` drives the same page through the DevTools protocol (`window.wirelab.run`).

/// The page as shipped, with the placeholder for the serving transport's id.
pub const TEMPLATE: &str = include_str!("page.html");

/// The placeholder [`render`] replaces.
const SERVER_PLACEHOLDER: &str = "__WIRELAB_SERVER__";

/// Headers the page is served with. `Cross-Origin-Opener-Policy` and
/// `Cross-Origin-Embedder-Policy` make the page cross-origin isolated, which gives its
/// `performance.now()` a resolution of a few microseconds instead of about 100.
pub const HEADERS: &[(&str, &str)] = &[
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-embedder-policy", "require-corp"),
];

/// The page for the server of transport `server` (a transport id such as `h2ws`). Anything
/// but ASCII letters, digits and `-` in the id is dropped, so the page stays valid script.
pub fn render(server: &str) -> String {
    let id: String = server
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    TEMPLATE.replacen(SERVER_PLACEHOLDER, &id, 1)
}

/// Whether an HTTP request is one for the page: `GET` or `HEAD` of `/` or `/index.html`.
pub fn is_page(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD") && matches!(path, "/" | "/index.html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_the_server_and_keeps_the_script_valid() {
        let p = render("h2ws");
        assert!(p.contains("const SERVER = \"h2ws\";"));
        assert!(!p.contains(SERVER_PLACEHOLDER));
        let p = render("x\";alert(1)//");
        assert!(p.contains("const SERVER = \"xalert1\";"));
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["src=\"http", "href=\"http", "//cdn", "import "] {
            assert!(!TEMPLATE.contains(external), "{external}");
        }
        assert!(TEMPLATE.contains("window.wirelab = "));
    }

    #[test]
    fn page_requests() {
        assert!(is_page("GET", "/"));
        assert!(is_page("HEAD", "/index.html"));
        assert!(!is_page("POST", "/"));
        assert!(!is_page("GET", "/ws"));
    }
}
