//! A stand-in for the Hugging Face hub on loopback, speaking the part of its protocol hf-hub
//! uses: `GET /{repo}/resolve/{revision}/{file}` with a `Range` header, answered 206 with
//! `Content-Range`, `etag` and `x-repo-commit`; anything else is 404. It serves real bytes
//! (the tests give it the offline pack's GGUF), so the download, cache and checks are real.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use sha2::{Digest, Sha256};

/// The commit every answer names (hf-hub files the download under it).
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub struct MockHub {
    pub url: String,
    /// Requests answered, to prove a cached file is not downloaded again.
    pub requests: Arc<AtomicUsize>,
}

/// Serves `files`, keyed by `repo/file` (revision `main`).
pub fn start(files: HashMap<String, Vec<u8>>) -> MockHub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let files = Arc::new(files);
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let files = files.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &files);
            });
        }
    });
    MockHub { url, requests }
}

fn answer(mut stream: TcpStream, files: &HashMap<String, Vec<u8>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let (mut range_start, mut range_end) = (0usize, None::<usize>);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                let range = value.trim().trim_start_matches("bytes=");
                let (from, to) = range.split_once('-').unwrap_or((range, ""));
                range_start = from.parse().unwrap_or(0);
                range_end = to.parse().ok();
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let key = path
        .trim_start_matches('/')
        .split_once("/resolve/main/")
        .map(|(repo, file)| format!("{repo}/{file}"));
    let Some(data) = key.and_then(|k| files.get(&k)) else {
        let body = "Entry not found";
        return write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    let etag = hex::encode(Sha256::digest(data));
    // hf-hub asks for `bytes=0-0` first, to learn the size, then `bytes=N-`.
    let start = range_start.min(data.len().saturating_sub(1));
    let end = range_end
        .unwrap_or(usize::MAX)
        .min(data.len() - 1)
        .max(start);
    let body = &data[start..=end];
    write!(
        stream,
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\netag: \"{etag}\"\r\nx-repo-commit: {COMMIT}\r\nConnection: close\r\n\r\n",
        body.len(),
        start + body.len() - 1,
        data.len(),
    )?;
    stream.write_all(body)
}
