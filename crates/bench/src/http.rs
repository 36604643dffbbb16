//! The HTTP measurements: `keyward serve` (the release binary) on a fresh database,
//! driven by the loopback load generator, with each figure's baseline measured in the
//! same run.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::Connection as _;
use keyward_persistence::testing::TestDb;
use serde_json::json;

use crate::load::{self, Mode, Outcome, Plan, Prepared};
use crate::report::{Report, Row};
use crate::{inproc::unix_now, Curve, SigningKey};

pub const BASE: &str = "/api/policy/v1/enterprises";

/// Rounds of each measurement that has a baseline served by the same process: the
/// measured operation and its baseline take turns, round by round (`/healthz`, verify,
/// get, list, then again; at scale, each operation on the small database, then on the
/// large one), each round lasting its share of the run's duration, so a slow stretch of
/// a shared machine falls on both sides of a ratio rather than on one.
pub const ROUNDS: usize = 2;

/// What every HTTP measurement shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keyward: PathBuf,
    pub duration: Duration,
    pub concurrency: usize,
    /// Single-core raw Ed25519 verifications per second, from the in-process run.
    pub raw_verify_per_second: f64,
    /// Where server logs go.
    pub logs: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }

    /// SQLite always; PostgreSQL when its server answers.
    pub fn available() -> Vec<Backend> {
        let url = std::env::var("KEYWARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut backends = vec![Self::Sqlite];
        if diesel::PgConnection::establish(&url).is_ok() {
            backends.push(Self::Postgres);
        }
        backends
    }

    pub fn fresh(self) -> Result<TestDb, String> {
        match self {
            Self::Sqlite => Ok(TestDb::sqlite()),
            Self::Postgres => TestDb::postgres().ok_or_else(|| "PostgreSQL unreachable".into()),
        }
    }
}

/// A running `keyward serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(
        settings: &Settings,
        db: &str,
        extra: &[&str],
        name: &str,
    ) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(settings.logs.join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&settings.keyward)
            .args(["serve", "--listen", &addr.to_string(), "--database-url", db])
            .args(extra)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", settings.keyward.display()))?;
        let server = Self { child, addr };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if ready(addr) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("the server did not get ready; see {name}.log"))
    }

    /// The peak resident set of the server process so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

/// CPU time (user and system) of one process so far, in microseconds.
fn process_cpu_us(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime
    // and stime fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

/// CPU time of every process named `postgres` on this machine (the database server).
fn postgres_cpu_us() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| process_cpu_us(&pid))
        .sum()
}

/// The CPU a load costs the server, PostgreSQL's processes and the load generator, per
/// request: steadier than throughput on a shared machine, so builds compare by it too.
pub struct CpuMeter {
    pid: String,
    server: u64,
    database: Option<u64>,
    generator: u64,
}

impl CpuMeter {
    pub fn start(server: &Server, backend: Backend) -> Self {
        let pid = server.child.id().to_string();
        Self {
            server: process_cpu_us(&pid).unwrap_or(0),
            database: (backend == Backend::Postgres).then(postgres_cpu_us),
            generator: process_cpu_us("self").unwrap_or(0),
            pid,
        }
    }

    /// The CPU the server, PostgreSQL's processes (on PostgreSQL) and the generator
    /// (this process, which runs nothing else meanwhile) have used since the start.
    fn spent(&self) -> Cpu {
        let server = process_cpu_us(&self.pid)
            .unwrap_or(0)
            .saturating_sub(self.server);
        let database = self
            .database
            .map(|before| postgres_cpu_us().saturating_sub(before));
        let generator = process_cpu_us("self")
            .unwrap_or(0)
            .saturating_sub(self.generator);
        Cpu {
            server,
            database,
            generator,
        }
    }
}

/// CPU time in microseconds: the server's, PostgreSQL's (PostgreSQL only) and the load
/// generator's.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: u64,
    database: Option<u64>,
    generator: u64,
}

/// One operation's answers over every round it ran in, and the CPU they cost.
#[derive(Default)]
pub struct Tally {
    pub answers: Outcome,
    cpu: Cpu,
}

impl Tally {
    /// Adds a round's answers and the CPU spent since `meter` started.
    pub fn add(&mut self, answers: Outcome, meter: &CpuMeter) {
        let spent = meter.spent();
        self.answers.merge(answers);
        self.cpu.server += spent.server;
        if let Some(database) = spent.database {
            *self.cpu.database.get_or_insert(0) += database;
        }
        self.cpu.generator += spent.generator;
    }

