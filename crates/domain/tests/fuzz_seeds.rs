//! The fuzz targets' seed corpora (`fuzz/corpus`, the checklist's nasty inputs) run
//! through the same code in the ordinary suite: each input is refused or accepted
//! without a panic, and the ones that must be refused are.

use std::path::PathBuf;

use keyward_domain::json::parse_strict;
use keyward_domain::verify::parse;
use keyward_domain::{InsecureHosts, PublicJwk, RegisterKey, Timestamp};
use serde_json::Value;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

#[test]
fn token_seeds() {
    for (name, bytes) in seeds("token_parser") {
        let text = String::from_utf8(bytes).expect("utf8");
        let now = Timestamp::from_millis(1_768_213_800_000);
        let checked = parse(&text).and_then(|token| token.check_claims("eval", now, 300));
        // Only the well-shaped seed gets through the header and claims checks; every
        // other one is a checklist attack.
        assert_eq!(
            checked.is_ok(),
            name == "valid_shape",
            "{name}: {checked:?}"
        );
    }
}

#[test]
fn jwk_seeds() {
    for (name, bytes) in seeds("jwk_validator") {
        let accepted = match parse_strict(&bytes) {
            Ok(Value::Object(map)) => PublicJwk::from_json(&map).is_ok(),
            _ => false,
        };
        assert_eq!(accepted, name == "ed25519" || name == "p256", "{name}");
    }
}

#[test]
fn register_body_seeds() {
    for (name, bytes) in seeds("register_body") {
        let accepted = RegisterKey::from_body(&bytes, &InsecureHosts::default()).is_ok();
        assert_eq!(accepted, name == "ed25519" || name == "p256", "{name}");
    }
}
