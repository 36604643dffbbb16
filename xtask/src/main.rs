//! `cargo xtask`: keyward's chores in one small program with no dependencies.
//!
//! - `openapi [--check]`  write `openapi/openapi.json` from the code, or fail if it differs
//! - `migrate`            apply migrations to `DATABASE_URL` (default `sqlite://keyward.db`)
//! - `contract-test`      run the real binary against the committed document
//! - `contract-test --fuzz [--max-examples N]`  schemathesis (from PyPI, in a
//!   virtualenv under `target/`) against a running `keyward serve`, every check on
//! - `test`               everything CI runs: fmt, clippy, layering, tests on SQLite and
//!   PostgreSQL, the document check and the contract test
//! - `fuzz TARGET [--seconds N]`  a bounded coverage-guided run of a fuzz target
//!   (`token_parser`, `jwk_validator`, `register_body`), seeded from `fuzz/corpus`
//! - `bench [--quick] [--skip-scale]`  criterion's in-process view of verification, then
//!   `keyward-bench`: the interleaved in-process ratios, HTTP load on loopback against the
//!   release binary on SQLite and PostgreSQL, start-up, two processes and scale; prints
//!   the table and writes `target/bench/report.md`. `--quick` is for development.

use std::env;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("openapi") => openapi(args.iter().any(|a| a == "--check")),
        Some("migrate") => migrate(),
        Some("contract-test") if args.iter().any(|a| a == "--fuzz") => {
            schema_fuzz(examples_arg(&args))
        }
        Some("contract-test") => contract_test(),
        Some("test") => test(),
        Some("fuzz") => fuzz(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => Err(
            "usage: cargo xtask <openapi [--check] | migrate | contract-test | test | bench>"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Everything is built with the release profile: benchmarks measure what ships.
fn bench(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    let mut build = cargo();
    build.args(["build", "--release", "-p", "keyward", "-p", "keyward-bench"]);
    run(build, "building the release binaries")?;
    let mut criterion = cargo();
    criterion.args(["bench", "-p", "keyward-bench", "--bench", "verify", "--"]);
    if quick {
        criterion.args(["--warm-up-time", "0.3", "--measurement-time", "0.5"]);
    }
    run(criterion, "criterion: verification per curve")?;
    let mut suite = Command::new(root().join("target/release/keyward-bench"));
    suite.current_dir(root()).args(args);
    run(
        suite,
        "keyward-bench: ratios, HTTP load, start-up, two processes, scale",
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result {
    eprintln!("xtask: {what}");
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn output(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{what}: {e}"))
}

/// Writes the generated document, or with `check` fails when the committed one differs.
fn openapi(check: bool) -> Result {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "keyward", "--", "openapi"]);
    let generated = output(cmd, "generate the OpenAPI document")?;
    let path = root().join("openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        eprintln!("xtask: openapi/openapi.json is up to date");
        return if check {
            validate_openapi(&path)
        } else {
            Ok(())
        };
    }
    if check {
        return Err(
            "openapi/openapi.json differs from the code; run `cargo xtask openapi` and commit"
                .into(),
        );
    }
    std::fs::create_dir_all(root().join("openapi")).map_err(|e| e.to_string())?;
    std::fs::write(&path, generated).map_err(|e| format!("write {}: {e}", path.display()))?;
    eprintln!("xtask: wrote openapi/openapi.json");
    Ok(())
}

/// Runs a fuzz target for a bounded time. New inputs go to `target/fuzz-corpus`; the
/// committed seeds in `fuzz/corpus` are only read. cargo-fuzz is installed if missing;
/// on a stable toolchain the sanitizer flags are enabled with RUSTC_BOOTSTRAP.
fn fuzz(args: &[String]) -> Result {
    let target = args
        .first()
        .ok_or("usage: cargo xtask fuzz TARGET [--seconds N]")?;
    let seconds = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("--seconds takes a number")?,
        None => 60,
    };
    let has_cargo_fuzz = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        let mut install = cargo();
        install.args(["install", "cargo-fuzz", "--locked"]);
        run(install, "install cargo-fuzz")?;
    }
    let work = root().join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let seeds = root().join("fuzz/corpus").join(target);
    let mut cmd = cargo();
    cmd.current_dir(root().join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz")
        .arg("run")
        .arg(target)
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048");
    run(cmd, &format!("fuzz {target} for {seconds} s"))
}

/// Validates the document with an independent validator, `openapi-spec-validator` from
/// PyPI, installed into a project-local virtualenv under `target/`.
fn validate_openapi(path: &Path) -> Result {
    let venv = root().join("target/py");
    let bin = venv.join("bin");
    let validator = bin.join("openapi-spec-validator");
    if !validator.exists() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run(create, "create the Python virtualenv in target/py")?;
        let mut install = Command::new(bin.join("pip"));
        install.args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openapi-spec-validator==0.9.0",
        ]);
        run(install, "install openapi-spec-validator")?;
    }
    let mut validate = Command::new(&validator);
    validate.arg(path);
    run(validate, "openapi-spec-validator openapi/openapi.json")
}

fn migrate() -> Result {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "keyward", "--", "migrate"]);
    run(cmd, "apply migrations")
}

fn contract_test() -> Result {
    let mut cmd = cargo();
    cmd.args(["test", "--package", "keyward", "--test", "contract"]);
    postgres_env(&mut cmd)?;
    run(cmd, "contract test against the real binary")
}

fn examples_arg(args: &[String]) -> u32 {
    args.iter()
        .position(|a| a == "--max-examples")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
}

