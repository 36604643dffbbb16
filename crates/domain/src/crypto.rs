//! Signature checks, one well-kept implementation per curve, on keys parsed once.
//!
//! Chosen by measuring (docs/performance.md): Ed25519, `ed25519-dalek` or `aws-lc-rs`,
//! whichever checks faster on the machine the process runs on, measured at first use and
//! then on a sample of the checks themselves (see [`ed25519_choice`]), strict either way
//! (no malleable S, no small-order R or key; see [`VerifyingKey::verify`]); P-256 and
//! P-384, `aws-lc-rs` on keys parsed once, in the JWS raw `r‖s` form only; secp256k1,
//! `k256`, with either form of S accepted as on the other ECDSA curves.
//! ECDSA signatures must be exactly twice the coordinate length (so DER is refused) and
//! r, s must be in `[1, n)` (so the all-zero "psychic signature" is refused).
//! [`verify_all`] checks several signatures at once, the Ed25519 ones in one batch.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
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
    /// implementation is the one measured faster (see [`ed25519_choice`]); both answer
    /// alike.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Ed25519(key) => key.check(message, signature),
            // One implementation each: the Ed25519 one named is not used.
            _ => self.verify_with(Ed25519Impl::Dalek, message, signature),
        }
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

/// One signature for [`verify_all`] to check.
#[derive(Clone, Copy)]
pub struct SignatureToCheck<'a> {
    pub key: &'a VerifyingKey,
    pub message: &'a [u8],
    pub signature: &'a [u8],
}

/// The fewest Ed25519 signatures [`verify_all`] checks as one batch. Measured, a batch
/// of two costs 0.88 of two single checks, of four 0.65, of eight 0.56; a batch of one
/// costs 1.3 single checks.
const MIN_BATCH: usize = 2;
/// After a batch that failed, this many Ed25519 signatures are checked one by one before
/// batches resume, so that a stream of bad signatures costs a failed batch per this many
/// single checks at most, rather than one on top of every batch's single checks.
const SINGLES_AFTER_FAILED_BATCH: u32 = 64;
/// Single checks still due before the next batch (see [`SINGLES_AFTER_FAILED_BATCH`]).
static SINGLES_DUE: AtomicU32 = AtomicU32::new(0);

/// Checks several signatures at once; the verdicts come in `checks`' order.
///
/// Ed25519 signatures that qualify (see [`Ed25519Key::batchable`]) are checked together
/// with ed25519-dalek's batch verification when there are at least [`MIN_BATCH`] of
/// them: one multiscalar multiplication for the whole batch, about half the cost per
/// signature of single checks from eight signatures on. If the batch fails, each of its
/// signatures is checked alone, so a bad signature fails by itself and never takes a
/// good one with it. The other signatures are checked one by one, as
/// [`VerifyingKey::verify`] does.
///
/// Every verdict is [`VerifyingKey::verify`]'s, with one exception that only the holder
/// of a private key can bring about. The batch checks the sum of the signatures'
/// equations, each weighted by a 128-bit factor that ed25519-dalek derives from every
/// signature, key and message of the batch, so a bad signature cannot be offset by
/// another except with negligible probability, and a forgery is as hard as against a
/// single check. A signature whose R carries a small-order component, though, is
/// refused by a single check and accepted by a batch whose factor for it happens to be
/// a multiple of that component's order (for order 2, half the time): only whoever
/// signs with the key can make one (R is committed to by the signed hash), and it is
/// still that holder's signature of that message.
pub fn verify_all(checks: &[SignatureToCheck<'_>]) -> Vec<bool> {
    let mut verdicts = vec![false; checks.len()];
    let mut batch = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        match check.key {
            VerifyingKey::Ed25519(key) => match key.batchable(check.signature) {
                Some(signature) => batch.push((i, key, signature)),
                None => verdicts[i] = check.key.verify(check.message, check.signature),
            },
            _ => verdicts[i] = check.key.verify(check.message, check.signature),
        }
    }
    if batch.len() >= MIN_BATCH && !singles_due(batch.len()) {
        let messages: Vec<&[u8]> = batch.iter().map(|(i, ..)| checks[*i].message).collect();
        let signatures: Vec<ed25519_dalek::Signature> =
            batch.iter().map(|(.., signature)| *signature).collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> =
            batch.iter().map(|(_, key, _)| key.dalek).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            for (i, ..) in batch {
                verdicts[i] = true;
            }
            return verdicts;
        }
        SINGLES_DUE.store(SINGLES_AFTER_FAILED_BATCH, Ordering::Relaxed);
    }
    for (i, ..) in batch {
        verdicts[i] = checks[i].key.verify(checks[i].message, checks[i].signature);
    }
    verdicts
}

