//! A small closed-loop load generator: a fixed number of keep-alive HTTP/1.1 connections
//! on loopback, each sending its next request as soon as the last answer is read.
//!
//! Requests are prepared before the clock starts (bodies already signed), so the
//! generator spends its time on the wire, not on crypto. A run stops by itself when its
//! requests are used up or its time is over, whichever comes first.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// One prepared request.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: hyper::Method,
    pub path: String,
    pub bearer: Option<String>,
    pub body: Option<Bytes>,
}

impl Prepared {
    pub fn get(path: impl Into<String>, bearer: Option<&str>) -> Self {
        Self {
            method: hyper::Method::GET,
            path: path.into(),
            bearer: bearer.map(str::to_owned),
            body: None,
        }
    }

    pub fn post(path: impl Into<String>, bearer: &str, body: String) -> Self {
        Self {
            method: hyper::Method::POST,
            path: path.into(),
            bearer: Some(bearer.to_owned()),
            body: Some(Bytes::from(body)),
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
    let mut sender = None;
    while Instant::now() < deadline {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let prepared = match plan.mode {
            Mode::Once => match requests.get(index) {
                Some(prepared) => prepared,
                None => break,
            },
            Mode::Cycle => &requests[index % requests.len()],
        };
        if sender.is_none() {
            sender = connect(plan.addr).await;
        }
        let Some(conn) = sender.as_mut() else {
            outcome.unexpected += 1;
            outcome
                .first_unexpected
                .get_or_insert_with(|| "could not connect".into());
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut request = Request::builder()
            .method(prepared.method.clone())
            .uri(&prepared.path)
            .header(hyper::header::HOST, "127.0.0.1");
        if let Some(bearer) = &prepared.bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        if prepared.body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let Ok(request) = request.body(Full::new(prepared.body.clone().unwrap_or_default())) else {
            continue;
        };
        let sent = Instant::now();
        let answer = match conn.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.into_body().collect().await {
                    Ok(body) => Ok((status, body.to_bytes())),
                    Err(err) => Err(err.to_string()),
                }
            }
            Err(err) => Err(err.to_string()),
        };
        let took = sent.elapsed();
        match answer {
            Ok((status, body)) => {
                outcome.completed += 1;
                outcome
                    .latencies_us
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                if status != plan.expect_status {
                    outcome.unexpected += 1;
                    outcome.first_unexpected.get_or_insert_with(|| {
                        format!("{status}: {}", String::from_utf8_lossy(&body))
                    });
                }
                if keep_bodies {
                    outcome.bodies.push((index, body));
                }
            }
            Err(err) => {
                outcome.unexpected += 1;
                outcome.first_unexpected.get_or_insert(err);
                sender = None;
            }
        }
    }
    outcome
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Some(sender)
}
