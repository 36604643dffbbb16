//! Signature checks, one well-kept implementation per curve, on keys parsed once.
//!
//! Chosen by measuring (docs/performance.md): Ed25519, `ed25519-dalek`, strict (no
//! malleable S, no small-order R or key; see [`VerifyingKey::verify`]); P-256 and
//! P-384, `aws-lc-rs` on keys parsed once, in the JWS raw `r‖s` form only; secp256k1,
//! `k256`, with either form of S accepted as on the other ECDSA curves.
//! ECDSA signatures must be exactly twice the coordinate length (so DER is refused) and
//! r, s must be in `[1, n)` (so the all-zero "psychic signature" is refused).

use std::sync::LazyLock;

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED};

use crate::jwk::{Curve, PublicJwk};

/// A public key ready to check signatures.
pub enum VerifyingKey {
    /// Never a small-order (weak) key: [`VerifyingKey::from_jwk`] refuses those.
    Ed25519(ed25519_dalek::VerifyingKey),
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
                ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .ok()
                    .filter(|key| !key.is_weak())
                    .map(Self::Ed25519)
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
    /// variant), and the plain check already demands R be the canonical encoding of the
    /// point it recomputes, so R is of small order exactly when its bytes are one of the
    /// eight canonical encodings of the small-order points, which are compared instead.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Ed25519(key) => {
                use ed25519_dalek::Verifier as _;
                ed25519_dalek::Signature::from_slice(signature).is_ok_and(|sig| {
                    !SMALL_ORDER_ENCODINGS.contains(sig.r_bytes())
                        && key.verify(message, &sig).is_ok()
                })
            }
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

/// The canonical encodings of the eight Ed25519 points of small order (the 8-torsion
/// subgroup, identity included), from `curve25519-dalek`'s own table.
static SMALL_ORDER_ENCODINGS: LazyLock<[[u8; 32]; 8]> = LazyLock::new(|| {
    curve25519_dalek::constants::EIGHT_TORSION.map(|point| point.compress().to_bytes())
});