/// The schemathesis version the fuzz run installs.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Register refuses, with a 400, bodies no schema can rule out (a point that is not on
/// its curve, a keyId already used); those are not findings of "valid data rejected".
const SCHEMATHESIS_CONFIG: &str = r#"
[parameters]
"path.enterpriseId" = "acme"

[[operations]]
include-name = "POST /api/policy/v1/enterprises/{enterpriseId}/webhooks/keys"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
"#;

/// Kills the server when the run ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Schema-driven fuzzing of the live API: schemathesis with every check against a
/// fresh `keyward serve`, as an admin of enterprise `acme`.
fn schema_fuzz(max_examples: u32) -> Result {
    let venv = root().join("target/st");
    let st = venv.join("bin/st");
    if !st.exists() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run(create, "create the Python virtualenv in target/st")?;
        let mut install = Command::new(venv.join("bin/pip"));
        install.args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ]);
        run(install, "install schemathesis")?;
    }
    let mut build = cargo();
    build.args(["build", "--quiet", "--package", "keyward"]);
    run(build, "build keyward")?;
    let bin = root().join("target/debug/keyward");
    let work = root().join("target/schemathesis");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let db = format!("sqlite://{}", work.join("keyward.db").display());
    let cli = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new(&bin);
        cmd.args(args).env("DATABASE_URL", &db);
        output(cmd, &format!("keyward {}", args.join(" ")))
    };
    cli(&["admin", "enterprise", "create", "acme"])?;
    cli(&["admin", "user", "create", "fuzz@acme.test"])?;
    cli(&[
        "admin",
        "member",
        "add",
        "acme",
        "fuzz@acme.test",
        "--role",
        "admin",
    ])?;
    let issued = cli(&["admin", "token", "issue", "fuzz@acme.test", "--ttl", "1d"])?;
    let token = issued.lines().last().unwrap_or_default().trim().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _server = Child(
        Command::new(&bin)
            .args(["serve", "--listen", &listen, "--database-url", &db])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(work.join("serve.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("start keyward serve: {e}"))?,
    );
    let addr: SocketAddr = listen.parse().map_err(|e| format!("{e}"))?;
    let started = std::time::Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("keyward serve did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(work.join("schemathesis.toml"), SCHEMATHESIS_CONFIG)
        .map_err(|e| e.to_string())?;
    let mut st_run = Command::new(&st);
    st_run
        .current_dir(&work)
        .arg("run")
        .arg(root().join("openapi/openapi.json"))
        .args(["--url", &format!("http://{listen}")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            &max_examples.to_string(),
            "--no-color",
        ]);
    run(
        st_run,
        &format!("schemathesis, every check, {max_examples} examples per operation"),
    )
}

fn postgres_url() -> String {
    env::var("KEYWARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// True when something answers on the test PostgreSQL's port.
fn postgres_reachable() -> bool {
    let url = postgres_url();
    let host_port = url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port
        .parse::<SocketAddr>()
        .is_ok_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

/// PostgreSQL is mandatory in CI (`CI=true`) and wherever it answers; elsewhere its half
/// of the tests is skipped, loudly.
fn postgres_env(cmd: &mut Command) -> Result {
    let in_ci = env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if postgres_reachable() {
        cmd.env("KEYWARD_REQUIRE_POSTGRES", "1");
        return Ok(());
    }
    if in_ci {
        return Err(format!(
            "PostgreSQL at {} is required in CI but does not answer",
            postgres_url()
        ));
    }
    eprintln!();
    eprintln!("################################################################");
    eprintln!(
        "#  WARNING: PostgreSQL at {} does not answer.",
        postgres_url()
    );
    eprintln!("#  The PostgreSQL half of every test is SKIPPED in this run.");
    eprintln!("#  CI runs it; start PostgreSQL to run it here.");
    eprintln!("################################################################");
    eprintln!();
    Ok(())
}

/// The layering rules: the domain knows neither Diesel nor poem; the API never touches
/// Diesel.
fn tidy() -> Result {
    for (krate, forbidden) in [
        ("keyward-domain", "diesel"),
        ("keyward-domain", "poem"),
        ("keyward-domain", "tokio"),
        ("keyward-api", "diesel"),
    ] {
        let mut cmd = cargo();
        cmd.args([
            "tree",
            "--quiet",
            "--edges",
            "normal",
            "--package",
            krate,
            "--invert",
            forbidden,
        ]);
        let out = cmd.output().map_err(|e| format!("cargo tree: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let errors = String::from_utf8_lossy(&out.stderr);
        if out.status.success() && !text.trim().is_empty() {
            return Err(format!("layering: {krate} depends on {forbidden}:\n{text}"));
        }
        // `cargo tree -i X` fails with "did not match" when X is nowhere in the graph,
        // which is the good case; any other failure means the check did not run.
        if !out.status.success() && !errors.contains("did not match any packages") {
            return Err(format!(
                "layering check for {krate} could not run: {errors}"
            ));
        }
    }
    eprintln!("xtask: layering ok (domain: no diesel/poem/tokio; api: no diesel)");
    Ok(())
}

fn test() -> Result {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt, "cargo fmt --check")?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy, "cargo clippy -D warnings")?;
    tidy()?;
    openapi(true)?;
    let mut tests = cargo();
    tests.args(["test", "--workspace"]);
    postgres_env(&mut tests)?;
    run(
        tests,
        "cargo test --workspace (SQLite and PostgreSQL; includes the contract test)",
    )?;
    schema_fuzz(25)?;
    eprintln!("xtask: all checks passed");
    Ok(())
}
