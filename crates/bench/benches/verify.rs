//! Criterion view of verification per curve: the raw signature check, keyward's whole
//! in-process check (parse, cached key, signature, claims), and jsonwebtoken on the same
//! token. `cargo xtask bench` reports the interleaved A/B ratio from `keyward-bench`;
//! this is the detailed, per-function view of the same work.

use criterion::{criterion_group, criterion_main, Criterion};
use keyward_bench::{
    jsonwebtoken_key, jsonwebtoken_validation, Curve, RawInput, RawVerifier, WebhookClaims,
};
use std::hint::black_box;

fn verification(c: &mut Criterion) {
    for curve in Curve::ALL {
        let fixture = keyward_bench::inproc::Fixture::new(curve);
        let token = fixture.token(0);
        let input = RawInput::of(&token);
        let raw = RawVerifier::new(
            &fixture.signing,
            &input,
            std::time::Duration::from_millis(100),
        );
        let mut group = c.benchmark_group(curve.alg());
        group.bench_function("raw", |b| b.iter(|| assert!(raw.verify(black_box(&input)))));
        group.bench_function("keyward", |b| {
            b.iter(|| assert!(fixture.check(black_box(&token))))
        });
        if let Some((key, alg)) = jsonwebtoken_key(&fixture.signing) {
            let validation = jsonwebtoken_validation(alg);
            group.bench_function("jsonwebtoken", |b| {
                b.iter(|| {
                    assert!(jsonwebtoken::decode::<WebhookClaims>(
                        black_box(&token),
                        &key,
                        &validation
                    )
                    .is_ok())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, verification);
criterion_main!(benches);
