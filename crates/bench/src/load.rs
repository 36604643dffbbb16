//! A small closed-loop load generator: a fixed number of keep-alive HTTP/1.1 connections
//! on loopback, each sending its next request as soon as the last answer is read.
//!
//! Requests are prepared before the clock starts (bodies already signed, each request
//! already in its wire form), so the generator spends its time on the wire, not on
//! crypto or on building requests: per request it writes the prepared bytes and reads
//! one answer, whose head it parses with `httparse` to find the status and the body's
//! length (as `wrk` does). A run stops by itself when its requests are used up or its
//! time is over, whichever comes first.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One prepared request, as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Prepared {
    wire: Bytes,
}

impl Prepared {
    pub fn get(path: impl Into<String>, bearer: Option<&str>) -> Self {
        Self::new("GET", &path.into(), bearer, None)
    }

    pub fn post(path: impl Into<String>, bearer: &str, body: String) -> Self {
        Self::new("POST", &path.into(), Some(bearer), Some(body.as_bytes()))
    }

    fn new(method: &str, path: &str, bearer: Option<&str>, body: Option<&[u8]>) -> Self {
        let mut wire = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
        // Writing to a Vec cannot fail.
        let _ = write!(wire, "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
        if let Some(bearer) = bearer {
            let _ = write!(wire, "authorization: Bearer {bearer}\r\n");
        }
        if let Some(body) = body {
            let _ = write!(
                wire,
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            );
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(body.unwrap_or_default());
        Self {
            wire: Bytes::from(wire),
        }
    }
}

/// How the prepared requests are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each request once (unique bodies, such as verifications).
    Once,
    /// Round and round until the time is over (reads).
    Cycle,
}

/// A load run's parameters.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub concurrency: usize,
    pub duration: Duration,
    pub mode: Mode,
    /// The status every answer should have; others are counted as errors.
    pub expect_status: u16,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub completed: u64,
    pub unexpected: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// The first unexpected answer, for the report.
    pub first_unexpected: Option<String>,
    /// Answers by request index, when asked for (to count outcomes).
    pub bodies: Vec<(usize, Bytes)>,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another run's answers to these, as one run whose time is both runs' time.
    /// Kept bodies are not merged: their indices name requests of their own run.
    pub fn merge(&mut self, other: Outcome) {
        self.completed += other.completed;
        self.unexpected += other.unexpected;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
        if self.first_unexpected.is_none() {
            self.first_unexpected = other.first_unexpected;
        }
    }

    /// The `q` quantile latency (0 < q ≤ 1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let rank = ((self.latencies_us.len() as f64) * q).ceil() as usize;
        self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1]
    }
}

/// Runs `plan` with `requests` on the current (single-threaded) runtime.
pub async fn run(plan: &Plan, requests: Arc<Vec<Prepared>>, keep_bodies: bool) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let requests = requests.clone();
        let next = next.clone();
        let plan = plan.clone();
        workers.push(tokio::task::spawn_local(async move {
            worker(&plan, &requests, &next, deadline, keep_bodies).await
        }));
    }
    let mut outcome = Outcome::default();
    for worker in workers {
        let Ok(part) = worker.await else { continue };
        outcome.completed += part.completed;
        outcome.unexpected += part.unexpected;
        outcome.latencies_us.extend(part.latencies_us);
        outcome.bodies.extend(part.bodies);
        if outcome.first_unexpected.is_none() {
            outcome.first_unexpected = part.first_unexpected;
        }
    }
    outcome.elapsed = start.elapsed();
    outcome.latencies_us.sort_unstable();
    outcome
}

