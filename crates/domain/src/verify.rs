//! Verifying a signed webhook response: a compact JWS whose header names a registered key
//! and whose claims answer the evaluation the platform asked about.
//!
//! The checks are ordered so that each costs little before the next: size and shape,
//! the header (algorithm allow-list, no header-borne keys, no `crit`), the key, the
//! signature, then the claims. Nothing here does IO; the caller supplies the key lookup.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Number;

use crate::crypto::VerifyingKey;
use crate::ids::KeyId;
use crate::json::{parse_strict_object, Member, Members};
use crate::jwk::Curve;
use crate::model::Timestamp;

/// The largest token accepted, in bytes. A webhook answer is a few hundred.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was not accepted. Each is a `reason` code of the verify operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    MalformedToken(String),
    UnknownKey,
    /// The kid names a key registered by jwksUri, but the set fetched from that URI has
    /// no key with this kid (`UNKNOWN_KEY` too, with a message that says where to look).
    NotInJwks,
    KeyRevoked,
    AlgorithmNotAllowed(String),
    BadSignature,
    EvaluationIdMismatch,
    MissingClaim(&'static str),
    InvalidClaim(&'static str),
    TokenExpired(String),
    IssuedInFuture(String),
    Replayed,
    JwksUnavailable(String),
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedToken(_) => "MALFORMED_TOKEN",
            Self::UnknownKey | Self::NotInJwks => "UNKNOWN_KEY",
            Self::KeyRevoked => "KEY_REVOKED",
            Self::AlgorithmNotAllowed(_) => "ALGORITHM_NOT_ALLOWED",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::EvaluationIdMismatch => "EVALUATION_ID_MISMATCH",
            Self::MissingClaim(_) => "MISSING_CLAIM",
            Self::InvalidClaim(_) => "INVALID_CLAIM",
            Self::TokenExpired(_) => "TOKEN_EXPIRED",
            Self::IssuedInFuture(_) => "ISSUED_IN_FUTURE",
            Self::Replayed => "REPLAYED",
            Self::JwksUnavailable(_) => "JWKS_UNAVAILABLE",
        }
    }

    /// A sentence for the integrator: what is wrong and what to do.
    pub fn message(&self) -> String {
        match self {
            Self::MalformedToken(why) => format!("the token is not an acceptable compact JWS: {why}"),
            Self::UnknownKey => "the token's kid names no key registered in this enterprise; register the key first, or sign with a registered one".into(),
            Self::NotInJwks => format!(
                "the token's kid names a key registered by jwksUri, but the key set last fetched from that URI has no key with this kid; publish the public key there under this kid (if you just did, retry in {s} seconds: a set that lacks a kid is fetched again at most once every {s} seconds)",
                s = crate::ports::JWKS_UNKNOWN_KID_COOLDOWN_SECS
            ),
            Self::KeyRevoked => "the token is signed with a revoked key; sign with an active key".into(),
            Self::AlgorithmNotAllowed(why) => format!("the token's algorithm is not allowed: {why}"),
            Self::BadSignature => "the signature does not verify with the registered key; sign with the private key that matches it (ECDSA signatures in raw r||s form)".into(),
            Self::EvaluationIdMismatch => "the token answers another evaluation: its evaluationId differs from the one asked about".into(),
            Self::MissingClaim(claim) => format!("the token has no '{claim}' claim; include it"),
            Self::InvalidClaim(claim) => {
                let wanted = match *claim {
                    "evaluationId" => "a string: the id of the evaluation the token answers",
                    "statusCode" => "an integer: the webhook's HTTP status (200 approves)",
                    _ => "a NumericDate: seconds since 1970-01-01T00:00:00Z, as a JSON number",
                };
                format!("the token's '{claim}' claim has the wrong type; it must be {wanted}")
            }
            Self::TokenExpired(why) => format!("the token is no longer valid: {why}"),
            Self::IssuedInFuture(why) => format!("the token is not valid yet: {why}; check the signer's clock"),
            Self::Replayed => "this evaluationId has already been answered by a verified token; each evaluation verifies once".into(),
            Self::JwksUnavailable(why) => format!("the key's JWKS URI could not be used: {why}"),
        }
    }
}