/// Whether `n` Ed25519 signatures are to be checked one by one after a failed batch;
/// counts them off.
fn singles_due(n: usize) -> bool {
    let due = SINGLES_DUE.load(Ordering::Relaxed);
    if due == 0 {
        return false;
    }
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    SINGLES_DUE.store(due.saturating_sub(n), Ordering::Relaxed);
    true
}

/// `signature` as 64 bytes, unless it is refused before any arithmetic: another length,
/// or an R of small order (one of the eight canonical encodings of those points; see
/// [`VerifyingKey::verify`]). Every Ed25519 check, alone or in a batch, starts here.
fn ed25519_shaped(signature: &[u8]) -> Option<&[u8; 64]> {
    let signature = <&[u8; 64]>::try_from(signature).ok()?;
    let r = signature.first_chunk::<32>()?;
    (!SMALL_ORDER_ENCODINGS.contains(r)).then_some(signature)
}

/// Whether `encoding` is the canonical encoding of the point it decodes to (if any): y
/// below the field's prime 2^255 - 19, and the sign bit clear where x is zero (y = 1 or
/// y = -1). Decompressing, as a batch does, accepts the other encodings too; a single
/// check refuses them, comparing R byte for byte with the canonical encoding of the
/// point it recomputes. A JWK's Ed25519 key must be canonical too (one key, one
/// thumbprint).
pub(crate) fn canonical_encoding(encoding: &[u8; 32]) -> bool {
    let mut y = *encoding;
    let sign = y[31] >> 7;
    y[31] &= 0x7f;
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    let one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
    let minus_one = y[0] == 0xec && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
    !at_least_p && !(sign == 1 && (one || minus_one))
}

/// An Ed25519 public key, prepared for either implementation: ed25519-dalek's form at
/// once (validating the key needs it anyway), aws-lc-rs's at its first use.
pub struct Ed25519Key {
    bytes: [u8; 32],
    dalek: ed25519_dalek::VerifyingKey,
    aws_lc: OnceLock<Option<ParsedPublicKey>>,
    /// Whether the key has no small-order component, found out at its second signature
    /// (a scalar multiplication, which registration need not pay; see
    /// [`Self::may_join_batches`]).
    torsion_free: OnceLock<bool>,
    /// Whether a signature was already offered to a batch under this key.
    offered: AtomicBool,
}

/// One Ed25519 check in this many, per thread, runs with both implementations, timed,
/// to keep the choice between them current (see [`Chooser`]): one check's worth of
/// extra work per this many, about 0.4%.
const SAMPLE_EVERY: u32 = 256;

thread_local! {
    /// This thread's Ed25519 checks, to pick the sampled ones.
    static CHECKS: Cell<u32> = const { Cell::new(0) };
}

