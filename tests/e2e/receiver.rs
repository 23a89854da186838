//! A tiny HTTP receiver for callback and scaling-webhook tests, and for the
//! OTLP trace export test.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
    /// The body's bytes (for non-JSON bodies such as OTLP protobuf).
    pub raw: Vec<u8>,
}

/// A tiny HTTP/1.1 receiver on 127.0.0.1:0 that records every request and
/// answers 500 to the first `fail_first` of them, 200 afterwards. (Plain
/// tokio: the test crate has no HTTP server dependency.)
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!(
            "http://{}/hooks/batch-done",
            listener.local_addr().expect("addr")
        );
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (log, token) = (received.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = token.cancelled() => return,
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => return },
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_one(stream, log, fail_first).await;
                });
            }
        });
        Self {
            url,
            received,
            _stop: stop.drop_guard(),
        }
    }

    /// `http://127.0.0.1:PORT`, without the hook path.
    pub fn base_url(&self) -> &str {
        self.url.trim_end_matches("/hooks/batch-done")
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    fail_first: usize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let mut header = std::collections::HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            header.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = header
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body_end = (head_end + len).min(buf.len());
    let raw = buf[head_end..body_end].to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let n = {
        let mut log = log.lock().expect("lock");
        log.push(Received {
            method,
            path,
            idempotency_key: header.get("idempotency-key").cloned(),
            content_type: header.get("content-type").cloned(),
            body,
            raw,
        });
        log.len()
    };
    let status = if n <= fail_first {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    stream
        .write_all(
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    stream.shutdown().await
}