async fn worker(
    plan: &Plan,
    requests: &[Prepared],
    next: &AtomicUsize,
    deadline: Instant,
    keep_bodies: bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut conn: Option<Connection> = None;
    while Instant::now() < deadline {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let prepared = match plan.mode {
            Mode::Once => match requests.get(index) {
                Some(prepared) => prepared,
                None => break,
            },
            Mode::Cycle => &requests[index % requests.len()],
        };
        if conn.is_none() {
            conn = Connection::open(plan.addr).await;
        }
        let Some(open) = conn.as_mut() else {
            outcome.unexpected += 1;
            outcome
                .first_unexpected
                .get_or_insert_with(|| "could not connect".into());
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let sent = Instant::now();
        let answer = open.exchange(&prepared.wire).await;
        let took = sent.elapsed();
        match answer {
            Ok(answer) => {
                outcome.completed += 1;
                outcome
                    .latencies_us
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                let body = || Bytes::copy_from_slice(open.body(&answer));
                if answer.status != plan.expect_status {
                    outcome.unexpected += 1;
                    outcome.first_unexpected.get_or_insert_with(|| {
                        format!("{}: {}", answer.status, String::from_utf8_lossy(&body()))
                    });
                }
                if keep_bodies {
                    outcome.bodies.push((index, body()));
                }
                if answer.close {
                    conn = None;
                }
            }
            Err(err) => {
                outcome.unexpected += 1;
                outcome.first_unexpected.get_or_insert(err);
                conn = None;
            }
        }
    }
    outcome
}

/// One keep-alive connection and the buffer its answers are read into.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// Where an answer's parts are in [`Connection::buffer`].
struct Answer {
    status: u16,
    body: std::ops::Range<usize>,
    /// The server will close the connection after this answer.
    close: bool,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Option<Self> {
        let stream = TcpStream::connect(addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Self {
            stream,
            buffer: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends one prepared request and reads its whole answer.
    async fn exchange(&mut self, wire: &[u8]) -> Result<Answer, String> {
        self.stream
            .write_all(wire)
            .await
            .map_err(|err| err.to_string())?;
        self.buffer.clear();
        loop {
            self.read_more("before answering").await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head = match response.parse(&self.buffer) {
                Ok(httparse::Status::Complete(head)) => head,
                Ok(httparse::Status::Partial) => continue,
                Err(err) => return Err(format!("an unreadable answer: {err}")),
            };
            let status = response.code.unwrap_or(0);
            let mut length = None;
            let mut close = false;
            for header in response.headers.iter() {
                if header.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(header.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok());
                } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err("a chunked answer (the generator expects content-length)".into());
                } else if header.name.eq_ignore_ascii_case("connection") {
                    close = header.value.eq_ignore_ascii_case(b"close");
                }
            }
            let length = match (length, status) {
                (Some(length), _) => length,
                (None, 204 | 304) => 0,
                (None, _) => return Err(format!("a {status} answer without content-length")),
            };
            let end = head + length;
            while self.buffer.len() < end {
                self.read_more("mid-answer").await?;
            }
            if self.buffer.len() > end {
                return Err("bytes after the answer to a lone request".into());
            }
            return Ok(Answer {
                status,
                body: head..end,
                close,
            });
        }
    }

    /// Reads what has arrived of the answer into the buffer; `when` says where a
    /// closed connection cut it off.
    async fn read_more(&mut self, when: &str) -> Result<(), String> {
        if self.buffer.capacity() == self.buffer.len() {
            self.buffer.reserve(64 * 1024);
        }
        match self.stream.read_buf(&mut self.buffer).await {
            Ok(0) => Err(format!("the server closed the connection {when}")),
            Ok(_) => Ok(()),
            Err(err) => Err(err.to_string()),
        }
    }

    fn body(&self, answer: &Answer) -> &[u8] {
        &self.buffer[answer.body.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering each request on a connection with the next of `answers`, each
    /// written in two parts (split inside the head) so the reader must assemble it; it
    /// closes a connection after an answer that says so, and stops after the last answer.
    /// Returns the requests it read, each with the number of its connection.
    async fn serve(
        listener: tokio::net::TcpListener,
        answers: Vec<&'static str>,
    ) -> Vec<(usize, String)> {
        let mut answers = answers.into_iter();
        let mut seen = Vec::new();
        let mut connection = 0;
        'connections: while let Ok((mut stream, _)) = listener.accept().await {
            connection += 1;
            loop {
                let mut request = Vec::new();
                let complete = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 16];
                    let mut parsed = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(head)) = parsed.parse(&request) {
                        let length = parsed
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map_or(0, |h| {
                                std::str::from_utf8(h.value).unwrap().parse().unwrap()
                            });
                        if request.len() >= head + length {
                            break true;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break false,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                };
                if !complete {
                    continue 'connections;
                }
                seen.push((connection, String::from_utf8(request).unwrap()));
                let Some(answer) = answers.next() else {
                    break 'connections;
                };
                let (first, rest) = answer.split_at(10);
                stream.write_all(first.as_bytes()).await.unwrap();
                stream.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                stream.write_all(rest.as_bytes()).await.unwrap();
                if answers.len() == 0 {
                    break 'connections;
                }
                if answer.contains("connection: close") {
                    continue 'connections;
                }
            }
        }
        seen
    }

    #[test]
    fn answers_are_read_whole_counted_by_status_and_connections_renewed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::task::spawn_local(serve(
                listener,
                vec![
                    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain",
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                ],
            ));
            let requests = vec![
                Prepared::get("/a", None),
                Prepared::get("/b", Some("secret")),
                Prepared::post("/c", "secret", r#"{"x":1}"#.into()),
                Prepared::get("/d", None),
                Prepared::get("/e", None),
            ];
            let plan = Plan {
                addr,
                concurrency: 1,
                duration: Duration::from_secs(10),
                mode: Mode::Once,
                expect_status: 200,
            };
            let outcome = run(&plan, Arc::new(requests), true).await;
            assert_eq!(outcome.completed, 4, "{outcome:?}");
            assert_eq!(
                outcome.unexpected, 2,
                "a 404 and a chunked answer: {outcome:?}"
            );
            assert_eq!(outcome.first_unexpected.as_deref(), Some("404: nope"));
            let bodies: Vec<(usize, &[u8])> = outcome
                .bodies
                .iter()
                .map(|(i, body)| (*i, body.as_ref()))
                .collect();
            assert_eq!(
                bodies,
                [(0, &b"hello"[..]), (1, b"nope"), (2, b"ok"), (3, b"again")]
            );
            assert_eq!(outcome.latencies_us.len(), 4);
            let seen = server.await.unwrap();
            assert_eq!(
                seen[1].1,
                "GET /b HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer secret\r\n\r\n"
            );
            assert_eq!(
                seen[2].1,
                "POST /c HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer secret\r\n\
                 content-type: application/json\r\ncontent-length: 7\r\n\r\n{\"x\":1}"
            );
            let connections: Vec<usize> = seen.iter().map(|(c, _)| *c).collect();
            assert_eq!(
                connections,
                [1, 1, 1, 2, 2],
                "a new connection after 'close'"
            );
        });
    }

    #[test]
    fn merged_runs_read_as_one_run_over_both_times() {
        let run = |completed, unexpected, secs, latencies: &[u32], first: Option<&str>| Outcome {
            completed,
            unexpected,
            elapsed: Duration::from_secs(secs),
            latencies_us: latencies.to_vec(),
            first_unexpected: first.map(str::to_owned),
            bodies: Vec::new(),
        };
        let mut merged = run(3, 0, 1, &[10, 20, 30], None);
        merged.merge(run(2, 1, 3, &[5, 40], Some("500: boom")));
        merged.merge(run(1, 1, 1, &[25], Some("503: later")));
        assert_eq!((merged.completed, merged.unexpected), (6, 2));
        assert_eq!(merged.elapsed, Duration::from_secs(5));
        assert_eq!(merged.latencies_us, [5, 10, 20, 25, 30, 40]);
        assert_eq!(merged.quantile_us(0.5), 20);
        assert_eq!(merged.quantile_us(1.0), 40);
        assert!((merged.throughput() - 1.2).abs() < 1e-9);
        assert_eq!(merged.first_unexpected.as_deref(), Some("500: boom"));
    }
}
