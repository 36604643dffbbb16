//! The npm `jose` package on the same tokens, when Node.js and npm are on the machine.
//!
//! `crates/bench/node` holds the script and the pinned, locked dependency; they are
//! copied to the benchmark's work directory and installed there with `npm ci`, so the
//! source tree never holds `node_modules`. Node runs one verification at a time, like
//! the single-core rates it is compared with, right after keyward's own measurement (a
//! separate process cannot be interleaved with it).

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Curve;

/// The files of `crates/bench/node` the run needs.
const FILES: [&str; 3] = ["package.json", "package-lock.json", "jose-verify.mjs"];

/// How long `npm ci` may take (it downloads one small package).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);

/// One token to verify: its curve, the public JWK and the compact JWS.
pub struct Case {
    pub curve: Curve,
    pub jwk: Value,
    pub token: String,
}

/// jose's verifications per second on one curve, or why it has none (the package
/// refusing the algorithm, say).
pub type Rate = Result<f64, String>;

/// jose's rate for each case's curve. `Err` when Node.js could not run at all.
pub fn jose_rates(
    work: &Path,
    cases: &[Case],
    budget: Duration,
) -> Result<Vec<(Curve, Rate)>, String> {
    for tool in ["node", "npm"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("{tool} not found"));
        }
    }
    let dir = work.join("node");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    for file in FILES {
        std::fs::copy(source.join(file), dir.join(file))
            .map_err(|e| format!("cannot copy {file}: {e}"))?;
    }
    let mut install = Command::new("npm");
    install
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir);
    run(install, INSTALL_TIMEOUT).map_err(|e| format!("npm ci failed: {e}"))?;

    let input = json!({
        "seconds": budget.as_secs_f64(),
        "cases": cases.iter().map(|c| json!({
            "alg": c.curve.alg(),
            "jwk": c.jwk,
            "token": c.token,
        })).collect::<Vec<_>>(),
    });
    let input_path = dir.join("cases.json");
    std::fs::write(&input_path, input.to_string())
        .map_err(|e| format!("cannot write the cases: {e}"))?;
    let mut verify = Command::new("node");
    verify
        .args(["jose-verify.mjs", "cases.json"])
        .current_dir(&dir);
    // Each case runs for the budget plus a warm-up; leave room for Node's start.
    let limit = (budget + Duration::from_secs(2)) * (cases.len() as u32) + Duration::from_secs(30);
    let output = run(verify, limit).map_err(|e| format!("node failed: {e}"))?;

    let mut rates = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("unexpected output '{line}': {e}"))?;
        let alg = value["alg"].as_str().unwrap_or_default();
        let Some(case) = cases.iter().find(|c| c.curve.alg() == alg) else {
            return Err(format!("unexpected algorithm in '{line}'"));
        };
        let rate = match (value["perSecond"].as_f64(), value["error"].as_str()) {
            (Some(rate), _) => Ok(rate),
            (None, Some(error)) => Err(error.to_owned()),
            (None, None) => Err(format!("unexpected output '{line}'")),
        };
        rates.push((case.curve, rate));
    }
    Ok(rates)
}

/// Runs `command` to completion within `limit` (killing it past that); its stdout.
fn run(mut command: Command, limit: Duration) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Read both pipes on their own threads so a chatty child never blocks on a full one.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{status}: {}", err.trim()))
    }
}
