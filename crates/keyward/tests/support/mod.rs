//! Running the real binary in tests: a server on a free loopback port with a fresh
//! database, bootstrapped through the CLI, stopped when dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");

pub fn keyward(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", db)
        .output()
        .expect("run keyward");
    assert!(
        out.status.success(),
        "keyward {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Creates enterprise `acme` with an admin and returns the admin's token.
pub fn bootstrap(db: &str) -> String {
    keyward(db, &["admin", "enterprise", "create", "acme"]);
    keyward(db, &["admin", "user", "create", "alice@acme.test"]);
    keyward(
        db,
        &[
            "admin",
            "member",
            "add",
            "acme",
            "alice@acme.test",
            "--role",
            "admin",
        ],
    );
    keyward(db, &["admin", "token", "issue", "alice@acme.test"])
        .lines()
        .last()
        .expect("token")
        .to_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts `keyward serve` on `db` with `extra` arguments and waits until it is ready.
    pub fn start(db: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(free_port(), db, extra, env)
    }

    pub fn start_on(port: u16, db: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let log =
            std::env::temp_dir().join(format!("keyward-serve-{}-{port}.log", std::process::id()));
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &addr, "--database-url", db])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("serve");
        let server = Self { child, addr, log };
        server.wait_ready();
        server
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("http://{}/healthz", self.addr))
            .call()
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "serve did not start on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends a request; returns status, headers and body (JSON or null).
pub fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Vec<(String, String)>, String) {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let response = match body {
        Some(body) => agent().run(
            req.header("content-type", "application/json")
                .body(body.to_string())
                .expect("request"),
        ),
        None => agent().run(req.body(()).expect("request")),
    };
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let text = response.into_body().read_to_string().unwrap_or_default();
            (status, headers, text)
        }
        Err(err) => (0, Vec::new(), err.to_string()),
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The public JWK of the Ed25519 secret `[seed; 32]` (seed as 4 bytes for more keys).
pub fn jwk(seed: u32) -> Value {
    let key = signing_key(seed);
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())})
}

pub fn signing_key(seed: u32) -> ed25519_dalek::SigningKey {
    let mut secret = [7u8; 32];
    secret[..4].copy_from_slice(&seed.to_le_bytes());
    ed25519_dalek::SigningKey::from_bytes(&secret)
}

/// A compact JWS for `evaluation`, signed now with the key of `seed`.
pub fn sign(seed: u32, kid: &str, evaluation: &str) -> String {
    use ed25519_dalek::Signer as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": kid}).to_string());
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"evaluationId": evaluation, "statusCode": 200, "iat": now}).to_string());
    let input = format!("{header}.{claims}");
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(signing_key(seed).sign(input.as_bytes()).to_bytes())
    )
}

/// Writes raw bytes to the server and reads until it closes or `wait` passes.
pub fn raw(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}