impl Ed25519Key {
    /// `None` for an invalid or small-order (weak) key.
    fn new(bytes: [u8; 32]) -> Option<Self> {
        let dalek = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|key| !key.is_weak())?;
        Some(Self {
            bytes,
            dalek,
            aws_lc: OnceLock::new(),
            torsion_free: OnceLock::new(),
            offered: AtomicBool::new(false),
        })
    }

    fn aws_lc(&self) -> Option<&ParsedPublicKey> {
        self.aws_lc
            .get_or_init(|| ParsedPublicKey::new(&ED25519, self.bytes).ok())
            .as_ref()
    }

    /// `signature` in ed25519-dalek's form if a batch may check it (see [`verify_all`]):
    /// what [`Self::verify`] refuses before any arithmetic is refused here too (a length
    /// other than 64 bytes, an R of small order), and so is what a batch would judge
    /// otherwise than a single check (an R not canonically encoded) or what would only
    /// fail the whole batch (an S at or above the group order). The key must have no
    /// small-order component: a batch would judge otherwise for such a key too.
    fn batchable(&self, signature: &[u8]) -> Option<ed25519_dalek::Signature> {
        let signature = ed25519_shaped(signature)?;
        let (r, s) = signature.split_at(32);
        let r: &[u8; 32] = r.try_into().ok()?;
        let s: [u8; 32] = s.try_into().ok()?;
        let qualifies = canonical_encoding(r)
            && bool::from(curve25519_dalek::Scalar::from_canonical_bytes(s).is_some())
            && self.may_join_batches();
        qualifies.then(|| ed25519_dalek::Signature::from_bytes(signature))
    }

    /// Whether the key has no small-order component, so that its signatures may join a
    /// batch. Finding that out is a scalar multiplication, which costs more than the
    /// batch saves on one signature (a batched signature costs a little over half a
    /// single check): a key's first signature is left to a single check, and the key is
    /// examined at its second. A key read for one verification, as most are in a store
    /// too large for every key to stay in memory, never pays the examination.
    fn may_join_batches(&self) -> bool {
        if let Some(free) = self.torsion_free.get() {
            return *free;
        }
        if !self.offered.swap(true, Ordering::Relaxed) {
            return false;
        }
        *self
            .torsion_free
            .get_or_init(|| self.dalek.to_edwards().is_torsion_free())
    }

    /// The check with the implementation chosen now, except on a sampled call, which
    /// checks with both (in alternating order, each timed), tells the [`Chooser`] how
    /// long each took, and accepts only what both accept.
    fn check(&self, message: &[u8], signature: &[u8]) -> bool {
        let chooser = chooser();
        let n = CHECKS.with(|checks| {
            let n = checks.get().wrapping_add(1);
            checks.set(n);
            n
        });
        if n % SAMPLE_EVERY != 0 || !chooser.learning() {
            return self.verify(chooser.current(), message, signature);
        }
        // Prepared before the clock starts: preparing is not checking.
        let _ = self.aws_lc();
        let order = if (n / SAMPLE_EVERY) % 2 == 0 {
            Ed25519Impl::ALL
        } else {
            [Ed25519Impl::AwsLc, Ed25519Impl::Dalek]
        };
        let mut took = [Duration::ZERO; 2];
        let mut accepted = true;
        for with in order {
            let start = Instant::now();
            accepted &= self.verify(with, message, signature);
            took[with as usize] = start.elapsed();
        }
        chooser.observe(took[0], took[1]);
        accepted
    }

    fn verify(&self, with: Ed25519Impl, message: &[u8], signature: &[u8]) -> bool {
        let Some(signature) = ed25519_shaped(signature) else {
            return false;
        };
        match with {
            Ed25519Impl::Dalek => ed25519_dalek_check(
                &self.dalek,
                message,
                &ed25519_dalek::Signature::from_bytes(signature),
            ),
            Ed25519Impl::AwsLc => self
                .aws_lc()
                .is_some_and(|key| key.verify_sig(message, signature).is_ok()),
        }
    }
}

/// The Ed25519 implementations keyward chooses between. Their speed depends on the
/// processor (which instructions each uses) and on what else the host runs: on some
/// machines one is ahead by 5–15%, on others the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ed25519Impl {
    /// `ed25519-dalek`.
    Dalek = 0,
    /// `aws-lc-rs`.
    AwsLc = 1,
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

/// Which Ed25519 implementation this process checks signatures with now, and the
/// measurement it started from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ed25519Choice {
    pub chosen: Ed25519Impl,
    /// The fastest check each took in the first measurement, in microseconds (0 for one
    /// that refused the measurement's valid signature, and is never chosen).
    pub dalek_micros: f64,
    pub aws_lc_micros: f64,
    /// Where in a page of the stack ed25519-dalek's check is run (see [`placement`]).
    pub dalek_stack_offset: usize,
}

/// The Ed25519 implementation this process checks with now. Measured on first use (a
/// few milliseconds of alternating batches of the same check with each, the faster by its
/// quickest batch chosen, after the placement of ed25519-dalek's check is measured;
/// `keyward serve` measures on a thread of its own as it starts, and only a verification
/// arriving in its first few dozen milliseconds waits for it), then kept current from a
/// sample of the checks themselves (see [`Chooser`]):
/// which one is faster depends on the processor and, on a shared host, can change for
/// minutes at a time, and a few milliseconds at start are not always representative.
pub fn ed25519_choice() -> Ed25519Choice {
    let chooser = chooser();
    Ed25519Choice {
        chosen: chooser.current(),
        ..chooser.first
    }
}

fn chooser() -> &'static Chooser {
    static CHOOSER: LazyLock<Chooser> = LazyLock::new(|| Chooser::new(measure_ed25519()));
    &CHOOSER
}

/// How much each sampled check moves the running estimate (an average over about the
/// last 16 samples).
const LEARNING_WEIGHT: f64 = 1.0 / 16.0;
/// How far (as a log of the time ratio, about 3%) the estimate must lean towards the
/// other implementation before the choice changes, so that two about equal do not swap
/// back and forth.
const SWITCH_MARGIN: f64 = 0.03;
/// The most one sample counts for (a log ratio of about 1.65): a check interrupted
/// half-way says little about the implementation.
const SAMPLE_BOUND: f64 = 0.5;

