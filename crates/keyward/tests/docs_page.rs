//! `/docs` in a real browser: headless Chromium loads the page from a running
//! `keyward serve` (no internet: the assets are bundled), waits for the operations to
//! render, saves a screenshot to `target/docs.png`, and every operation of the API
//! document must be on the rendered page. Runs where `chromium` is installed (`.ci/run`
//! installs it); elsewhere it says it was skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward_persistence::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn run_chromium(
    browser: &Path,
    profile: &Path,
    args: &[String],
    url: &str,
) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[test]
fn docs_page_renders_every_operation() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: /docs browser test, chromium is not installed (apt-get install chromium)"
        );
        return;
    };
    let db = TestDb::sqlite();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _server = Server(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &listen,
                "--database-url",
                &db.url_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ureq::get(&format!("http://{listen}/readyz"))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://{listen}/docs");
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).expect("target dir");
    let profile = std::env::temp_dir().join(format!("keyward-chromium-{}", std::process::id()));

    let dom = run_chromium(&browser, &profile, &["--dump-dom".into()], &url);
    let html = String::from_utf8_lossy(&dom.stdout);
    let screenshot = target.join("docs.png");
    let shot = run_chromium(
        &browser,
        &profile,
        &[format!("--screenshot={}", screenshot.display())],
        &url,
    );
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        shot.status.success(),
        "screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );

    let spec: serde_json::Value = serde_json::from_str(&keyward_api::openapi_json()).expect("spec");
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            operations += 1;
            let summary = op["summary"].as_str().expect("summary");
            assert!(
                html.contains(summary),
                "{method} {path} ('{summary}') is not on the rendered /docs page"
            );
            assert!(
                html.contains(&format!("data-path=\"{path}\"")) || html.contains(path.as_str()),
                "{path} not rendered"
            );
        }
    }
    assert!(operations >= 5);
}
