//! A tiny stand-in for the Hugging Face hub on 127.0.0.1, answering the requests `hf-hub`
//! 0.4 makes: `GET /api/models/{repo}/revision/{rev}` (JSON with `sha` and `siblings`) and
//! `GET /{repo}/resolve/{rev}/{file}` with a `Range`, answered with `206`, `Content-Range`,
//! `ETag` and `X-Repo-Commit`. `.safetensors` files go, as LFS files do, through a `302` to
//! an absolute `/cdn/{etag}` address carrying `X-Linked-Etag`. Anything else is a `404` with
//! the hub's `X-Error-Code`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The served repository.
pub struct FakeRepo {
    /// `org/name`.
    pub id: String,
    /// The commit every revision points to.
    pub sha: String,
    /// Revisions that exist (besides the sha).
    pub revisions: Vec<String>,
    /// Files by repository path.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// A running server; [`Hub::stop`] closes the port.
pub struct Hub {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Request lines seen (`GET /path range`).
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    /// Serves `repo` on a free port.
    pub fn start(repo: FakeRepo) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let repo = Arc::new(repo);
        let (l2, s2, e2) = (log.clone(), stop.clone(), endpoint.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (repo, log, endpoint) = (repo.clone(), l2.clone(), e2.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &repo, &log, &endpoint);
                });
            }
        });
        Hub {
            endpoint,
            log,
            stop,
            port,
            thread: Some(thread),
        }
    }

    /// The request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops listening: later connections are refused.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    conn: TcpStream,
    repo: &FakeRepo,
    log: &Mutex<Vec<String>>,
    endpoint: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    log.lock().unwrap().push(format!(
        "{method} {path} {}",
        range.clone().unwrap_or_default()
    ));
    let mut out = conn;
    let known_rev = |r: &str| r == repo.sha || repo.revisions.iter().any(|x| x == r);
    let api = format!("/api/models/{}/revision/", repo.id);
    let resolve = format!("/{}/resolve/", repo.id);
    if let Some(rev) = path.strip_prefix(&api) {
        if !known_rev(rev) {
            return reply(&mut out, 404, &[("X-Error-Code", "RevisionNotFound")], b"");
        }
        let siblings: Vec<String> = repo
            .files
            .keys()
            .map(|k| format!("{{\"rfilename\":\"{k}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\":\"{}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
            repo.id,
            repo.sha,
            siblings.join(",")
        );
        return reply(
            &mut out,
            200,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
    }
    if let Some(rest) = path.strip_prefix(&resolve) {
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        if !known_rev(rev) {
            return reply(&mut out, 404, &[("X-Error-Code", "RevisionNotFound")], b"");
        }
        let Some(data) = repo.files.get(file) else {
            return reply(
                &mut out,
                404,
                &[
                    ("X-Error-Code", "EntryNotFound"),
                    ("X-Error-Message", "Entry not found"),
                ],
                b"",
            );
        };
        let etag = etag_of(file);
        if file.ends_with(".safetensors") {
            let loc = format!("{endpoint}/cdn/{etag}");
            let quoted = format!("\"{etag}\"");
            return reply(
                &mut out,
                302,
                &[
                    ("Location", &loc),
                    ("X-Linked-Etag", &quoted),
                    ("X-Repo-Commit", &repo.sha),
                ],
                b"",
            );
        }
        return ranged(&mut out, data, range.as_deref(), &etag, &repo.sha);
    }
    if let Some(etag) = path.strip_prefix("/cdn/") {
        if let Some((_, data)) = repo.files.iter().find(|(k, _)| etag_of(k) == etag) {
            return ranged(&mut out, data, range.as_deref(), etag, "");
        }
    }
    reply(&mut out, 404, &[("X-Error-Code", "RepoNotFound")], b"")
}

/// A stable etag per file name.
fn etag_of(file: &str) -> String {
    let h = file.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("{h:016x}")
}

/// A `206` with the asked byte range (`bytes=a-b` or `bytes=a-`), or a `200` without one.
fn ranged(
    out: &mut TcpStream,
    data: &[u8],
    range: Option<&str>,
    etag: &str,
    sha: &str,
) -> std::io::Result<()> {
    let quoted = format!("\"{etag}\"");
    let mut headers: Vec<(&str, &str)> = vec![("ETag", &quoted)];
    if !sha.is_empty() {
        headers.push(("X-Repo-Commit", sha));
    }
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return reply(out, 200, &headers, data);
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start: usize = a.parse().unwrap_or(0).min(data.len());
    let end: usize = b
        .parse()
        .map(|e: usize| e + 1)
        .unwrap_or(data.len())
        .min(data.len());
    let end = end.max(start);
    let cr = format!(
        "bytes {start}-{}/{}",
        end.saturating_sub(1).max(start),
        data.len()
    );
    headers.push(("Content-Range", &cr));
    reply(out, 206, &headers, &data[start..end])
}

fn reply(
    out: &mut TcpStream,
    code: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
