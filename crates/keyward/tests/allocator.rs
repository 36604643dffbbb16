//! The binary allocates with jemalloc, with the options `.cargo/config.toml` sets at
//! build time (two arenas, freed pages given back within a second): the resident
//! memory the service is measured at depends on them.

#![cfg(not(target_env = "msvc"))]

use std::process::Command;

#[test]
fn the_binary_runs_on_jemalloc_with_the_options_set_at_build_time() {
    // jemalloc prints its statistics, options included, at exit when asked to.
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--help")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run keyward");
    assert!(out.status.success());
    let stats = String::from_utf8_lossy(&out.stderr);
    for option in [
        "opt.narenas: 2",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
    ] {
        assert!(
            stats.contains(option),
            "jemalloc's statistics lack `{option}`:\n{stats}"
        );
    }
}
