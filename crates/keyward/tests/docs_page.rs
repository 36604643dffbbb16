//! `/docs` in a real browser: headless Chromium loads the page from a running
//! `keyward serve` (no internet: the assets are bundled), waits for the operations to
//! render, saves a screenshot to `target/docs.png`, and every operation of the API
//! document must be on the rendered page. Runs where `chromium` is installed (`.ci/run`
//! installs it); elsewhere it says it was skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use keyward_persistence::testing::TestDb;
use support::Server;

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
    let server = Server::start(&db.url_string(), &[], &[]);
    let url = server.url("/docs");
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
