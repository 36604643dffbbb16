//! The JWK validator never panics, and whatever it accepts survives its own canonical
//! form with the same thumbprint.
#![no_main]

use keyward_domain::json::parse_strict;
use keyward_domain::PublicJwk;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(map)) = parse_strict(data) else { return };
    if let Ok(jwk) = PublicJwk::from_json(&map) {
        let back = PublicJwk::from_stored(&jwk.to_canonical_json()).expect("canonical form parses");
        assert_eq!(back.thumbprint(), jwk.thumbprint());
    }
});