/// Keeps this process's Ed25519 choice current. Each sampled check (one in
/// [`SAMPLE_EVERY`] per thread) times both implementations on the same signature, back
/// to back, and moves a running estimate of ln(dalek's time / aws-lc-rs's time) a
/// [`LEARNING_WEIGHT`] towards that sample; the choice follows the estimate once it leans
/// past [`SWITCH_MARGIN`]. The first measurement seeds it. Updates from several threads
/// may overwrite one another; a lost sample only slows the estimate.
struct Chooser {
    first: Ed25519Choice,
    /// aws-lc-rs is the choice now (ed25519-dalek otherwise).
    aws_lc: AtomicBool,
    /// The estimate, as `f64` bits: above zero, aws-lc-rs is the faster.
    lean: AtomicU64,
}

impl Chooser {
    fn new(first: Ed25519Choice) -> Self {
        let learning = Self::both_work(&first);
        let lean = if learning {
            (first.dalek_micros / first.aws_lc_micros)
                .ln()
                .clamp(-SAMPLE_BOUND, SAMPLE_BOUND)
        } else {
            0.0
        };
        Self {
            first,
            aws_lc: AtomicBool::new(first.chosen == Ed25519Impl::AwsLc),
            lean: AtomicU64::new(lean.to_bits()),
        }
    }

    fn current(&self) -> Ed25519Impl {
        if self.aws_lc.load(Ordering::Relaxed) {
            Ed25519Impl::AwsLc
        } else {
            Ed25519Impl::Dalek
        }
    }

    /// Both accepted the first measurement's valid signature. Otherwise the one that did
    /// is used for good and nothing is sampled.
    fn both_work(first: &Ed25519Choice) -> bool {
        first.dalek_micros > 0.0 && first.aws_lc_micros > 0.0
    }

    fn learning(&self) -> bool {
        Self::both_work(&self.first)
    }

    /// One sample: how long each implementation took to check the same signature.
    fn observe(&self, dalek: Duration, aws_lc: Duration) {
        let (dalek, aws_lc) = (dalek.as_secs_f64(), aws_lc.as_secs_f64());
        if !self.learning() || dalek <= 0.0 || aws_lc <= 0.0 {
            return;
        }
        let sample = (dalek / aws_lc).ln().clamp(-SAMPLE_BOUND, SAMPLE_BOUND);
        let lean = f64::from_bits(self.lean.load(Ordering::Relaxed));
        let lean = lean + (sample - lean) * LEARNING_WEIGHT;
        self.lean.store(lean.to_bits(), Ordering::Relaxed);
        if lean > SWITCH_MARGIN {
            self.aws_lc.store(true, Ordering::Relaxed);
        } else if lean < -SWITCH_MARGIN {
            self.aws_lc.store(false, Ordering::Relaxed);
        }
    }
}

fn measure_ed25519() -> Ed25519Choice {
    use ed25519_dalek::Signer as _;
    const ROUNDS: usize = 8;
    const BATCH: u32 = 8;
    let signer = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    // About the length of a webhook answer's signing input.
    let message = [b'e'; 200];
    let signature = signer.sign(&message).to_bytes();
    let public = signer.verifying_key().to_bytes();
    let Some(key) = Ed25519Key::new(public) else {
        return Ed25519Choice {
            chosen: Ed25519Impl::Dalek,
            dalek_micros: 0.0,
            aws_lc_micros: 0.0,
            dalek_stack_offset: *DALEK_OFFSET,
        };
    };
    // Prepared before the clock starts.
    let _ = key.aws_lc();
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
            batch(&key, Ed25519Impl::Dalek, &mut dalek);
            batch(&key, Ed25519Impl::AwsLc, &mut aws_lc);
        } else {
            batch(&key, Ed25519Impl::AwsLc, &mut aws_lc);
            batch(&key, Ed25519Impl::Dalek, &mut dalek);
        }
    }
    let micros = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6 / f64::from(BATCH));
    Ed25519Choice {
        chosen: faster(dalek, aws_lc),
        dalek_micros: micros(dalek),
        aws_lc_micros: micros(aws_lc),
        dalek_stack_offset: *DALEK_OFFSET,
    }
}

/// ed25519-dalek's plain check, run at the offset of a stack page measured fastest for
/// it in this process (see [`placement`]). keyward's Ed25519 checks with ed25519-dalek
/// go through here; public so that a bare-call baseline can be placed alike.
pub fn ed25519_dalek_check(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &ed25519_dalek::Signature,
) -> bool {
    placed_check(*DALEK_OFFSET, key, message, signature)
}

/// [`dalek_check`] at `offset` of a stack page.
fn placed_check(
    offset: usize,
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &ed25519_dalek::Signature,
) -> bool {
    let mut accepted = false;
    placement::at(offset, &mut || {
        accepted = dalek_check(key, message, signature)
    });
    accepted
}

