//! The verify operation: does this signed webhook response come from a registered key?

use std::cell::RefCell;
use std::collections::HashMap;

use keyward_domain::{KeyService, Rejection, SignatureCheck, StoreError, Verification, VerifyStep};
use metrics::Counter;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};

use crate::auth::AdminAuth;
use crate::body::JsonBody;
use crate::direct::Direct;
use crate::error::error_responses;
use crate::state::{answered, blocking, AppState};

#[derive(Tags)]
enum ApiTags {
    /// Check signed webhook responses against the registered keys.
    #[oai(rename = "Signed responses")]
    SignedResponses,
}

/// A signed webhook response and the evaluation it should answer.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields, example)]
pub struct VerifyRequestBody {
    /// The compact JWS your webhook returned (header.payload.signature). Its header names
    /// the registered key in `kid`; its claims hold `evaluationId`, an integer
    /// `statusCode` and `iat` (and optionally `exp`).
    pub token: String,
    /// The evaluation the platform asked about.
    #[oai(validator(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]+$"
    ))]
    pub evaluation_id: String,
}

impl poem_openapi::types::Example for VerifyRequestBody {
    fn example() -> Self {
        Self {
            token: "eyJhbGciOiJFZERTQSIsImtpZCI6Im15LWtleS12MiJ9.eyJldmFsdWF0aW9uSWQiOiJldmFsLTEyMyIsInN0YXR1c0NvZGUiOjIwMCwiaWF0IjoxNzY4MjEzODAwfQ.c2lnbmF0dXJl".into(),
            evaluation_id: "eval-123".into(),
        }
    }
}

/// Why a token was not accepted.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    MalformedToken,
    UnknownKey,
    KeyRevoked,
    AlgorithmNotAllowed,
    BadSignature,
    EvaluationIdMismatch,
    MissingClaim,
    InvalidClaim,
    TokenExpired,
    IssuedInFuture,
    Replayed,
    JwksUnavailable,
}

impl From<&Rejection> for Reason {
    fn from(rejection: &Rejection) -> Self {
        match rejection {
            Rejection::MalformedToken(_) => Self::MalformedToken,
            Rejection::UnknownKey | Rejection::NotInJwks => Self::UnknownKey,
            Rejection::KeyRevoked => Self::KeyRevoked,
            Rejection::AlgorithmNotAllowed(_) => Self::AlgorithmNotAllowed,
            Rejection::BadSignature => Self::BadSignature,
            Rejection::EvaluationIdMismatch => Self::EvaluationIdMismatch,
            Rejection::MissingClaim(_) => Self::MissingClaim,
            Rejection::InvalidClaim(_) => Self::InvalidClaim,
            Rejection::TokenExpired(_) => Self::TokenExpired,
            Rejection::IssuedInFuture(_) => Self::IssuedInFuture,
            Rejection::Replayed => Self::Replayed,
            Rejection::JwksUnavailable(_) => Self::JwksUnavailable,
        }
    }
}

/// The verdict. `valid: true` comes with `keyId`, `statusCode` and `approved`
/// (`statusCode == 200`); `valid: false` with `reason` and `message`.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct VerifyResult {
    pub valid: bool,
    /// The key that signed (valid tokens).
    #[oai(skip_serializing_if_is_none)]
    pub key_id: Option<String>,
    /// The webhook's answer (valid tokens).
    #[oai(skip_serializing_if_is_none)]
    pub status_code: Option<i64>,
    /// `statusCode == 200` (valid tokens).
    #[oai(skip_serializing_if_is_none)]
    pub approved: Option<bool>,
    /// Why the token was refused (invalid tokens).
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<Reason>,
    /// What is wrong and what to do (invalid tokens).
    #[oai(skip_serializing_if_is_none)]
    pub message: Option<String>,
}

impl From<Verification> for VerifyResult {
    fn from(verification: Verification) -> Self {
        match verification {
            Verification::Valid {
                key_id,
                status_code,
            } => Self {
                valid: true,
                key_id: Some(key_id),
                status_code: Some(status_code),
                approved: Some(status_code == 200),
                reason: None,
                message: None,
            },
            Verification::Invalid(rejection) => Self {
                valid: false,
                key_id: None,
                status_code: None,
                approved: None,
                reason: Some(Reason::from(&rejection)),
                message: Some(rejection.message()),
            },
        }
    }
}

#[derive(ApiResponse, Debug)]
enum VerifyResponse {
    /// The verdict on the token, valid or not.
    #[oai(status = 200)]
    Ok(Direct<VerifyResult>),
}

error_responses!(
    /// Why the request itself was refused.
    VerifyError {
        /// The body is not `{token, evaluationId}` (`INVALID_REQUEST`).
        BadRequest = 400,
        /// The body is not JSON (`UNSUPPORTED_MEDIA_TYPE`).
        UnsupportedMediaType = 415,
    }
);

/// The verification operation.
pub struct VerifyApi;

