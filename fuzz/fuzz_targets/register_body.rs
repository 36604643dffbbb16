//! The register body parser never panics.
#![no_main]

use keyward_domain::{InsecureHosts, RegisterKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RegisterKey::from_body(data, &InsecureHosts::default());
});