/// The check itself, never inlined: its frame, where the check keeps its scratch space,
/// is then laid out alike wherever it is called from, so that the offset measured for it
/// holds for every caller.
#[inline(never)]
fn dalek_check(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &ed25519_dalek::Signature,
) -> bool {
    use ed25519_dalek::Verifier as _;
    key.verify(message, signature).is_ok()
}

/// Where in a page of the stack ed25519-dalek's check runs fastest in this process (see
/// [`placement`]), measured at first use: offsets 128 bytes apart, three rounds of four
/// checks each, each offset judged by its quickest round, and the middle of the longest
/// run of fast offsets taken, away from the slow ones. About 15 ms.
static DALEK_OFFSET: LazyLock<usize> = LazyLock::new(|| {
    use ed25519_dalek::Signer as _;
    const ROUNDS: usize = 3;
    const BATCH: usize = 4;
    let signer = ed25519_dalek::SigningKey::from_bytes(&[0x3c; 32]);
    let message = [b'e'; 200];
    let signature = signer.sign(&message);
    let key = signer.verifying_key();
    let offsets: Vec<usize> = placement::offsets().collect();
    let mut quickest = vec![Duration::MAX; offsets.len()];
    for _ in 0..ROUNDS {
        for (slot, &offset) in offsets.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..BATCH {
                std::hint::black_box(placed_check(
                    offset,
                    &key,
                    std::hint::black_box(&message),
                    &signature,
                ));
            }
            quickest[slot] = quickest[slot].min(start.elapsed());
        }
    }
    middle_of_fastest_run(&quickest).map_or(0, |slot| offsets[slot])
});

/// The middle of the longest run of slots (wrapping around, as offsets in a page do)
/// within 5% of the quickest; `None` for no slots.
fn middle_of_fastest_run(times: &[Duration]) -> Option<usize> {
    let n = times.len();
    let quickest = *times.iter().min()?;
    let fast = |i: usize| times[i % n] <= quickest.mul_f64(1.05);
    // Scanned from a slow slot, so that no run is cut by where the scan starts.
    let Some(slow) = (0..n).find(|&i| !fast(i)) else {
        return Some(0);
    };
    let (mut best, mut length) = ((0, 0), 0);
    for k in 1..n {
        if fast(slow + k) {
            length += 1;
            if length > best.1 {
                best = (slow + k + 1 - length, length);
            }
        } else {
            length = 0;
        }
    }
    Some((best.0 + (best.1 - 1) / 2) % n)
}

/// Running a function at a chosen offset of the stack's 4 KiB pages. ed25519-dalek's
/// check took 30.7 µs with its frame at some offsets of a page and 34–48 µs at others on
/// the AMD EPYC of docs/performance.md, the same offsets in every process whatever the
/// address space's randomization (probably its scratch space on the stack and the
/// constant tables it reads competing for the same sets of the first-level cache, which
/// the offset in the page selects). So where a thread's stack happened to be when it
/// checked a signature made the check up to half again as slow, differently from one
/// build, caller or process start to the next.
mod placement {
    use std::hint::black_box;
    use std::mem::MaybeUninit;
    use std::sync::LazyLock;

    const PAGE: usize = 4096;
    /// Bytes each level of [`descend`] keeps on the stack (its frame is a little more):
    /// small, so that a check lands within a few dozen bytes of the offset chosen (with
    /// 96-byte levels, checks placed from 18 depths of a thread averaged 31.2–33.6 µs in
    /// five processes, against 31.4–32.0 µs), at the cost of up to about 85 calls of a
    /// few instructions each per check.
    const PAD: usize = 16;
    /// How far apart the offsets measured to choose one are: the fast and slow runs of
    /// offsets are several hundred bytes long.
    const SCAN: usize = 128;

    /// The address of a local of the calling frame: where the stack is now.
    #[inline(always)]
    fn here() -> usize {
        let marker = 0u8;
        black_box(std::ptr::addr_of!(marker)) as usize
    }

    /// Calls `f` `levels` frames further down the stack, with the address of a local of
    /// the deepest frame.
    #[inline(never)]
    fn descend(levels: usize, f: &mut dyn FnMut(usize)) {
        if levels == 0 {
            f(here());
            return;
        }
        let pad = [MaybeUninit::<u8>::uninit(); PAD];
        black_box(&pad);
        descend(levels - 1, f);
        black_box(&pad);
    }

    /// How far below [`run`]'s own frame the deepest frame of no level is, and how far
    /// each level descends: the same at every call, measured once.
    struct Geometry {
        base: usize,
        step: usize,
    }

