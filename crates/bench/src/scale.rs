//! Scale: the same reads and verifications on a database of 1,000 keys and on one of
//! 1,000,000 keys over 10,000 enterprises, bulk-loaded here (not through HTTP).
//!
//! Every enterprise holds `per` keys `k-0`..: the first 20 ACTIVE, the rest REVOKED
//! (the default limit of active keys), all administered by one bench user. Each ACTIVE
//! key is an enterprise's own, as registered keys are: a verification at scale reads
//! its key and parses it, as a service's would, rather than finding the key material
//! parsed for another enterprise. The REVOKED keys, only ever listed, are shared: key
//! `k-j` (j ≥ 20) of every enterprise is the public half of signing key `j`, so a
//! million keys load without a million key generations.

use diesel::connection::SimpleConnection as _;
use diesel::sql_types::{Binary, Text};
use diesel::{Connection as _, RunQueryDsl as _};
use keyward_domain::auth::IssuedToken;
use keyward_domain::PublicJwk;
use keyward_persistence::testing::TestDb;
use serde_json::json;

use crate::http::{self, drive, Backend, CpuMeter, Server, Settings, Tally, BASE, ROUNDS};
use crate::load::{Mode, Plan, Prepared};
use crate::report::{Report, Row};
use crate::{inproc::unix_now, Curve, SigningKey};

const ACTIVE_PER_ENTERPRISE: usize = 20;

/// How many of an enterprise's `per` keys are ACTIVE.
fn active_of(per: usize) -> usize {
    ACTIVE_PER_ENTERPRISE.min(per)
}

/// Seeds of the ACTIVE keys start here, far from the shared keys' seeds.
const ACTIVE_SEED: u64 = 1 << 32;

/// Enterprise `e`'s ACTIVE key `k-j`, the same every run.
fn active_signer(e: usize, j: usize) -> SigningKey {
    SigningKey::new(
        Curve::Ed25519,
        ACTIVE_SEED + (e * ACTIVE_PER_ENTERPRISE + j) as u64,
    )
}

/// A small pseudo-random sequence (the same every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// A bulk-loaded database and the server in front of it.
struct Loaded {
    backend: Backend,
    enterprises: usize,
    per: usize,
    token: String,
    load_seconds: f64,
    /// The requests' pseudo-random choices (the same sequence on every run).
    random: Lcg,
    /// Every enterprise's ACTIVE signing keys, enterprise by enterprise.
    active: Vec<SigningKey>,
    // The server stops before its database is dropped (fields drop in order).
    server: Server,
    _db: TestDb,
}

impl Loaded {
    fn keys(&self) -> usize {
        self.enterprises * self.per
    }
}

/// One database's measurements, every round's answers together.
#[derive(Default)]
struct Measured {
    get: Tally,
    list: Tally,
    verify: Tally,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    List,
    Verify,
}

/// The order a bulk load writes keys in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOrder {
    /// Each enterprise's keys together, one enterprise after another.
    ByEnterprise,
    /// In turns: every enterprise's first key, then every one's second, and so on, as a
    /// service's enterprises register keys over time.
    InTurns,
}