/// A token taken apart, its header checked, not yet verified.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    pub kid: KeyId,
    pub alg: &'static str,
    signing_input: &'a str,
    signature: Vec<u8>,
    claims: Claims,
}

/// Algorithms a token may name. Everything else (none, HMAC, RSA, ...) is refused
/// before any key is looked up.
const ALLOWED_ALGS: [&str; 5] = ["EdDSA", "Ed25519", "ES256", "ES384", "ES256K"];
/// Header members that carry or point to a key: keyward only trusts registered keys.
const KEY_BEARING_HEADERS: [&str; 6] = ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"];

fn decode(part: &str, what: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Rejection::MalformedToken(format!("the {what} is not unpadded base64url")))
}

fn object<'a>(bytes: &'a [u8], what: &str) -> Result<Members<'a>, Rejection> {
    match parse_strict_object(bytes) {
        Ok(Some(members)) => Ok(members),
        Ok(None) => Err(Rejection::MalformedToken(format!(
            "the {what} is not a JSON object"
        ))),
        Err(err) => Err(Rejection::MalformedToken(format!("the {what}: {err}"))),
    }
}

/// Takes a compact JWS apart and checks its header.
pub fn parse(token: &str) -> Result<ParsedToken<'_>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::MalformedToken(format!(
            "it is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    if token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(Rejection::MalformedToken(
            "it must have exactly three dot-separated parts (header.payload.signature); encrypted tokens are not accepted".into(),
        ));
    }
    let (signing_input, signature) = token.rsplit_once('.').unwrap_or_default();
    let (header_b64, payload_b64) = signing_input.split_once('.').unwrap_or_default();
    let header_json = decode(header_b64, "header")?;
    let header = object(&header_json, "header")?;

    let alg = match header.get("alg") {
        Some(Member::String(alg)) => alg,
        Some(_) => {
            return Err(Rejection::MalformedToken(
                "the header's 'alg' must be a string".into(),
            ))
        }
        None => return Err(Rejection::MalformedToken("the header has no 'alg'".into())),
    };
    let Some(alg) = ALLOWED_ALGS.into_iter().find(|allowed| allowed == alg) else {
        return Err(Rejection::AlgorithmNotAllowed(format!(
            "'{}' is not accepted; use EdDSA, ES256, ES384 or ES256K with the matching registered key",
            alg.escape_debug()
        )));
    };
    if let Some(member) = KEY_BEARING_HEADERS.into_iter().find(|m| header.contains(m)) {
        return Err(Rejection::MalformedToken(format!(
            "the header carries '{member}'; keyward verifies only with registered keys, so remove it"
        )));
    }
    if header.contains("crit") {
        return Err(Rejection::MalformedToken(
            "the header has 'crit'; no extensions are supported".into(),
        ));
    }
    if header.contains("b64") {
        return Err(Rejection::MalformedToken(
            "the header has 'b64'; unencoded payloads are not supported".into(),
        ));
    }
    if header.contains("enc") || header.contains("zip") {
        return Err(Rejection::MalformedToken(
            "encrypted or compressed tokens are not accepted".into(),
        ));
    }
    let kid = match header.get("kid") {
        Some(Member::String(kid)) => KeyId::parse(kid).map_err(|_| Rejection::UnknownKey)?,
        Some(_) => {
            return Err(Rejection::MalformedToken(
                "the header's 'kid' must be a string".into(),
            ))
        }
        None => {
            return Err(Rejection::MalformedToken(
                "the header has no 'kid'; name the registered key that signed".into(),
            ))
        }
    };
    let claims = Claims::of(&object(&decode(payload_b64, "payload")?, "payload")?);
    let signature = decode(signature, "signature")?;
    if signature.is_empty() {
        return Err(Rejection::MalformedToken("the signature is empty".into()));
    }
    Ok(ParsedToken {
        kid,
        alg,
        signing_input,
        signature,
        claims,
    })
}

/// A claim as read from the payload, judged only once the signature is good.
#[derive(Debug)]
enum Claim<T> {
    /// Absent or null.
    Missing,
    Present(T),
    WrongType,
}