    /// "keyward N µs[, PostgreSQL M µs], generator G µs" per answer.
    pub fn per_answer(&self) -> String {
        let n = self.answers.completed.max(1) as f64;
        let mut note = format!("keyward {:.0} µs", self.cpu.server as f64 / n);
        if let Some(database) = self.cpu.database {
            note.push_str(&format!(", PostgreSQL {:.0} µs", database as f64 / n));
        }
        note.push_str(&format!(
            ", generator {:.0} µs",
            self.cpu.generator as f64 / n
        ));
        note
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mean replay batch size, from the server's own metrics.
fn batch_sizes(addr: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return "batches: ?".into();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ =
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (
        value("keyward_replay_batch_size_sum"),
        value("keyward_replay_batch_size_count"),
    ) {
        (Some(sum), Some(count)) if count > 0.0 => {
            format!("{count:.0} commits, {:.1} records each", sum / count)
        }
        _ => "batches: ?".into(),
    }
}

/// True when `GET /readyz` answers 200.
pub fn ready(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Runs the admin CLI on `db`.
pub fn cli(settings: &Settings, db: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(&settings.keyward)
        .args(args)
        .env("DATABASE_URL", db)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "keyward {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Creates `enterprises` with one admin and returns the admin's token.
pub fn bootstrap(settings: &Settings, db: &str, enterprises: &[&str]) -> Result<String, String> {
    cli(
        settings,
        db,
        &["admin", "user", "create", "bench@keyward.test"],
    )?;
    for enterprise in enterprises {
        cli(settings, db, &["admin", "enterprise", "create", enterprise])?;
        cli(
            settings,
            db,
            &[
                "admin",
                "member",
                "add",
                enterprise,
                "bench@keyward.test",
                "--role",
                "admin",
            ],
        )?;
    }
    let issued = cli(
        settings,
        db,
        &["admin", "token", "issue", "bench@keyward.test"],
    )?;
    issued
        .lines()
        .last()
        .map(str::to_owned)
        .ok_or_else(|| "no token printed".into())
}

/// Runs one load on a fresh single-threaded runtime (one core for the generator).
pub fn drive(plan: &Plan, requests: Vec<Prepared>, keep_bodies: bool) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, load::run(plan, Arc::new(requests), keep_bodies))
}

fn plan(settings: &Settings, addr: SocketAddr, mode: Mode, expect: u16) -> Plan {
    Plan {
        addr,
        concurrency: settings.concurrency,
        duration: settings.duration,
        mode,
        expect_status: expect,
    }
}

/// A row from a load outcome.
pub fn row(operation: &str, backend: &str, outcome: &Outcome) -> Row {
    Row {
        operation: operation.into(),
        backend: backend.into(),
        throughput: outcome.throughput(),
        p50_us: f64::from(outcome.quantile_us(0.5)),
        p99_us: f64::from(outcome.quantile_us(0.99)),
        baseline: String::new(),
        ratio: None,
        target: String::new(),
    }
}

/// The register body for a fresh Ed25519 key.
pub fn register_body(key: &SigningKey, key_id: &str) -> String {
    json!({"keyId": key_id, "jwks": {"keys": [key.public_jwk()]}}).to_string()
}

/// Verify bodies answering `eval-{prefix}-{n}` for `n` in `0..count`.
pub fn verify_bodies(key: &SigningKey, kid: &str, prefix: &str, count: usize) -> Vec<String> {
    let iat = unix_now();
    (0..count)
        .map(|n| {
            let evaluation = format!("eval-{prefix}-{n}");
            json!({"token": key.token(kid, &evaluation, iat), "evaluationId": evaluation})
                .to_string()
        })
        .collect()
}

pub(crate) fn check(outcome: &Outcome, what: &str) -> Result<(), String> {
    if outcome.completed == 0 || outcome.unexpected > 0 {
        return Err(format!(
            "{what}: {} done, {} unexpected; first: {}",
            outcome.completed,
            outcome.unexpected,
            outcome.first_unexpected.as_deref().unwrap_or("-")
        ));
    }
    Ok(())
}

fn count_valid(answers: &[(usize, bytes::Bytes)]) -> usize {
    answers.iter().filter(|(_, body)| is_valid(body)).count()
}

/// The first of `answers` that is not `valid: true`.
fn first_not_valid(answers: &[(usize, bytes::Bytes)]) -> Option<String> {
    answers
        .iter()
        .find(|(_, body)| !is_valid(body))
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
}

/// True when a verify answer says `valid: true`.
fn is_valid(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["valid"] == serde_json::Value::Bool(true))
}

/// How many verify bodies to prepare: enough for the run at a rate above any this
/// machine reaches, capped to keep preparation short.
fn verify_budget(settings: &Settings) -> usize {
    let rate = (settings.raw_verify_per_second * 1.5).max(5_000.0);
    ((rate * settings.duration.as_secs_f64()) as usize).min(400_000)
}

/// Healthz, verify, get, list and register on one backend, plus the raw insert baseline.
pub fn run_backend(
    settings: &Settings,
    backend: Backend,
    report: &mut Report,
) -> Result<(), String> {
    let db = backend.fresh()?;
    let url = db.url_string();
    let writers: Vec<String> = (0..16).map(|n| format!("bench-r{n}")).collect();
    let writers: Vec<&str> = writers.iter().map(String::as_str).collect();
    let mut all = vec!["acme", "bench-one"];
    all.extend(writers.iter().copied());
    let token = bootstrap(settings, &url, &all)?;
    let server = Server::start(
        settings,
        &url,
        &["--max-active-keys", "10000"],
        &format!("serve-{}", backend.name()),
    )?;
    let keys_path = format!("{BASE}/acme/webhooks/keys");
    // acme holds 20 keys, the first of which signs.
    let signer = SigningKey::new(Curve::Ed25519, 1);
    let mut setup = vec![Prepared::post(
        &keys_path,
        &token,
        register_body(&signer, "bench-eddsa"),
    )];
    for n in 1..20 {
        let key = SigningKey::new(Curve::Ed25519, 1000 + n);
        setup.push(Prepared::post(
            &keys_path,
            &token,
            register_body(&key, &format!("k-{n}")),
        ));
    }
    let once = Plan {
        concurrency: 1,
        ..plan(settings, server.addr, Mode::Once, 201)
    };
    check(&drive(&once, setup, false), "registering the bench keys")?;

    let name = backend.name();
    // Verify: unique evaluationIds, every answer must be valid (a durable record each).
    let bodies = verify_bodies(&signer, "bench-eddsa", name, verify_budget(settings));
    let verify_path = format!("{BASE}/acme/webhooks/responses/verify");
    let mut verifications: Vec<Vec<Prepared>> = vec![Vec::new(); ROUNDS];
    let per_round = bodies.len().div_ceil(ROUNDS);
    for (n, body) in bodies.into_iter().enumerate() {
        verifications[n / per_round].push(Prepared::post(&verify_path, &token, body));
    }
    let reads = [
        Prepared::get(format!("{keys_path}/bench-eddsa"), Some(&token)),
        Prepared::get(keys_path.clone(), Some(&token)),
    ];
    let round = |mode| Plan {
        duration: settings.duration / ROUNDS as u32,
        ..plan(settings, server.addr, mode, 200)
    };
    let [mut healthz, mut verify, mut get, mut list] = std::array::from_fn(|_| Tally::default());
    let (mut valid, mut first_invalid, mut peak_rss_kib) = (0, None, 0);
    for requests in verifications {
        let meter = CpuMeter::start(&server, backend);
        let answers = drive(
            &round(Mode::Cycle),
            vec![Prepared::get("/healthz", None)],
            false,
        );
        check(&answers, "/healthz")?;
        healthz.add(answers, &meter);

        let meter = CpuMeter::start(&server, backend);
        let mut answers = drive(&round(Mode::Once), requests, true);
        check(&answers, "verify")?;
        // The answers are read after the CPU is metered: reading them is no request's.
        let bodies = std::mem::take(&mut answers.bodies);
        verify.add(answers, &meter);
        valid += count_valid(&bodies);
        first_invalid = first_invalid.or_else(|| first_not_valid(&bodies));
        peak_rss_kib = server.peak_rss_kib().unwrap_or(0);

        for (read, into, what) in [
            (&reads[0], &mut get, "GET key"),
            (&reads[1], &mut list, "GET keys"),
        ] {
            let meter = CpuMeter::start(&server, backend);
            let answers = drive(&round(Mode::Cycle), vec![read.clone()], false);
            check(&answers, what)?;
            into.add(answers, &meter);
        }
    }
    let health_rate = healthz.answers.throughput();
    let mut r = row("GET /healthz", name, &healthz.answers);
    r.baseline = format!(
        "(baseline, {ROUNDS} rounds taking turns with verify, get and list); CPU/req {}",
        healthz.per_answer()
    );
    report.push(r);

    let mut r = row("POST verify EdDSA", name, &verify.answers);
    let p50 = r.p50_us.max(1.0);
    r.baseline = format!(
        "raw Ed25519 (fastest crate) 1 core {:.0}/s; /healthz {health_rate:.0}/s; p99/p50 {:.1}; {valid}/{} valid; CPU/req {}; {}; peak RSS {} MiB",
        settings.raw_verify_per_second,
        r.p99_us / p50,
        verify.answers.completed,
        verify.per_answer(),
        batch_sizes(server.addr),
        peak_rss_kib / 1024
    );
    r.ratio = Some(verify.answers.throughput() / settings.raw_verify_per_second);
    r.target = "≥ 0.6 and p99 ≤ 5× p50".into();
    report.push(r);
    if valid as u64 != verify.answers.completed {
        report.note(format!(
            "{name}: {} of {} unique verifications were not valid; first answer: {}",
            verify.answers.completed - valid as u64,
            verify.answers.completed,
            first_invalid.unwrap_or_default()
        ));
    }

    // Reads, against the trivial route.
    for (operation, read) in [("GET key", get), ("GET keys (first page, 20 keys)", list)] {
        let mut r = row(operation, name, &read.answers);
        r.baseline = format!("/healthz {health_rate:.0}/s; CPU/req {}", read.per_answer());
        r.ratio = Some(read.answers.throughput() / health_rate);
        r.target = "≥ 0.5".into();
        report.push(r);
    }

    // Register: unique keys spread over sixteen enterprises, then into one enterprise
    // alone, up to the server's key limit (a burst of one enterprise's registrations).
    let insert_rate = raw_insert_rate(&db, settings)?;
    let writes_rate = registration_writes_rate(&db, settings)?;
    let one = ["bench-one"];
    for (run, (operation, enterprises, count)) in [
        ("POST register", &writers[..], 40_000),
        ("POST register, one enterprise", &one[..], 10_000),
    ]
    .into_iter()
    .enumerate()
    {
        let requests = (0..count)
            .map(|n| {
                let key = SigningKey::new(Curve::Ed25519, 1_000_000 * (run as u64 + 1) + n as u64);
                Prepared::post(
                    format!(
                        "{BASE}/{}/webhooks/keys",
                        enterprises[n % enterprises.len()]
                    ),
                    &token,
                    register_body(&key, &format!("r{run}-{n}")),
                )
            })
            .collect();
        let meter = CpuMeter::start(&server, backend);
        let answers = drive(
            &plan(settings, server.addr, Mode::Once, 201),
            requests,
            false,
        );
        check(&answers, operation)?;
        let mut register = Tally::default();
        register.add(answers, &meter);
        let rate = register.answers.throughput();
        let mut r = row(operation, name, &register.answers);
        r.baseline = format!(
            "raw durable insert {insert_rate:.0}/s; the same writes without keyward {writes_rate:.0}/s (keyward {:.2}× of it); CPU/req {}",
            rate / writes_rate,
            register.per_answer()
        );
        r.ratio = Some(rate / insert_rate);
        r.target = "≥ 0.5".into();
        report.push(r);
    }
    Ok(())
}

/// Runs one SQL statement on a connection of its own.
type Exec = Box<dyn FnMut(&str) -> Result<(), String> + Send>;

/// Single-row durable inserts per second into a scratch table of the same database,
/// with the server's settings, at the load's concurrency.
fn raw_insert_rate(db: &TestDb, settings: &Settings) -> Result<f64, String> {
    raw_rate(
        db,
        settings,
        "CREATE TABLE IF NOT EXISTS bench_raw_inserts (id TEXT PRIMARY KEY, at BIGINT NOT NULL)"
            .into(),
        |t, n| format!("INSERT INTO bench_raw_inserts (id, at) VALUES ('{t}-{n}', {n})"),
    )
}

/// A registration's writes without keyward: the key row, its audit event and the
/// guarded active-key counter, in one durable transaction each, sent as SQL text the
/// way the raw inserts are, into enterprises of their own. What the database alone
/// makes of the work a registration must do.
fn registration_writes_rate(db: &TestDb, settings: &Settings) -> Result<f64, String> {
    let enterprises = 16;
    let setup = (0..enterprises)
        .map(|e| {
            format!(
                "INSERT INTO enterprises (id, name, created_at) \
                 VALUES ('bench-w{e}', 'bench-w{e}', 0)"
            )
        })
        .collect::<Vec<_>>()
        .join(";");
    let sqlite = db.sqlite_path().is_some();
    let begin = if sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
    raw_rate(db, settings, setup, move |t, n| {
        let e = format!("bench-w{}", (t + n as usize) % enterprises);
        // The count of ACTIVE keys, guarded: SQLite's in the enterprise's row,
        // PostgreSQL's in one of its stripes.
        let count = if sqlite {
            format!(
                "UPDATE enterprises SET active_keys = active_keys + 1 \
                 WHERE id = '{e}' AND active_keys < 1000000000"
            )
        } else {
            format!(
                "INSERT INTO active_key_stripes AS s (enterprise_id, stripe, active) \
                 VALUES ('{e}', {}, 1) ON CONFLICT (enterprise_id, stripe) \
                 DO UPDATE SET active = s.active + 1 WHERE s.active < 976562",
                (t * 7919 + n as usize * 104_729) % 1024
            )
        };
        let id = format!("00000000-0000-4000-8000-{:04x}{:08x}", t, n);
        let jwk =
            r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        // SQLite keeps an enterprise's keys in the order of a seq the writer gives.
        let (seq_column, seq) = if sqlite {
            (
                "seq, ",
                format!("(SELECT coalesce(max(seq), 0) + 1 FROM webhook_keys WHERE enterprise_id = '{e}'), "),
            )
        } else {
            ("", String::new())
        };
        format!(
            "{begin}; \
             INSERT INTO webhook_keys ({seq_column}id, enterprise_id, key_id, key_name, algorithm, jwks_uri, \
               jwk, thumbprint, status, created_at, created_by) \
             VALUES ({seq}'{id}', '{e}', 'w-{t}-{n}', 'bench key', 'EdDSA', NULL, '{jwk}', \
               'thumbprint-{t}-{n}', 'ACTIVE', {n}, 'bench@keyward.test'); \
             INSERT INTO audit_events (at, enterprise_id, key_id, actor, action, outcome, request_id) \
             VALUES ({n}, '{e}', 'w-{t}-{n}', 'bench@keyward.test', 'REGISTER', 'OK', '{id}'); \
             {count}; \
             COMMIT"
        )
    })
}

/// Runs `statement(thread, n)` (each a durable transaction of its own) on one
/// connection per thread, at the load's concurrency, for the load's duration, after
/// `setup` once; returns how many per second.
fn raw_rate(
    db: &TestDb,
    settings: &Settings,
    setup: String,
    statement: impl Fn(usize, u64) -> String + Send + Sync + 'static,
) -> Result<f64, String> {
    let url = db.url_string();
    let sqlite = db.sqlite_path().cloned();
    let connect = move || -> Result<Exec, String> {
        match &sqlite {
            Some(path) => {
                let mut conn = diesel::SqliteConnection::establish(&path.display().to_string())
                    .map_err(|e| e.to_string())?;
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                     PRAGMA busy_timeout = 10000;",
                )
                .map_err(|e| e.to_string())?;
                Ok(Box::new(move |sql: &str| {
                    conn.batch_execute(sql).map_err(|e| e.to_string())
                }))
            }
            None => {
                let mut conn =
                    diesel::PgConnection::establish(&keyward_persistence::libpq_url(&url))
                        .map_err(|e| e.to_string())?;
                Ok(Box::new(move |sql: &str| {
                    conn.batch_execute(sql).map_err(|e| e.to_string())
                }))
            }
        }
    };
    connect()?(&setup)?;
    let statement = Arc::new(statement);
    let deadline = Instant::now() + settings.duration;
    let start = Instant::now();
    let threads: Vec<_> = (0..settings.concurrency)
        .map(|t| {
            let mut exec = connect();
            let statement = statement.clone();
            std::thread::spawn(move || -> Result<u64, String> {
                let exec = exec.as_mut().map_err(|e| e.clone())?;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    exec(&statement(t, n))?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for thread in threads {
        total += thread
            .join()
            .map_err(|_| "a database load thread panicked")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Time from exec to the first 200 from `/readyz`, on an existing migrated SQLite file.
pub fn startup(settings: &Settings) -> Result<Row, String> {
    let db = TestDb::sqlite();
    let url = db.url_string();
    let mut times = Vec::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let start = Instant::now();
        let mut child = Command::new(&settings.keyward)
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--database-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut took = None;
        while start.elapsed() < Duration::from_secs(10) {
            if ready(addr) {
                took = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        times.push(took.ok_or("the server never answered /readyz")?);
    }
    times.sort();
    Ok(Row {
        operation: "start-up: exec to /readyz 200".into(),
        backend: "SQLite".into(),
        throughput: 0.0,
        p50_us: times[times.len() / 2].as_secs_f64() * 1e6,
        p99_us: times[times.len() - 1].as_secs_f64() * 1e6,
        baseline: "5 starts; p99 column is the slowest".into(),
        ratio: None,
        target: "≤ 200 ms".into(),
    })
}

/// Verification load split over two servers on one PostgreSQL database; each
/// evaluationId is sent to both, and at most one may be valid.
pub fn two_processes(settings: &Settings, report: &mut Report) -> Result<(), String> {
    let db = Backend::Postgres.fresh()?;
    let url = db.url_string();
    let token = bootstrap(settings, &url, &["acme"])?;
    let a = Server::start(settings, &url, &[], "serve-pg-a")?;
    let b = Server::start(settings, &url, &[], "serve-pg-b")?;
    let signer = SigningKey::new(Curve::Ed25519, 1);
    let keys_path = format!("{BASE}/acme/webhooks/keys");
    let once = Plan {
        concurrency: 1,
        ..plan(settings, a.addr, Mode::Once, 201)
    };
    check(
        &drive(
            &once,
            vec![Prepared::post(
                &keys_path,
                &token,
                register_body(&signer, "bench-eddsa"),
            )],
            false,
        ),
        "registering the key",
    )?;
    let bodies = verify_bodies(&signer, "bench-eddsa", "two", verify_budget(settings) / 2);
    let verify_path = format!("{BASE}/acme/webhooks/responses/verify");
    let requests: Vec<Prepared> = bodies
        .into_iter()
        .map(|body| Prepared::post(&verify_path, &token, body))
        .collect();
    let half = Plan {
        concurrency: settings.concurrency / 2,
        ..plan(settings, a.addr, Mode::Once, 200)
    };
    let plan_b = Plan {
        addr: b.addr,
        ..half.clone()
    };
    let requests_b = requests.clone();
    let start = Instant::now();
    let other = std::thread::spawn(move || drive(&plan_b, requests_b, true));
    let first = drive(&half, requests, true);
    let second = other
        .join()
        .map_err(|_| "the second load generator panicked")?;
    let elapsed = start.elapsed();
    check(&first, "verify on process A")?;
    check(&second, "verify on process B")?;
    let mut valid_by_index = std::collections::HashMap::<usize, u32>::new();
    for (index, body) in first.bodies.iter().chain(&second.bodies) {
        if is_valid(body) {
            *valid_by_index.entry(*index).or_default() += 1;
        }
    }
    let replays_accepted = valid_by_index.values().filter(|n| **n > 1).count();
    let completed = first.completed + second.completed;
    let mut latencies = first.latencies_us.clone();
    latencies.extend(&second.latencies_us);
    latencies.sort_unstable();
    let combined = Outcome {
        completed,
        elapsed,
        latencies_us: latencies,
        ..Outcome::default()
    };
    let mut r = row("POST verify EdDSA, 2 processes", "PostgreSQL", &combined);
    r.baseline = format!(
        "A {:.0}/s + B {:.0}/s; {} evaluations valid once; replays accepted: {replays_accepted}",
        first.throughput(),
        second.throughput(),
        valid_by_index.len()
    );
    r.target = "replays accepted = 0".into();
    report.push(r);
    if replays_accepted > 0 {
        report.note(format!(
            "{replays_accepted} evaluationIds were accepted twice across two processes"
        ));
    }
    Ok(())
}