pub fn run(
    settings: &Settings,
    backends: &[Backend],
    enterprises: usize,
    per: usize,
    order: LoadOrder,
    report: &mut Report,
) -> Result<(), String> {
    let signers: Vec<SigningKey> = (0..per)
        .map(|j| SigningKey::new(Curve::Ed25519, 5_000 + j as u64))
        .collect();
    for &backend in backends {
        let mut small = load(settings, backend, 10, per, order, &signers)?;
        let mut large = load(settings, backend, enterprises, per, order, &signers)?;
        let (mut at_small, mut at_large) = (Measured::default(), Measured::default());
        for round in 0..ROUNDS {
            for op in [Op::Get, Op::List, Op::Verify] {
                run_op(settings, &mut small, op, round, &mut at_small)?;
                run_op(settings, &mut large, op, round, &mut at_large)?;
            }
        }
        for (op, a, b) in [
            ("GET key", &at_small.get, &at_large.get),
            ("GET keys (first page)", &at_small.list, &at_large.list),
            ("POST verify EdDSA", &at_small.verify, &at_large.verify),
        ] {
            let mut r = http::row(
                &format!("scale: {op} at {} keys", large.keys()),
                backend.name(),
                &b.answers,
            );
            let small_p99 = f64::from(a.answers.quantile_us(0.99)).max(1.0);
            r.baseline = format!(
                "{} keys: {:.0}/s, p99 {small_p99:.0} µs (ratio is p99 over p99; {ROUNDS} rounds each, taking turns); CPU/req {} (at {} keys: {})",
                small.keys(),
                a.answers.throughput(),
                b.per_answer(),
                small.keys(),
                a.per_answer(),
            );
            r.ratio = Some(r.p99_us / small_p99);
            r.target = "≤ 1.5".into();
            report.push(r);
        }
        let peak_mib = |loaded: &Loaded| loaded.server.peak_rss_kib().unwrap_or(0) / 1024;
        report.push(Row {
            operation: format!("scale: peak RSS of keyward serve at {} keys", large.keys()),
            backend: backend.name().into(),
            throughput: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            baseline: format!(
                "{} MiB (at {} keys: {} MiB); bulk load took {:.0} s, keys loaded {}",
                peak_mib(&large),
                small.keys(),
                peak_mib(&small),
                large.load_seconds,
                match order {
                    LoadOrder::ByEnterprise => "enterprise by enterprise",
                    LoadOrder::InTurns => "in turns across enterprises",
                },
            ),
            ratio: None,
            target: "< 64 MiB".into(),
        });
    }
    Ok(())
}

/// Bulk-loads `enterprises` × `per` keys into a fresh database and starts a server on it.
fn load(
    settings: &Settings,
    backend: Backend,
    enterprises: usize,
    per: usize,
    order: LoadOrder,
    signers: &[SigningKey],
) -> Result<Loaded, String> {
    let db = backend.fresh()?;
    let active: Vec<SigningKey> = (0..enterprises)
        .flat_map(|e| (0..active_of(per)).map(move |j| active_signer(e, j)))
        .collect();
    let started = std::time::Instant::now();
    let token = bulk_load(&db, enterprises, order, &active, signers)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let server = Server::start(
        settings,
        &db.url_string(),
        &[],
        &format!("serve-scale-{}-{enterprises}", backend.name()),
    )?;
    Ok(Loaded {
        backend,
        enterprises,
        per,
        token,
        load_seconds,
        random: Lcg(42),
        active,
        server,
        _db: db,
    })
}

/// Runs round `round` of `op` on `db`, adding its answers to `into`.
fn run_op(
    settings: &Settings,
    db: &mut Loaded,
    op: Op,
    round: usize,
    into: &mut Measured,
) -> Result<(), String> {
    let plan = |mode| Plan {
        addr: db.server.addr,
        concurrency: settings.concurrency,
        duration: settings.duration / ROUNDS as u32,
        mode,
        expect_status: 200,
    };
    let (enterprises, token) = (db.enterprises, db.token.clone());
    let random = &mut db.random;
    let (requests, mode, into) = match op {
        Op::Get => {
            let gets = (0..20_000)
                .map(|_| {
                    let e = random.below(enterprises);
                    let j = random.below(db.per);
                    Prepared::get(format!("{BASE}/e{e:05}/webhooks/keys/k-{j}"), Some(&token))
                })
                .collect();
            (gets, Mode::Cycle, &mut into.get)
        }
        Op::List => {
            let lists = (0..20_000)
                .map(|_| {
                    Prepared::get(
                        format!("{BASE}/e{:05}/webhooks/keys", random.below(enterprises)),
                        Some(&token),
                    )
                })
                .collect();
            (lists, Mode::Cycle, &mut into.list)
        }
        Op::Verify => {
            // Each round signs with keys of its own (a share of every enterprise's active
            // keys): no round verifies with a key an earlier round has cached and stamped.
            let share = active_of(db.per) / ROUNDS;
            let iat = unix_now();
            let count = ((settings.raw_verify_per_second * 1.5).max(5_000.0)
                * settings.duration.as_secs_f64()
                / ROUNDS as f64) as usize;
            let verifies = (0..count.min(300_000 / ROUNDS))
                .map(|n| {
                    let e = random.below(enterprises);
                    let j = round * share + random.below(share);
                    let evaluation = format!("scale-{round}-{n}");
                    let signer = &db.active[e * active_of(db.per) + j];
                    let body = json!({
                        "token": signer.token(&format!("k-{j}"), &evaluation, iat),
                        "evaluationId": evaluation,
                    });
                    Prepared::post(
                        format!("{BASE}/e{e:05}/webhooks/responses/verify"),
                        &token,
                        body.to_string(),
                    )
                })
                .collect();
            (verifies, Mode::Once, &mut into.verify)
        }
    };
    // Measured from here: the requests are prepared (and signed) beforehand.
    let meter = CpuMeter::start(&db.server, db.backend);
    let outcome = drive(&plan(mode), requests, false);
    http::check(&outcome, &format!("scale {op:?} at {} keys", db.keys()))?;
    into.add(outcome, &meter);
    Ok(())
}

