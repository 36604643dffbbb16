//! Signature checks, one well-kept implementation per curve, on keys parsed once.
//!
//! Chosen by measuring (docs/performance.md): Ed25519, `ed25519-dalek` or `aws-lc-rs`,
//! whichever checks faster on the machine the process runs on (see [`ed25519_choice`]),
//! strict either way (no malleable S, no small-order R or key; see
//! [`VerifyingKey::verify`]); P-256 and P-384, `aws-lc-rs` on keys parsed once, in the
//! JWS raw `r‖s` form only; secp256k1, `k256`, with either form of S accepted as on the
//! other ECDSA curves.
//! ECDSA signatures must be exactly twice the coordinate length (so DER is refused) and
//! r, s must be in `[1, n)` (so the all-zero "psychic signature" is refused).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{
    ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519,
};

use crate::jwk::{Curve, PublicJwk};

/// A public key ready to check signatures.
pub enum VerifyingKey {
    /// Never a small-order (weak) key: [`VerifyingKey::from_jwk`] refuses those.
    Ed25519(Ed25519Key),
    P256(ParsedPublicKey),
    P384(ParsedPublicKey),
    Secp256k1(k256::ecdsa::VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ed25519(_) => "VerifyingKey(Ed25519)",
            Self::P256(_) => "VerifyingKey(P-256)",
            Self::P384(_) => "VerifyingKey(P-384)",
            Self::Secp256k1(_) => "VerifyingKey(secp256k1)",
        })
    }
}

impl VerifyingKey {
    /// Prepares a validated JWK. `None` only if the key cannot be used, which validation
    /// already excludes.
    pub fn from_jwk(jwk: &PublicJwk) -> Option<Self> {
        let sec1 = || {
            let mut point = vec![0x04];
            point.extend_from_slice(jwk.x());
            point.extend_from_slice(jwk.y().unwrap_or_default());
            point
        };
        match jwk.curve() {
            Curve::Ed25519 => {
                let bytes: [u8; 32] = jwk.x().try_into().ok()?;
                Ed25519Key::new(bytes).map(Self::Ed25519)
            }
            Curve::P256 => ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, sec1())
                .ok()
                .map(Self::P256),
            Curve::P384 => ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, sec1())
                .ok()
                .map(Self::P384),
            Curve::Secp256k1 => k256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1())
                .ok()
                .map(Self::Secp256k1),
        }
    }

    /// True when `signature` is a valid signature of `message` under this key.
    ///
    /// Ed25519 is checked as strictly as `ed25519-dalek`'s `verify_strict` (S below the
    /// group order, the recomputed R equal byte for byte to the signature's, neither the
    /// key nor R of small order) without its cost: `verify_strict` decompresses R only to
    /// ask whether it is of small order, a square root that made it 8–24% slower than
    /// the plain check in alternating runs. Here the key is never weak (see the
    /// variant), and both implementations' plain checks already refuse an S at or above
    /// the group order and demand R be the canonical encoding of the point they
    /// recompute, so R is of small order exactly when its bytes are one of the eight
    /// canonical encodings of the small-order points, which are compared instead. The
    /// implementation is the one [`ed25519_choice`] measured faster; both answer alike.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_with(ed25519_choice().chosen, message, signature)
    }

    /// [`VerifyingKey::verify`] with a given Ed25519 implementation (the other curves
    /// have one each).
    pub fn verify_with(&self, ed25519: Ed25519Impl, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Ed25519(key) => key.verify(ed25519, message, signature),
            Self::P256(key) => signature.len() == 64 && key.verify_sig(message, signature).is_ok(),
            Self::P384(key) => signature.len() == 96 && key.verify_sig(message, signature).is_ok(),
            // `k256` accepts only the low-S form (Bitcoin's rule against malleable
            // signatures); JWS ES256K is plain ECDSA, and independent signers give a high S
            // about half the time. (r, s) is valid exactly when (r, n - s) is, so the
            // signature is checked in its low-S form. A token's two forms answer one
            // evaluation once: the replay record is keyed on the evaluationId.
            Self::Secp256k1(key) => {
                use k256::ecdsa::signature::Verifier as _;
                signature.len() == 64
                    && k256::ecdsa::Signature::from_slice(signature)
                        .is_ok_and(|sig| key.verify(message, &sig.normalize_s()).is_ok())
            }
        }
    }
}

/// An Ed25519 public key, prepared for this process's implementation.
pub struct Ed25519Key {
    bytes: [u8; 32],
    prepared: Prepared,
}

enum Prepared {
    Dalek(ed25519_dalek::VerifyingKey),
    AwsLc(ParsedPublicKey),
}

impl Ed25519Key {
    /// `None` for an invalid or small-order (weak) key.
    fn new(bytes: [u8; 32]) -> Option<Self> {
        Self::prepared_for(ed25519_choice().chosen, bytes)
    }

    fn prepared_for(with: Ed25519Impl, bytes: [u8; 32]) -> Option<Self> {
        let dalek = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|key| !key.is_weak())?;
        let prepared = match with {
            Ed25519Impl::Dalek => Prepared::Dalek(dalek),
            Ed25519Impl::AwsLc => Prepared::AwsLc(ParsedPublicKey::new(&ED25519, bytes).ok()?),
        };
        Some(Self { bytes, prepared })
    }

    fn verify(&self, with: Ed25519Impl, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
            return false;
        };
        if signature
            .first_chunk::<32>()
            .is_some_and(|r| SMALL_ORDER_ENCODINGS.contains(r))
        {
            return false;
        }
        match (&self.prepared, with) {
            (Prepared::Dalek(key), Ed25519Impl::Dalek) => {
                use ed25519_dalek::Verifier as _;
                key.verify(message, &ed25519_dalek::Signature::from_bytes(signature))
                    .is_ok()
            }
            (Prepared::AwsLc(key), Ed25519Impl::AwsLc) => {
                key.verify_sig(message, signature).is_ok()
            }
            // Not this process's implementation (tests): prepared for the one call.
            _ => Self::prepared_for(with, self.bytes)
                .is_some_and(|key| key.verify(with, message, signature)),
        }
    }
}