    static GEOMETRY: LazyLock<Option<Geometry>> = LazyLock::new(|| {
        let base = run(Some(0), 0, &mut || {});
        let step = run(Some(1), 0, &mut || {}).checked_sub(base)?;
        (step > 0 && step < PAGE).then_some(Geometry { base, step })
    });

    /// Calls `f` at `levels` levels, or, given none, at as many as put the deepest
    /// frame at `target` bytes into its page (or up to one step above); returns the
    /// distance from this frame to that deepest frame's local.
    #[inline(never)]
    fn run(levels: Option<usize>, target: usize, f: &mut dyn FnMut()) -> usize {
        let top = here();
        let levels = levels.unwrap_or_else(|| {
            GEOMETRY.as_ref().map_or(0, |g| {
                (top.wrapping_sub(g.base).wrapping_sub(target) % PAGE) / g.step
            })
        });
        let mut deepest = top;
        descend(levels, &mut |at| {
            deepest = at;
            f();
        });
        top.wrapping_sub(deepest)
    }

    /// Calls `f` with the stack about `target` bytes into a page (within a step above
    /// it), as far as it can be placed (not at all if the stack's frames could not be
    /// measured).
    pub(super) fn at(target: usize, f: &mut dyn FnMut()) {
        run(None, target, f);
    }

