//! A minimal Chrome DevTools Protocol client on tokio-tungstenite: commands with ids, their
//! replies, and the events of a flattened target session. Enough to drive one headless
//! Chromium tab: create it, navigate, evaluate script, and watch network events.
//!
//! No CDP crate is used: the kept ones (`chromiumoxide`, `headless_chrome`) bring their own
//! TLS/HTTP stacks and async runtimes into a workspace that allows one rustls provider (ring);
//! what the lab needs is a dozen lines of JSON over one WebSocket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;

/// One message from the browser, parsed (pure).
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to command `id`: its result, or the browser's error message.
    Reply {
        /// The command's id.
        id: u64,
        /// `result`, or `error.message` (with `error.data` when given).
        result: std::result::Result<Value, String>,
    },
    /// An event.
    Event(Event),
}

/// A DevTools event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// E.g. `Network.webSocketCreated`.
    pub method: String,
    /// Its parameters.
    pub params: Value,
    /// The flattened session it belongs to, if any.
    pub session: Option<String>,
}

/// Parses one text message of the protocol.
pub fn parse(text: &str) -> Result<Incoming> {
    let v: Value = serde_json::from_str(text).context("DevTools message is not JSON")?;
    if let Some(id) = v.get("id").and_then(Value::as_u64) {
        let result = match v.get("error") {
            Some(e) => {
                let mut m = e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string();
                if let Some(d) = e.get("data").and_then(Value::as_str) {
                    m.push_str(": ");
                    m.push_str(d);
                }
                Err(m)
            }
            None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
        };
        return Ok(Incoming::Reply { id, result });
    }
    let method = v
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("DevTools message with neither id nor method: {text}"))?;
    Ok(Incoming::Event(Event {
        method: method.to_string(),
        params: v.get("params").cloned().unwrap_or(Value::Null),
        session: v.get("sessionId").and_then(Value::as_str).map(String::from),
    }))
}

/// The text of a command (pure).
pub fn command(id: u64, method: &str, params: Value, session: Option<&str>) -> String {
    let mut v = json!({ "id": id, "method": method, "params": params });
    if let Some(s) = session {
        v["sessionId"] = Value::String(s.to_string());
    }
    v.to_string()
}

/// The value of a `Runtime.evaluate` result (with `returnByValue`), or the page's exception.
pub fn evaluated(result: &Value) -> std::result::Result<Value, String> {
    if let Some(ex) = result.get("exceptionDetails") {
        let text = ex
            .pointer("/exception/description")
            .or_else(|| ex.get("text"))
            .and_then(Value::as_str)
            .unwrap_or("exception");
        return Err(text.lines().next().unwrap_or(text).to_string());
    }
    Ok(result
        .pointer("/result/value")
        .cloned()
        .unwrap_or(Value::Null))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<std::result::Result<Value, String>>>>>;

/// A connection to the browser's DevTools endpoint.
#[derive(Debug)]
pub struct Cdp {
    tx: mpsc::UnboundedSender<String>,
    pending: Pending,
    events: Arc<Mutex<Vec<Event>>>,
    arrived: Arc<Notify>,
    next: std::sync::atomic::AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Cdp {
    /// Connects to `ws://127.0.0.1:PORT/devtools/browser/ID`.
    pub async fn connect(url: &str) -> Result<Self> {
        let addr = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| anyhow!("not a DevTools URL: {url}"))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot reach DevTools at {addr}"))?;
        let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(cfg))
            .await
            .context("DevTools WebSocket handshake")?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let (p, e, a) = (pending.clone(), events.clone(), arrived.clone());
        let reader = tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(text) => if sink.send(Message::Text(text.into())).await.is_err() { break },
                        None => break,
                    },
                    msg = stream.next() => {
                        let text = match msg {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(_)) => continue,
                            _ => break,
                        };
                        match parse(&text) {
                            Ok(Incoming::Reply { id, result }) => {
                                let waiter = p.lock().ok().and_then(|mut m| m.remove(&id));
                                if let Some(w) = waiter {
                                    let _ = w.send(result);
                                }
                            }
                            Ok(Incoming::Event(ev)) => {
                                if let Ok(mut v) = e.lock() {
                                    v.push(ev);
                                }
                                a.notify_waiters();
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
            // Whoever still waits learns the browser is gone.
            if let Ok(mut m) = p.lock() {
                m.clear();
            }
            a.notify_waiters();
        });
        Ok(Self {
            tx,
            pending,
            events,
            arrived,
            next: 1.into(),
            reader,
        })
    }

    /// Sends a command and waits up to `timeout` for its result.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| anyhow!("DevTools state poisoned"))?
            .insert(id, tx);
        self.tx
            .send(command(id, method, params, session))
            .map_err(|_| anyhow!("the browser's DevTools connection is closed"))?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                if let Ok(mut m) = self.pending.lock() {
                    m.remove(&id);
                }
                bail!("{method}: no answer from the browser in {timeout:?}")
            }
            Ok(Err(_)) => bail!("{method}: the browser's DevTools connection closed"),
            Ok(Ok(Err(e))) => bail!("{method}: {e}"),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    /// Takes every event received so far.
    pub fn take_events(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for an event `method` (of `session`, when given), consuming the
    /// events before it.
    pub async fn wait_event(
        &self,
        method: &str,
        session: Option<&str>,
        timeout: Duration,
    ) -> Result<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(mut v) = self.events.lock() {
                if let Some(i) = v.iter().position(|e| {
                    e.method == method && (session.is_none() || e.session.as_deref() == session)
                }) {
                    let ev = v.remove(i);
                    v.drain(..i);
                    return Ok(ev);
                }
            }
            if self.reader.is_finished() {
                bail!("the browser's DevTools connection closed while waiting for {method}");
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("no {method} from the browser in {timeout:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_errors_and_events() {
        assert_eq!(
            parse(r#"{"id":3,"result":{"a":1}}"#).unwrap(),
            Incoming::Reply {
                id: 3,
                result: Ok(json!({"a":1}))
            }
        );
        assert_eq!(
            parse(
                r#"{"id":4,"error":{"code":-32000,"message":"Cannot navigate","data":"bad URL"}}"#
            )
            .unwrap(),
            Incoming::Reply {
                id: 4,
                result: Err("Cannot navigate: bad URL".into())
            }
        );
        let Incoming::Event(e) = parse(
            r#"{"method":"Page.loadEventFired","params":{"timestamp":1.5},"sessionId":"S1"}"#,
        )
        .unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.method, "Page.loadEventFired");
        assert_eq!(e.session.as_deref(), Some("S1"));
        assert!(parse("{}").is_err());
        assert!(parse("not json").is_err());
    }

    #[test]
    fn commands_carry_their_session() {
        let c: Value = serde_json::from_str(&command(
            7,
            "Runtime.evaluate",
            json!({"expression":"1"}),
            Some("S"),
        ))
        .unwrap();
        assert_eq!(c["id"], 7);
        assert_eq!(c["sessionId"], "S");
        let c: Value =
            serde_json::from_str(&command(8, "Browser.getVersion", json!({}), None)).unwrap();
        assert!(c.get("sessionId").is_none());
    }

    #[test]
    fn evaluated_values_and_exceptions() {
        assert_eq!(
            evaluated(&json!({"result":{"type":"number","value":2}})),
            Ok(json!(2))
        );
        let ex = json!({"result":{"type":"object"},"exceptionDetails":{"text":"Uncaught","exception":{"description":"Error: echo 3 came back different\n    at run"}}});
        assert_eq!(
            evaluated(&ex),
            Err("Error: echo 3 came back different".into())
        );
    }
}