/// Loads enterprises `e00000`.., their keys and one admin of them all; returns the
/// admin's bearer token.
fn bulk_load(
    db: &TestDb,
    enterprises: usize,
    order: LoadOrder,
    active_keys: &[SigningKey],
    signers: &[SigningKey],
) -> Result<String, String> {
    let err = |e: diesel::result::Error| e.to_string();
    let issued = IssuedToken::from_random([0x5c; 8], [0x3d; 32]);
    let now = unix_now() * 1000;
    let active = active_of(signers.len());
    let postgres = db.sqlite_path().is_none();
    // Statements differ only in how each backend counts and formats.
    let (series, id_of) = if postgres {
        (
            format!("SELECT n FROM generate_series(0, {}) AS n", enterprises - 1),
            "lpad(to_hex(s.n), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(s.j), 12, '0')",
        )
    } else {
        (
            format!(
                "WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < {}) SELECT n FROM c",
                enterprises - 1
            ),
            "printf('%08x-0000-4000-8000-%012x', s.n, s.j)",
        )
    };
    let enterprise_of = if postgres {
        "'e' || lpad(s.n::text, 5, '0')"
    } else {
        "printf('e%05d', s.n)"
    };
    // Each enterprise's count of ACTIVE keys: SQLite keeps it in the enterprise's row,
    // PostgreSQL in stripes of the count (one key each here).
    let (counted, count, stripes) = if postgres {
        (
            "",
            String::new(),
            format!(
                "INSERT INTO active_key_stripes (enterprise_id, stripe, active)
                   SELECT {enterprise_of}, g, 1 FROM bench_series s
                   CROSS JOIN generate_series(0, {active} - 1) AS g;"
            ),
        )
    } else {
        ("active_keys, ", format!("{active}, "), String::new())
    };
    let script = format!(
        "CREATE TABLE bench_series (n BIGINT NOT NULL);
         INSERT INTO bench_series (n) {series};
         CREATE TABLE bench_jwks (j BIGINT NOT NULL, jwk TEXT NOT NULL, thumbprint TEXT NOT NULL);
         CREATE TABLE bench_keys (n BIGINT NOT NULL, j BIGINT NOT NULL, jwk TEXT NOT NULL, thumbprint TEXT NOT NULL);
         INSERT INTO users (id, email, created_at) VALUES ('00000000-0000-4000-8000-00000000be9c', 'bench@keyward.test', {now});
         INSERT INTO enterprises (id, name, {counted}created_at)
           SELECT {enterprise_of}, {enterprise_of}, {count}{now} FROM bench_series s;
         {stripes}
         INSERT INTO memberships (enterprise_id, user_id, role, created_at)
           SELECT {enterprise_of}, '00000000-0000-4000-8000-00000000be9c', 'admin', {now} FROM bench_series s;"
    );
    let order = match order {
        LoadOrder::ByEnterprise => "s.n, s.j",
        LoadOrder::InTurns => "s.j, s.n",
    };
    // SQLite orders an enterprise's keys by a seq the loader gives; PostgreSQL's is
    // generated.
    let (seq_column, seq) = if postgres {
        ("", "")
    } else {
        ("seq, ", "s.j + 1, ")
    };
    let keys = format!(
        "INSERT INTO webhook_keys ({seq_column}id, enterprise_id, key_id, key_name, algorithm, jwk, thumbprint, status, created_at, created_by, revoked_at, revoked_by)
           SELECT {seq}{id_of}, {enterprise_of}, 'k-' || s.j, 'k-' || s.j, 'EdDSA', s.jwk, s.thumbprint,
                  CASE WHEN s.j < {active} THEN 'ACTIVE' ELSE 'REVOKED' END, {now}, 'bench@keyward.test',
                  CASE WHEN s.j < {active} THEN NULL ELSE {now} END,
                  CASE WHEN s.j < {active} THEN NULL ELSE 'bench@keyward.test' END
           FROM bench_keys s ORDER BY {order};
         DROP TABLE bench_series;
         DROP TABLE bench_jwks;
         DROP TABLE bench_keys;"
    );
    let stored = |signer: &SigningKey| -> Result<(String, String), String> {
        let jwk =
            PublicJwk::from_stored(&signer.public_jwk().to_string()).map_err(|e| e.to_string())?;
        Ok((
            jwk.to_canonical_json(),
            jwk.thumbprint().as_str().to_owned(),
        ))
    };
    // The shared REVOKED keys, then every enterprise's own ACTIVE ones, as SQL rows.
    // (Canonical JWKs and thumbprints are base64url, names and punctuation: no quote.)
    let jwks: Vec<(i64, String, String)> = signers
        .iter()
        .enumerate()
        .skip(active)
        .map(|(j, signer)| stored(signer).map(|(jwk, thumbprint)| (j as i64, jwk, thumbprint)))
        .collect::<Result<_, String>>()?;
    let mut own_rows = Vec::with_capacity(active_keys.len());
    for (i, signer) in active_keys.iter().enumerate() {
        let (jwk, thumbprint) = stored(signer)?;
        if jwk.contains('\'') || thumbprint.contains('\'') {
            return Err("a JWK with a quote cannot be loaded".into());
        }
        own_rows.push(format!(
            "({}, {}, '{jwk}', '{thumbprint}')",
            i / active,
            i % active
        ));
    }
    let own_keys: Vec<String> = own_rows
        .chunks(500)
        .map(|rows| {
            format!(
                "INSERT INTO bench_keys (n, j, jwk, thumbprint) VALUES {};",
                rows.join(", ")
            )
        })
        .collect();
    let shared_keys = "INSERT INTO bench_keys (n, j, jwk, thumbprint)
           SELECT s.n, j.j, j.jwk, j.thumbprint FROM bench_series s CROSS JOIN bench_jwks j;";
    let token_sql = "INSERT INTO api_tokens (id, user_id, token_hash, created_at) VALUES ($1, '00000000-0000-4000-8000-00000000be9c', $2, 0)";
    macro_rules! load {
        ($conn:expr) => {{
            let conn = &mut $conn;
            conn.batch_execute(&script).map_err(err)?;
            for (j, jwk, thumbprint) in &jwks {
                diesel::sql_query(format!(
                    "INSERT INTO bench_jwks (j, jwk, thumbprint) VALUES ({j}, $1, $2)"
                ))
                .bind::<Text, _>(jwk)
                .bind::<Text, _>(thumbprint)
                .execute(conn)
                .map_err(err)?;
            }
            conn.batch_execute(shared_keys).map_err(err)?;
            for statement in &own_keys {
                conn.batch_execute(statement).map_err(err)?;
            }
            diesel::sql_query(token_sql)
                .bind::<Text, _>(&issued.id)
                .bind::<Binary, _>(&issued.hash)
                .execute(conn)
                .map_err(err)?;
            conn.batch_execute(&keys).map_err(err)?;
        }};
    }
    match db.sqlite_path() {
        Some(path) => {
            let mut conn = diesel::SqliteConnection::establish(&path.display().to_string())
                .map_err(|e| e.to_string())?;
            conn.batch_execute("PRAGMA journal_mode = WAL; BEGIN;")
                .map_err(err)?;
            load!(conn);
            conn.batch_execute("COMMIT; PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
                .map_err(err)?;
        }
        None => {
            let mut conn =
                diesel::PgConnection::establish(&db.url_string()).map_err(|e| e.to_string())?;
            conn.batch_execute("BEGIN;").map_err(err)?;
            load!(conn);
            conn.batch_execute("COMMIT").map_err(err)?;
            // Measure the steady state, not the aftermath of the load: visibility map and
            // statistics current, the load's dirty pages written out.
            for statement in ["VACUUM ANALYZE", "CHECKPOINT"] {
                conn.batch_execute(statement).map_err(err)?;
            }
        }
    }
    Ok(issued.token)
}