    /// Offsets across a page to measure: [`SCAN`] bytes apart, or a step if steps are
    /// longer (just `0` if the frames could not be measured).
    pub(super) fn offsets() -> impl Iterator<Item = usize> {
        let step = GEOMETRY.as_ref().map_or(PAGE, |g| g.step.max(SCAN));
        (0..PAGE).step_by(step)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_function_placed_at_an_offset_runs_there() {
            let step = GEOMETRY.as_ref().expect("the frames are measured").step;
            assert!((PAD..PAGE / 8).contains(&step), "{step}");
            for target in (0..PAGE).step_by(step) {
                // From frames at different depths too.
                for depth in [0, 3, 11] {
                    let mut seen = None;
                    descend(depth, &mut |_| {
                        at(target, &mut || seen = Some(here() % PAGE));
                    });
                    let seen = seen.expect("f was called");
                    // The local of the closure's frame lies a little below the
                    // deepest level's; both within a step or two above the target.
                    let above = (seen + PAGE - target) % PAGE;
                    let below = (target + PAGE - seen) % PAGE;
                    assert!(
                        above <= 2 * step || below <= 256,
                        "target {target}, depth {depth}: ran at {seen}"
                    );
                }
            }
        }
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

    #[test]
    fn the_placement_chosen_is_the_middle_of_the_longest_run_of_fast_offsets() {
        let us = |v: &[u64]| v.iter().map(|&m| micros(m)).collect::<Vec<_>>();
        // The quickest slot (3) is at the edge of the run 3..=8.
        assert_eq!(
            middle_of_fastest_run(&us(&[40, 40, 40, 30, 31, 31, 31, 31, 31, 40])),
            Some(5)
        );
        // A shorter fast run elsewhere does not count; the long one wraps around.
        assert_eq!(
            middle_of_fastest_run(&us(&[31, 31, 40, 30, 40, 40, 31, 31, 31, 31])),
            Some(8)
        );
        assert_eq!(middle_of_fastest_run(&us(&[31, 31, 31])), Some(0));
        assert_eq!(middle_of_fastest_run(&[]), None);
    }

    fn first(chosen: Ed25519Impl, dalek_micros: f64, aws_lc_micros: f64) -> Ed25519Choice {
        Ed25519Choice {
            chosen,
            dalek_micros,
            aws_lc_micros,
            dalek_stack_offset: 0,
        }
    }

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn a_first_choice_the_samples_contradict_is_changed_after_a_run_of_them() {
        // Measured at a bad moment: aws-lc-rs looked faster.
        let chooser = Chooser::new(first(Ed25519Impl::AwsLc, 40.0, 36.0));
        assert_eq!(chooser.current(), Ed25519Impl::AwsLc);
        chooser.observe(micros(31), micros(36));
        assert_eq!(
            chooser.current(),
            Ed25519Impl::AwsLc,
            "one sample is not enough"
        );
        let switched = (0..64).position(|_| {
            chooser.observe(micros(31), micros(36));
            chooser.current() == Ed25519Impl::Dalek
        });
        assert!(switched.is_some_and(|n| n >= 4), "{switched:?}");
        // And back, if the machine changes.
        for _ in 0..64 {
            chooser.observe(micros(40), micros(36));
        }
        assert_eq!(chooser.current(), Ed25519Impl::AwsLc);
    }

    #[test]
    fn implementations_about_level_and_lone_outliers_do_not_change_the_choice() {
        let chooser = Chooser::new(first(Ed25519Impl::Dalek, 31.0, 36.0));
        // aws-lc-rs 1% faster, for long: within the margin.
        for _ in 0..256 {
            chooser.observe(micros(101), micros(100));
        }
        assert_eq!(chooser.current(), Ed25519Impl::Dalek);
        // One check interrupted half-way.
        let chooser = Chooser::new(first(Ed25519Impl::Dalek, 31.0, 36.0));
        chooser.observe(micros(3_000), micros(36));
        assert_eq!(chooser.current(), Ed25519Impl::Dalek);
    }

    #[test]
    fn an_implementation_that_refused_a_valid_signature_is_never_sampled_or_chosen() {
        let chooser = Chooser::new(first(Ed25519Impl::Dalek, 31.0, 0.0));
        assert!(!chooser.learning());
        for _ in 0..256 {
            chooser.observe(micros(60), micros(20));
        }
        assert_eq!(chooser.current(), Ed25519Impl::Dalek);
    }

    #[test]
    fn sampled_checks_answer_as_the_others_do() {
        use ed25519_dalek::Signer as _;
        let signer = ed25519_dalek::SigningKey::from_bytes(&[0x17; 32]);
        let key = Ed25519Key::new(signer.verifying_key().to_bytes()).expect("a valid key");
        let message = b"header.claims";
        let good = signer.sign(message).to_bytes();
        let mut bad = good;
        bad[40] ^= 1;
        // Three calls a round, so that the sampled ones (every SAMPLE_EVERY-th on this
        // thread) fall on each kind of call in turn.
        for _ in 0..3 * SAMPLE_EVERY {
            assert!(key.check(message, &good));
            assert!(!key.check(message, &bad));
            assert!(!key.check(b"another input", &good));
        }
    }

    fn ed25519_signer(seed: u8) -> (ed25519_dalek::SigningKey, VerifyingKey) {
        let signer = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let key = Ed25519Key::new(signer.verifying_key().to_bytes()).expect("a valid key");
        (signer, VerifyingKey::Ed25519(key))
    }

    #[test]
    fn checks_together_answer_as_single_checks() {
        use ed25519_dalek::Signer as _;
        let signers: Vec<_> = (1..=5).map(ed25519_signer).collect();
        let ecdsa = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("a P-256 key");
        let ecdsa_key = VerifyingKey::P256(
            ParsedPublicKey::new(
                &ECDSA_P256_SHA256_FIXED,
                ecdsa.verifying_key().to_encoded_point(false).as_bytes(),
            )
            .expect("a P-256 key"),
        );
        let messages: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("header.claims-{i}").into_bytes())
            .collect();
        let good: Vec<Vec<u8>> = signers
            .iter()
            .zip(&messages)
            .map(|((signer, _), m)| signer.sign(m).to_bytes().to_vec())
            .collect();
        let mut bad_s = good[1].clone();
        bad_s[40] ^= 1;
        let mut bad_r = good[2].clone();
        bad_r[3] ^= 1;
        // S + L: the same scalar, not reduced (a malleable twin).
        let mut unreduced = good[3].clone();
        add_le(&mut unreduced[32..], &GROUP_ORDER);
        let mut small_r = good[4].clone();
        small_r[..32].copy_from_slice(&SMALL_ORDER_ENCODINGS[1]);
        let ecdsa_message = b"header.claims-ecdsa";
        let ecdsa_good: p256::ecdsa::Signature = ecdsa.sign(ecdsa_message);
        let ecdsa_good = ecdsa_good.to_bytes().to_vec();

        let mut cases: Vec<(SignatureToCheck<'_>, bool)> = Vec::new();
        for i in 0..5 {
            cases.push((check(&signers[i].1, &messages[i], &good[i]), true));
        }
        cases.push((check(&signers[1].1, &messages[1], &bad_s), false));
        cases.push((check(&signers[2].1, &messages[2], &bad_r), false));
        cases.push((check(&signers[3].1, &messages[3], &unreduced), false));
        cases.push((check(&signers[4].1, &messages[4], &small_r), false));
        cases.push((check(&signers[0].1, b"another input", &good[0]), false));
        cases.push((check(&signers[0].1, &messages[0], &good[0][..63]), false));
        cases.push((check(&ecdsa_key, ecdsa_message, &ecdsa_good), true));
        cases.push((check(&ecdsa_key, &messages[0], &ecdsa_good), false));
        // Every subset in a few orders: good ones alone (a batch that passes), each bad
        // one among good ones (a batch that fails), and one at a time.
        let all: Vec<_> = cases.iter().map(|(c, _)| *c).collect();
        let expected: Vec<bool> = cases.iter().map(|(_, v)| *v).collect();
        for (c, v) in &cases {
            assert_eq!(c.key.verify(c.message, c.signature), *v);
        }
        for round in 0..3 {
            assert_eq!(verify_all(&all), expected, "round {round}");
            let goods: Vec<_> = all[..5].to_vec();
            assert_eq!(verify_all(&goods), vec![true; 5]);
            for bad in 5..all.len() {
                let mut mixed = all[..5].to_vec();
                mixed.insert(bad % 5, all[bad]);
                let mut wanted = vec![true; 5];
                wanted.insert(bad % 5, expected[bad]);
                assert_eq!(verify_all(&mixed), wanted, "case {bad}");
            }
            for (c, v) in &cases {
                assert_eq!(verify_all(&[*c]), vec![*v]);
            }
        }
        assert!(verify_all(&[]).is_empty());
    }

    fn check<'a>(
        key: &'a VerifyingKey,
        message: &'a [u8],
        signature: &'a [u8],
    ) -> SignatureToCheck<'a> {
        SignatureToCheck {
            key,
            message,
            signature,
        }
    }

    /// The order of Ed25519's prime-order subgroup, L = 2^252 + 27742317777372353535851937790883648493,
    /// little-endian.
    const GROUP_ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// `a += b`, little-endian, dropping the carry out of the top byte.
    fn add_le(a: &mut [u8], b: &[u8; 32]) {
        let mut carry = 0u16;
        for (x, y) in a.iter_mut().zip(b) {
            let sum = u16::from(*x) + u16::from(*y) + carry;
            *x = sum as u8;
            carry = sum >> 8;
        }
    }

    #[test]
    fn the_canonical_encoding_test_agrees_with_decoding_and_encoding_again() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let mut encodings: Vec<[u8; 32]> = Vec::new();
        // y from p (2^255 - 19) up to 2^255 - 1, y = 0, 1, 2 and p - 1, each with either
        // sign bit, and points of keys and signatures.
        for k in 0u8..19 {
            let mut y = [0xff; 32];
            y[31] = 0x7f;
            y[0] = 0xed + k;
            encodings.push(y);
        }
        for low in [0u8, 1, 2] {
            let mut y = [0; 32];
            y[0] = low;
            encodings.push(y);
        }
        let mut minus_one = [0xff; 32];
        minus_one[31] = 0x7f;
        minus_one[0] = 0xec;
        encodings.push(minus_one);
        encodings.extend(SMALL_ORDER_ENCODINGS.iter().copied());
        for seed in 1..=16u8 {
            let signer = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            encodings.push(signer.verifying_key().to_bytes());
            use ed25519_dalek::Signer as _;
            encodings.push(signer.sign(b"m").to_bytes()[..32].try_into().unwrap());
        }
        let with_either_sign: Vec<[u8; 32]> = encodings
            .iter()
            .flat_map(|e| {
                let mut flipped = *e;
                flipped[31] ^= 0x80;
                [*e, flipped]
            })
            .collect();
        let (mut canonical, mut other) = (0, 0);
        for e in with_either_sign {
            if let Some(point) = CompressedEdwardsY(e).decompress() {
                let is_canonical = point.compress().to_bytes() == e;
                assert_eq!(canonical_encoding(&e), is_canonical, "{e:02x?}");
                if is_canonical {
                    canonical += 1;
                } else {
                    other += 1;
                }
            }
        }
        // Both kinds were there to tell apart.
        assert!(canonical > 30 && other > 4, "{canonical} {other}");
    }

    #[test]
    fn a_key_with_a_small_order_component_is_never_checked_in_a_batch() {
        use ed25519_dalek::Signer as _;
        let signer = ed25519_dalek::SigningKey::from_bytes(&[0x23; 32]);
        let mixed =
            signer.verifying_key().to_edwards() + curve25519_dalek::constants::EIGHT_TORSION[1];
        let key = Ed25519Key::new(mixed.compress().to_bytes()).expect("not of small order");
        let signature = signer.sign(b"m").to_bytes();
        for _ in 0..3 {
            assert!(key.batchable(&signature).is_none());
        }
        let (_, plain) = ed25519_signer(0x23);
        let VerifyingKey::Ed25519(plain) = plain else {
            unreachable!()
        };
        // A key's first signature is checked alone; from its second on, the key is known
        // to have no small-order component.
        assert!(plain.batchable(&signature).is_none());
        assert!(plain.batchable(&signature).is_some());
        assert!(plain.batchable(&signature).is_some());
    }
}