#[OpenApi(prefix_path = "/api/policy/v1", tag = "ApiTags::SignedResponses")]
impl VerifyApi {
    /// Verify a signed webhook response
    ///
    /// Checks a compact JWS your webhook returned: its header's `kid` must name an
    /// ACTIVE key of this enterprise and its `alg` fit that key (EdDSA, ES256, ES384,
    /// ES256K; never `none` or HMAC; no key carried in the header); the signature must
    /// verify; its claims must hold this `evaluationId`, an integer `statusCode`, and an
    /// `iat` within the clock skew (`exp`, if present, not passed). Each evaluationId
    /// verifies successfully once. Use it to confirm a new key works before revoking the
    /// old one. Caller must be an admin of the enterprise.
    #[oai(
        path = "/enterprises/:enterpriseId/webhooks/responses/verify",
        method = "post",
        operation_id = "verifyResponse"
    )]
    async fn verify(
        &self,
        auth: AdminAuth,
        state: Data<&AppState>,
        /// The enterprise id.
        #[oai(name = "enterpriseId")]
        _enterprise_id: Path<String>,
        body: JsonBody<VerifyRequestBody>,
    ) -> Result<VerifyResponse, VerifyError> {
        let admin = auth.0;
        let keys = state.keys.clone();
        // The usual case runs here without a thread of its own: the key is known, the
        // crypto is short (an Ed25519 signature is checked in a batch with those of the
        // verifications beside it, see `checked_together`), and the replay record is
        // awaited, not blocked on. A key not in memory, on a networked database, is
        // awaited from the store's key reader (which reads the keys asked for at the
        // same time in one statement), then the body is taken up again; on the
        // embedded one, where a read is a little CPU, it is read on a blocking thread,
        // as is a key registered by jwksUri (whose JWKS may have to be fetched).
        let mut step = keys.verify_body_cached(&admin, body.bytes()?)?;
        if state.reads_inline && matches!(step, Some(VerifyStep::Load(_))) {
            step = None;
        }
        if let Some(VerifyStep::Load(load)) = step {
            let read = answered(
                |done| keys.fetch_key(&load, done),
                || Err(StoreError::Unavailable("the key read was dropped".into())),
            )
            .await;
            step = match keys.learn_key(load, read)? {
                Some(rejection) => Some(VerifyStep::Done(Verification::Invalid(rejection))),
                // Forgotten again already (a full cache): read it on a blocking thread.
                None => keys
                    .verify_body_cached(&admin, body.bytes()?)?
                    .filter(|step| !matches!(step, VerifyStep::Load(_))),
            };
        }
        let step = match step {
            Some(step) => step,
            None => {
                let body = body.bytes()?.to_vec();
                let keys = keys.clone();
                blocking(move || keys.verify_body_step(&admin, &body)).await?
            }
        };
        let step = match step {
            VerifyStep::Signature(check) => checked_together(&keys, check).await?,
            step => step,
        };
        let verification = match step {
            VerifyStep::Done(verification) => verification,
            VerifyStep::Load(_) | VerifyStep::Signature(_) => {
                return Err(keyward_domain::DomainError::Internal(
                    "a verification step was left undone".into(),
                )
                .into())
            }
            VerifyStep::Record(pending) => {
                let outcome = answered(
                    |done| keys.submit(&pending, done),
                    || {
                        Err(StoreError::Unavailable(
                            "the replay record was dropped".into(),
                        ))
                    },
                )
                .await;
                keys.finish(pending, outcome)?
            }
        };
        count_verification(&verification);
        Ok(VerifyResponse::Ok(Direct::new(&VerifyResult::from(
            verification,
        ))))
    }
}

/// Checks a token's signature together with those of the verifications in flight
/// beside it, which costs about half as much per signature as checking each alone (see
/// `keyward_domain::crypto::verify_all`). The signature is queued and the request
/// yields: the event loop first runs every other request that is ready (each queuing
/// its own signature, if it has one) and looks for more on its connections; the first
/// of them to resume checks the queued signatures and answers each. On a quiet service
/// that is one signature, checked at once. A request keeps checking batches until its
/// own signature is answered or the queue is empty (another thread then holds its
/// signature and answers it once checked), so none is left behind by a bounded batch.
/// A request dropped meanwhile (its client gone) leaves its signature to the next
/// check, whose answer nobody awaits.
async fn checked_together(
    keys: &KeyService,
    check: SignatureCheck,
) -> Result<VerifyStep, keyward_domain::DomainError> {
    use tokio::sync::oneshot::error::TryRecvError;
    let (done, mut step) = tokio::sync::oneshot::channel();
    keys.queue_signature(
        check,
        Box::new(move |step| {
            let _ = done.send(step);
        }),
    );
    tokio::task::yield_now().await;
    loop {
        match step.try_recv() {
            Ok(step) => return Ok(step),
            Err(TryRecvError::Closed) => return Err(dropped()),
            Err(TryRecvError::Empty) => {}
        }
        if keys.check_queued_signatures() == 0 {
            break;
        }
    }
    step.await.map_err(|_| dropped())
}

fn dropped() -> keyward_domain::DomainError {
    keyward_domain::DomainError::Internal("a queued signature check was dropped".into())
}

/// Counts a verification by outcome and, when it is valid, its replay record. The
/// handles are looked up once per thread and outcome, as the request metrics' are: the
/// registry's own lookup hashes the labels at every call.
fn count_verification(verification: &Verification) {
    thread_local! {
        static OUTCOMES: RefCell<HashMap<&'static str, Counter>> = RefCell::default();
        static RECORDS: Counter = metrics::counter!("keyward_replay_records_written_total");
    }
    let outcome = match verification {
        Verification::Valid { .. } => "VALID",
        Verification::Invalid(rejection) => rejection.code(),
    };
    OUTCOMES.with_borrow_mut(|outcomes| {
        outcomes
            .entry(outcome)
            .or_insert_with(
                || metrics::counter!("keyward_verifications_total", "outcome" => outcome),
            )
            .increment(1);
    });
    if matches!(verification, Verification::Valid { .. }) {
        RECORDS.with(|records| records.increment(1));
    }
}
