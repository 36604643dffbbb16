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

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// An Ed25519 public key, prepared for either implementation: ed25519-dalek's form at
/// once (validating the key needs it anyway), aws-lc-rs's at its first use.
pub struct Ed25519Key {
    bytes: [u8; 32],
    dalek: ed25519_dalek::VerifyingKey,
    aws_lc: OnceLock<Option<ParsedPublicKey>>,
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
        })
    }

    fn aws_lc(&self) -> Option<&ParsedPublicKey> {
        self.aws_lc
            .get_or_init(|| ParsedPublicKey::new(&ED25519, self.bytes).ok())
            .as_ref()
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
        let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
            return false;
        };
        if signature
            .first_chunk::<32>()
            .is_some_and(|r| SMALL_ORDER_ENCODINGS.contains(r))
        {
            return false;
        }
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
}