/// The claims keyward reads; the payload's other members are checked as JSON only.
#[derive(Debug)]
pub(crate) struct Claims {
    evaluation_id: Claim<String>,
    status_code: Claim<Number>,
    iat: Claim<Number>,
    exp: Claim<Number>,
    nbf: Claim<Number>,
}

impl Claims {
    fn of(payload: &Members<'_>) -> Self {
        /// The member `name`, kept by `take` when it has the right type.
        fn claim<T>(
            payload: &Members<'_>,
            name: &str,
            take: impl Fn(&Member<'_>) -> Option<T>,
        ) -> Claim<T> {
            match payload.get(name) {
                None | Some(Member::Null) => Claim::Missing,
                Some(member) => take(member).map_or(Claim::WrongType, Claim::Present),
            }
        }
        let number = |member: &Member<'_>| match member {
            Member::Number(n) => Some(n.clone()),
            _ => None,
        };
        Self {
            evaluation_id: claim(payload, "evaluationId", |member| match member {
                Member::String(id) => Some(id.to_string()),
                _ => None,
            }),
            status_code: claim(payload, "statusCode", number),
            iat: claim(payload, "iat", number),
            exp: claim(payload, "exp", number),
            nbf: claim(payload, "nbf", number),
        }
    }
}

/// The claims that matter once the signature is good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status_code: i64,
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl ParsedToken<'_> {
    /// Checks the algorithm fits the key's curve, then the signature.
    pub fn verify_signature(&self, curve: Curve, key: &VerifyingKey) -> Result<(), Rejection> {
        self.check_algorithm(curve)?;
        if key.verify(self.signing_input.as_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// Checks the algorithm fits the key's curve.
    pub fn check_algorithm(&self, curve: Curve) -> Result<(), Rejection> {
        if curve.jws_algs().contains(&self.alg) {
            return Ok(());
        }
        Err(Rejection::AlgorithmNotAllowed(format!(
            "the key '{}' is a {} key, which signs with {}, not {}",
            self.kid,
            curve.crv(),
            curve.jws_algs().join(" or "),
            self.alg
        )))
    }

    /// Checks the claims against the evaluation asked about and the clock.
    pub fn check_claims(
        &self,
        evaluation_id: &str,
        now: Timestamp,
        skew_seconds: i64,
    ) -> Result<Answer, Rejection> {
        self.claims.check(evaluation_id, now, skew_seconds)
    }

    /// The claims, to check once the signature is good.
    pub(crate) fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The token without the text it was parsed from, for its signature to be checked
    /// later (see [`SignedToken`]).
    pub(crate) fn into_signed(self) -> SignedToken {
        SignedToken {
            signing_input: self.signing_input.to_owned(),
            signature: self.signature,
            claims: self.claims,
        }
    }
}

/// A token parsed and its header checked, holding what it signs: what is left to check
/// is the signature (by whoever holds it) and then the claims.
#[derive(Debug)]
pub(crate) struct SignedToken {
    /// The header and payload as sent.
    signing_input: String,
    signature: Vec<u8>,
    claims: Claims,
}

impl SignedToken {
    pub(crate) fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    pub(crate) fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The claims, to check once the signature is good.
    pub(crate) fn claims(&self) -> &Claims {
        &self.claims
    }
}

impl Claims {
    /// Checks the claims against the evaluation asked about and the clock.
    pub(crate) fn check(
        &self,
        evaluation_id: &str,
        now: Timestamp,
        skew_seconds: i64,
    ) -> Result<Answer, Rejection> {
        match &self.evaluation_id {
            Claim::Missing => return Err(Rejection::MissingClaim("evaluationId")),
            Claim::Present(id) if id == evaluation_id => {}
            Claim::Present(_) => return Err(Rejection::EvaluationIdMismatch),
            Claim::WrongType => return Err(Rejection::InvalidClaim("evaluationId")),
        }
        let status_code = match &self.status_code {
            Claim::Missing => return Err(Rejection::MissingClaim("statusCode")),
            Claim::Present(n) => n.as_i64().ok_or(Rejection::InvalidClaim("statusCode"))?,
            Claim::WrongType => return Err(Rejection::InvalidClaim("statusCode")),
        };
        let iat = numeric_date(&self.iat, "iat")?.ok_or(Rejection::MissingClaim("iat"))?;
        let exp = numeric_date(&self.exp, "exp")?;
        let nbf = numeric_date(&self.nbf, "nbf")?;
        let earliest = now.plus_seconds(-skew_seconds);
        let latest = now.plus_seconds(skew_seconds);
        if iat > latest {
            return Err(Rejection::IssuedInFuture(format!(
                "it was issued at {iat}, after now plus the allowed skew"
            )));
        }
        if iat < earliest {
            return Err(Rejection::TokenExpired(format!(
                "it was issued at {iat}, more than {skew_seconds} s ago; sign a fresh answer"
            )));
        }
        if let Some(exp) = exp {
            if exp <= earliest {
                return Err(Rejection::TokenExpired(format!("it expired at {exp}")));
            }
        }
        if let Some(nbf) = nbf {
            if nbf > latest {
                return Err(Rejection::IssuedInFuture(format!(
                    "it is not valid before {nbf}"
                )));
            }
        }
        Ok(Answer {
            status_code,
            issued_at: iat,
            expires_at: exp,
        })
    }
}

/// A NumericDate claim (seconds since the epoch, integer or not), if present.
fn numeric_date(claim: &Claim<Number>, name: &'static str) -> Result<Option<Timestamp>, Rejection> {
    match claim {
        Claim::Missing => Ok(None),
        Claim::Present(n) => {
            let seconds = n
                .as_f64()
                .filter(|s| s.is_finite() && s.abs() < 1e13)
                .ok_or(Rejection::InvalidClaim(name))?;
            Ok(Some(Timestamp::from_millis((seconds * 1000.0) as i64)))
        }
        Claim::WrongType => Err(Rejection::InvalidClaim(name)),
    }
}

/// The verify request body: the token and the evaluation it should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    pub token: String,
    pub evaluation_id: String,
}

