//! `keyward-bench`: everything `cargo xtask bench` measures after the criterion run,
//! printed as one table and written to `target/bench/report.md`.
//!
//! Usage: keyward-bench [--quick] [--keyward PATH] [--out FILE] [--skip-scale]
//!                      [--backend sqlite|postgres] [--only-scale] [--only-inproc]
//!                      [--keys-in-turns]

use std::path::PathBuf;
use std::time::Duration;

use keyward_bench::report::{Report, Row};
use keyward_bench::{http, inproc, node, scale, Curve};

struct Args {
    quick: bool,
    keyward: PathBuf,
    out: PathBuf,
    scale: bool,
    only_scale: bool,
    only_inproc: bool,
    backend: Option<http::Backend>,
    load_order: scale::LoadOrder,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        keyward: PathBuf::from("target/release/keyward"),
        out: PathBuf::from("target/bench/report.md"),
        scale: true,
        only_scale: false,
        only_inproc: false,
        backend: None,
        load_order: scale::LoadOrder::ByEnterprise,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--skip-scale" => args.scale = false,
            "--only-scale" => args.only_scale = true,
            "--only-inproc" => args.only_inproc = true,
            "--keys-in-turns" => args.load_order = scale::LoadOrder::InTurns,
            "--backend" => {
                args.backend = match it.next().as_deref() {
                    Some("sqlite") => Some(http::Backend::Sqlite),
                    Some("postgres") => Some(http::Backend::Postgres),
                    _ => return Err("--backend takes sqlite or postgres".into()),
                }
            }
            "--keyward" => args.keyward = it.next().ok_or("--keyward needs a path")?.into(),
            "--out" => args.out = it.next().ok_or("--out needs a path")?.into(),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if !args.keyward.exists() {
        return Err(format!(
            "{} does not exist; build it with 'cargo build --release -p keyward'",
            args.keyward.display()
        ));
    }
    Ok(args)
}

fn main() {
    keyward_bench::since_start();
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("keyward-bench: {err}");
            std::process::exit(2);
        }
    };
    let work = args
        .out
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let _ = std::fs::create_dir_all(work.join("tmp"));
    // SQLite files live on the project's disk, like a deployment's, not in a tmpfs.
    std::env::set_var("TMPDIR", work.join("tmp"));
    let mut report = Report::new(args.quick);

    // 1. In-process: keyward's check against the raw signature check, interleaved.
    let budget = Duration::from_secs(if args.quick { 1 } else { 4 });
    let mut raw_eddsa = 0.0;
    let mut inproc_results = Vec::new();
    for curve in Curve::ALL {
        let r = inproc::interleaved(curve, budget);
        eprintln!("in-process {}: {r:?}", curve.alg());
        if curve == Curve::Ed25519 {
            // The HTTP baseline is the fastest crate's single-core rate, whichever it is.
            raw_eddsa = r
                .alternatives
                .iter()
                .map(|(_, rate)| *rate)
                .fold(r.raw_per_second, f64::max);
        }
        inproc_results.push(r);
    }
    // The npm jose package on the same tokens, if Node.js is here.
    let cases: Vec<node::Case> = Curve::ALL
        .into_iter()
        .map(|curve| {
            let fixture = inproc::Fixture::new(curve);
            node::Case {
                curve,
                jwk: fixture.signing.public_jwk(),
                token: fixture.token(0),
            }
        })
        .collect();
    // Quick mode keeps the whole run within two minutes.
    let jose_budget = if args.quick { budget / 2 } else { budget };
    match node::jose_rates(&work, &cases, jose_budget) {
        Ok(rates) => {
            for (curve, rate) in rates {
                if let Some(r) = inproc_results.iter_mut().find(|r| r.curve == curve) {
                    r.jose = Some(rate);
                }
            }
        }
        Err(err) => report.note(format!("jose (npm) not measured: {err}")),
    }
    for r in &inproc_results {
        report.push(Row::inproc(r));
    }

    // 2-4, 6-7: HTTP on each backend.
    let load = if args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(8)
    };
    let settings = http::Settings {
        keyward: args.keyward.clone(),
        duration: load,
        concurrency: 32,
        raw_verify_per_second: raw_eddsa,
        logs: work.clone(),
    };
    let backends: Vec<_> = http::Backend::available()
        .into_iter()
        .filter(|_| !args.only_inproc)
        .filter(|b| args.backend.is_none_or(|only| only == *b))
        .collect();
    for &backend in backends.iter().filter(|_| !args.only_scale) {
        match http::run_backend(&settings, backend, &mut report) {
            Ok(()) => {}
            Err(err) => report.note(format!("{} HTTP benches failed: {err}", backend.name())),
        }
    }
    if !args.only_scale && !args.only_inproc {
        match http::startup(&settings) {
            Ok(row) => report.push(row),
            Err(err) => report.note(format!("start-up measurement failed: {err}")),
        }
    }
    if args.only_scale || args.only_inproc {
        // Nothing else.
    } else if backends.contains(&http::Backend::Postgres) {
        match http::two_processes(&settings, &mut report) {
            Ok(()) => {}
            Err(err) => report.note(format!("two-process run failed: {err}")),
        }
    } else if args.backend == Some(http::Backend::Sqlite) {
        report.note(
            "--backend sqlite: the PostgreSQL rows and the two-process run were not run".into(),
        );
    } else {
        report.note("PostgreSQL unreachable: its rows and the two-process run were SKIPPED".into());
    }

    // 5. Scale: 1,000,000 keys against 1,000.
    if args.scale && !args.only_inproc {
        let (enterprises, per) = if args.quick {
            (1_000, 100)
        } else {
            (10_000, 100)
        };
        if let Err(err) = scale::run(
            &settings,
            &backends,
            enterprises,
            per,
            args.load_order,
            &mut report,
        ) {
            report.note(format!("scale run failed: {err}"));
        }
    }

    let table = report.render();
    println!("{table}");
    if let Err(err) = std::fs::write(&args.out, &table) {
        eprintln!("cannot write {}: {err}", args.out.display());
        std::process::exit(1);
    }
    eprintln!("written to {}", args.out.display());
}
