//! The built server against hostile and careless clients, as a user runs it: headers sent
//! too slowly, bodies that trickle or are too large, websockets that are idle, oversized,
//! too many, or never read — each cut off within its documented limit, never with a 500.

#![cfg(feature = "ssr")]

mod common;

use std::time::{Duration, Instant};

use common::binary::{command, Binary};
use common::client::{create_conversation, get_json};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{self, Message};

async fn lazy_server(extra: &[&str]) -> Binary {
    let folder = tempfile::tempdir().unwrap().keep();
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder);
    let mut args = vec!["--lazy"];
    args.extend_from_slice(extra);
    let mut server = Binary::serve(cmd, &args);
    server.wait_listening().await;
    server
}

/// Reads until the server closes the connection (or `limit` passes); what it sent.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_and_idle_connections_are_cut_off_at_the_header_deadline() {
    let server = lazy_server(&["--header-timeout", "1s"]).await;
    let mut slow = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let started = Instant::now();
    // A slowloris client: a byte of headers now and then, never the blank line.
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut cut = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let closed = cut
        || read_until_closed(&mut slow, Duration::from_secs(2))
            .await
            .is_some();
    assert!(
        closed,
        "a slowloris client was still connected after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A connection that never sends anything is closed too.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(read_until_closed(&mut idle, Duration::from_secs(4))
        .await
        .is_some());
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Meanwhile an honest client is served.
    let health = reqwest::get(format!("{}/health", server.url))
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        503,
        "lazy: the model is not loaded, and it says so"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_refused_before_they_are_sent_and_slow_ones_time_out() {
    let server = lazy_server(&["--body-timeout", "1s"]).await;

    // 413 from Content-Length alone: the answer comes without a byte of the body.
    let mut big = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    big.write_all(
        b"POST /api/ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut big, Duration::from_secs(5))
        .await
        .expect("an answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("50000000") && answer.contains("1048576"),
        "{answer}"
    );

    // A body that trickles: 408 at the deadline, with the reason.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    slow.write_all(
        b"POST /api/ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"text\": \"",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(5) {
        let _ = slow.write_all(b"a").await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_may_carry_one_file_and_few_fields() {
    let server = lazy_server(&[]).await;
    let client = reqwest::Client::new();
    let png = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("public/samples/ocr-sample.jpg"),
    )
    .unwrap();
    let part = || reqwest::multipart::Part::bytes(png.clone()).file_name("a.jpg");
    let two_files = reqwest::multipart::Form::new()
        .part("file", part())
        .part("file", part());
    let response = client
        .post(format!("{}/api/ocr", server.url))
        .multipart(two_files)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("more than one `file`"));

    let mut many = reqwest::multipart::Form::new();
    for _ in 0..6 {
        many = many.text("model", "ppocr-v6-small");
    }
    let response = client
        .post(format!("{}/api/ocr", server.url))
        .multipart(many)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

fn ws_url(server: &Binary, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", server.port)
}

fn close_code(message: Option<Result<Message, tungstenite::Error>>) -> Option<u16> {
    match message {
        Some(Ok(Message::Close(Some(frame)))) => Some(u16::from(frame.code)),
        _ => None,
    }
}

/// The next close frame, skipping pings and other frames.
async fn next_close(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    limit: Duration,
) -> Option<(u16, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return Some((u16::from(frame.code), frame.reason.to_string()))
            }
            Ok(other) => {
                if !matches!(
                    other,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_)))
                ) {
                    eprintln!("websocket ended without a close code: {other:?}");
                    return None;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_close_1009_over_the_size_limit_and_1008_when_silent() {
    let server = lazy_server(&["--ws-idle-timeout", "1s", "--ws-ping-interval", "200ms"]).await;

    // A message over 256 KiB is refused by the transport: close 1009.
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(&server, "/ws/chat"))
        .await
        .unwrap();
    socket
        .send(Message::text("x".repeat(300 * 1024)))
        .await
        .unwrap();
    let (code, reason) = next_close(&mut socket, Duration::from_secs(5))
        .await
        .expect("closed");
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("262144"), "{reason}");

    // A client that answers pings (tungstenite does, while it reads) stays connected...
    let (mut alive, _) = tokio_tungstenite::connect_async(ws_url(&server, "/ws/chat"))
        .await
        .unwrap();
    assert!(
        next_close(&mut alive, Duration::from_millis(2500))
            .await
            .is_none(),
        "a responsive client was closed"
    );
    // ...one that does not (it never reads, so never pongs) is closed with 1008.
    let (mut silent, _) = tokio_tungstenite::connect_async(ws_url(&server, "/ws/chat"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, reason) = next_close(&mut silent, Duration::from_secs(2))
        .await
        .expect("closed");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("nothing heard"), "{reason}");
    drop(alive);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_may_hold_only_so_many_websockets() {
    let server = lazy_server(&["--max-websockets-per-client", "2"]).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            tokio_tungstenite::connect_async(ws_url(&server, "/ws/chat"))
                .await
                .unwrap()
                .0,
        );
    }
    match tokio_tungstenite::connect_async(ws_url(&server, "/ws/chat")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("a third websocket was not refused: {:?}", other.map(|_| ())),
    }
    // Closing one frees its place.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    let _ = close_code(first.next().await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio_tungstenite::connect_async(ws_url(&server, "/ws/chat"))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_off_and_the_model_is_freed() {
    let folder = tempfile::tempdir().unwrap();
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder.path());
    let mut server = Binary::serve(cmd, &["--send-timeout", "1s"]);
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let id = create_conversation(&server.url, json!({ "title": "never read" })).await;

    // A client with a tiny receive window that asks for a very long reply and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{}", server.port).parse().unwrap())
        .await
        .unwrap();
    let (mut reader, _) = tokio_tungstenite::client_async(ws_url(&server, "/ws/chat"), stream)
        .await
        .unwrap();
    let start = json!({ "start": {
        "model": common::MODEL,
        "messages": [{ "role": "user", "content": "Write a very long story about a lighthouse keeper, in many chapters." }],
        "sampling": { "temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": 4096, "seed": 1 },
        "conversation_id": id,
    }});
    reader.send(Message::text(start.to_string())).await.unwrap();
    let sent_at = Instant::now();

    // The model must come free long before 4096 tokens could be written (~40 s here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let next: Value = client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({
            "model": common::MODEL,
            "messages": [{ "role": "user", "content": "Say hi." }],
            "max_tokens": 4, "temperature": 0.0,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queued = next["quantlab_metrics"]["queue_ms"]
        .as_f64()
        .expect("metrics");
    let waited = sent_at.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "the next request waited {waited:?} (queue {queued} ms): the stalled reply kept the model"
    );
    // The stalled reply is saved as far as it got, marked interrupted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = get_json(&format!("{}/api/conversations/{id}", server.url)).await;
        let messages = stored["messages"].as_array().unwrap();
        if messages.len() == 2 {
            assert_eq!(messages[1]["interrupted"], true, "{stored}");
            assert!(!messages[1]["content"].as_str().unwrap().is_empty());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partial reply was not saved: {stored}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(reader);
}