impl VerifyRequest {
    pub const MAX_EVALUATION_ID_CHARS: usize = 255;

    /// Parses the raw body `{"token": "...", "evaluationId": "..."}` strictly.
    pub fn from_body(body: &[u8]) -> Result<Self, crate::DomainError> {
        use crate::DomainError::InvalidRequest;
        let Some(body) =
            parse_strict_object(body).map_err(|err| InvalidRequest(err.to_string()))?
        else {
            return Err(InvalidRequest(
                "the body must be a JSON object with 'token' and 'evaluationId'".into(),
            ));
        };
        if let Some(unknown) = body
            .names()
            .find(|name| !matches!(*name, "token" | "evaluationId"))
        {
            return Err(InvalidRequest(format!(
                "unknown member '{}'; the body holds only token and evaluationId",
                unknown.escape_debug()
            )));
        }
        let token = match body.get("token") {
            Some(Member::String(token)) => token.to_string(),
            Some(_) => {
                return Err(InvalidRequest(
                    "'token' must be a string: the compact JWS".into(),
                ))
            }
            None => {
                return Err(InvalidRequest(
                    "'token' is required: the compact JWS your webhook returned".into(),
                ))
            }
        };
        let evaluation_id = match body.get("evaluationId") {
            Some(Member::String(id)) => id.to_string(),
            Some(_) => return Err(InvalidRequest("'evaluationId' must be a string".into())),
            None => {
                return Err(InvalidRequest(
                    "'evaluationId' is required: the evaluation the token should answer".into(),
                ))
            }
        };
        let chars = evaluation_id.chars().count();
        if chars == 0
            || chars > Self::MAX_EVALUATION_ID_CHARS
            || evaluation_id.chars().any(char::is_control)
        {
            return Err(InvalidRequest(format!(
                "'evaluationId' must be 1 to {} printable characters",
                Self::MAX_EVALUATION_ID_CHARS
            )));
        }
        Ok(Self {
            token,
            evaluation_id,
        })
    }
}