/// The Ed25519 implementations keyward chooses between. Their speed depends on the
/// processor (which instructions each uses) and on what else the host runs: on some
/// machines one is ahead by 5–15%, on others the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ed25519Impl {
    /// `ed25519-dalek`.
    Dalek,
    /// `aws-lc-rs`.
    AwsLc,
}

impl Ed25519Impl {
    pub const ALL: [Self; 2] = [Self::Dalek, Self::AwsLc];

    /// The crate's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dalek => "ed25519-dalek",
            Self::AwsLc => "aws-lc-rs",
        }
    }
}

/// Which Ed25519 implementation this process checks signatures with, and the
/// measurement that chose it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ed25519Choice {
    pub chosen: Ed25519Impl,
    /// The fastest check each took in the measurement, in microseconds (0 for one that
    /// refused the measurement's valid signature, and is not chosen).
    pub dalek_micros: f64,
    pub aws_lc_micros: f64,
}

/// The Ed25519 implementation of this process, measured on first use: a few milliseconds
/// of alternating batches of the same check with each, the faster by its quickest batch
/// (the least disturbed by whatever else the machine runs) chosen. `keyward serve`
/// measures it while starting, so no request waits for it.
pub fn ed25519_choice() -> Ed25519Choice {
    *ED25519_CHOICE
}

static ED25519_CHOICE: LazyLock<Ed25519Choice> = LazyLock::new(measure_ed25519);

fn measure_ed25519() -> Ed25519Choice {
    use ed25519_dalek::Signer as _;
    const ROUNDS: usize = 8;
    const BATCH: u32 = 8;
    let signer = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    // About the length of a webhook answer's signing input.
    let message = [b'e'; 200];
    let signature = signer.sign(&message).to_bytes();
    let public = signer.verifying_key().to_bytes();
    let keys = Ed25519Impl::ALL.map(|with| Ed25519Key::prepared_for(with, public));
    let [Some(dalek_key), Some(aws_lc_key)] = &keys else {
        return Ed25519Choice {
            chosen: Ed25519Impl::Dalek,
            dalek_micros: 0.0,
            aws_lc_micros: 0.0,
        };
    };
    // The quickest batch of each; `None` once it refused the valid signature (it is then
    // never chosen).
    let batch = |key: &Ed25519Key, with: Ed25519Impl, best: &mut Option<Duration>| {
        let start = Instant::now();
        let mut accepted = true;
        for _ in 0..BATCH {
            accepted &= key.verify(
                with,
                std::hint::black_box(&message),
                std::hint::black_box(&signature),
            );
        }
        let took = start.elapsed();
        *best = best.filter(|_| accepted).map(|best| best.min(took));
    };
    let (mut dalek, mut aws_lc) = (Some(Duration::MAX), Some(Duration::MAX));
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither gains from where a round's
        // interference falls.
        if round % 2 == 0 {
            batch(dalek_key, Ed25519Impl::Dalek, &mut dalek);
            batch(aws_lc_key, Ed25519Impl::AwsLc, &mut aws_lc);
        } else {
            batch(aws_lc_key, Ed25519Impl::AwsLc, &mut aws_lc);
            batch(dalek_key, Ed25519Impl::Dalek, &mut dalek);
        }
    }
    let micros = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6 / f64::from(BATCH));
    Ed25519Choice {
        chosen: faster(dalek, aws_lc),
        dalek_micros: micros(dalek),
        aws_lc_micros: micros(aws_lc),
    }
}

/// The implementation to use from each one's quickest batch, `None` for one that refused
/// the valid signature: never that one, and ed25519-dalek on a tie.
fn faster(dalek: Option<Duration>, aws_lc: Option<Duration>) -> Ed25519Impl {
    match (dalek, aws_lc) {
        (Some(dalek), Some(aws_lc)) if aws_lc < dalek => Ed25519Impl::AwsLc,
        (None, Some(_)) => Ed25519Impl::AwsLc,
        _ => Ed25519Impl::Dalek,
    }
}

/// The canonical encodings of the eight Ed25519 points of small order (the 8-torsion
/// subgroup, identity included), from `curve25519-dalek`'s own table.
static SMALL_ORDER_ENCODINGS: LazyLock<[[u8; 32]; 8]> = LazyLock::new(|| {
    curve25519_dalek::constants::EIGHT_TORSION.map(|point| point.compress().to_bytes())
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_implementation_is_chosen_and_never_one_that_refused() {
        let (quick, slow) = (Duration::from_micros(20), Duration::from_micros(30));
        assert_eq!(faster(Some(slow), Some(quick)), Ed25519Impl::AwsLc);
        assert_eq!(faster(Some(quick), Some(slow)), Ed25519Impl::Dalek);
        assert_eq!(faster(Some(quick), Some(quick)), Ed25519Impl::Dalek);
        assert_eq!(faster(None, Some(slow)), Ed25519Impl::AwsLc);
        assert_eq!(faster(Some(slow), None), Ed25519Impl::Dalek);
    }
}
