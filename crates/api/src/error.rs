//! Every error response, mapped in one place.
//!
//! The rule: a [`DomainError`] becomes the contract's code and the status the contract
//! gives it; "store unavailable" becomes 503; anything internal becomes a 500 whose body
//! says only "internal error" and the request id, with the details in the log. Errors the
//! framework raises (bad JSON, unknown route, wrong method, oversized body, ...) are
//! rewritten into the same `{code, message, status}` shape by [`framework_error`].

use keyward_domain::DomainError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::Object;

/// The body of every error response.
#[derive(Object, Debug, Clone, PartialEq, Eq)]
#[oai(example)]
pub struct ErrorBody {
    /// A stable, machine-readable code, such as `KEY_ID_ALREADY_USED`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The HTTP status, repeated.
    pub status: u16,
}

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        Self {
            code: "KEY_ID_ALREADY_USED".into(),
            message: "the keyId 'my-key-v1' has already been used in this enterprise; keyIds are never reused, even after revocation, so register the key under a new keyId (for example with a version suffix)".into(),
            status: 400,
        }
    }
}

/// An error on its way to becoming a response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "an internal error occurred; retry later, and quote the X-Request-Id header if you report it",
        )
    }

    pub fn into_body(self) -> Json<ErrorBody> {
        Json(ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
            status: self.status.as_u16(),
        })
    }

    /// A `poem::Error` that renders as this error's JSON response.
    pub fn into_poem(self) -> poem::Error {
        poem::Error::from_response(self.into_response())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        self.into_body().with_status(status).into_response()
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        use DomainError as E;
        let status = match &err {
            E::InvalidRequest(_)
            | E::InvalidJwks(_)
            | E::UnsupportedKeyType(_)
            | E::PrivateKeyMaterial(_)
            | E::InvalidJwk(_)
            | E::AlgorithmMismatch(_)
            | E::KeyIdMismatch { .. }
            | E::KeyIdRequired(_)
            | E::InvalidKeyId(_)
            | E::InvalidJwksUri(_)
            | E::KeyIdAlreadyUsed(_) => StatusCode::BAD_REQUEST,
            E::KeyAlreadyRegistered(_) | E::ActiveKeyLimitReached(_) | E::KeyAlreadyRevoked(_) => {
                StatusCode::CONFLICT
            }
            E::KeyNotFound(_) => StatusCode::NOT_FOUND,
            E::Unauthenticated => StatusCode::UNAUTHORIZED,
            E::Forbidden => StatusCode::FORBIDDEN,
            E::Unavailable(detail) => {
                tracing::warn!(detail = %detail, "database unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                return Self::internal();
            }
        };
        Self::new(status, err.code(), err.to_string())
    }
}

/// Rewrites an error raised by the framework (not by a handler) into the error shape.
/// `detail` is the framework's own description, used only where it helps the caller.
pub fn framework_error(status: StatusCode, detail: &str) -> ApiError {
    match status.as_u16() {
        400 => ApiError::new(
            status,
            "INVALID_REQUEST",
            format!("the request could not be read: {detail}"),
        ),
        401 => ApiError::from(DomainError::Unauthenticated),
        403 => ApiError::from(DomainError::Forbidden),
        404 => ApiError::new(
            status,
            "NOT_FOUND",
            "no such resource; the API lives under /api/policy/v1, see /docs",
        ),
        405 => ApiError::new(
            status,
            "METHOD_NOT_ALLOWED",
            "this method is not allowed on this resource; see /docs for the operations",
        ),
        411 => ApiError::new(
            status,
            "LENGTH_REQUIRED",
            "send a Content-Length header with the body",
        ),
        413 => payload_too_large(None),
        415 => unsupported_media_type(),
        406 => ApiError::new(
            status,
            "NOT_ACCEPTABLE",
            "this API answers with application/json only",
        ),
        408 => ApiError::new(
            status,
            "REQUEST_TIMEOUT",
            "the request took too long to arrive; send it again",
        ),
        429 => ApiError::new(
            status,
            "TOO_MANY_REQUESTS",
            "too many requests; wait, then retry",
        ),
        503 => ApiError::new(
            status,
            "SERVICE_UNAVAILABLE",
            "the service is unavailable right now; retry in a few seconds",
        ),
        s if (400..500).contains(&s) => ApiError::new(
            status,
            "INVALID_REQUEST",
            format!("the request was refused: {detail}"),
        ),
        _ => {
            tracing::error!(status = status.as_u16(), detail = %detail, "framework error");
            ApiError::internal()
        }
    }
}

/// A path or query parameter the framework could not parse or that failed its bounds:
/// the message says what the parameter accepts, rather than the parser's words.
pub fn invalid_parameter(name: &str, reason: &str) -> ApiError {
    let message = match name {
        "limit" => {
            "'limit' must be a whole number from 1 to 100 (the page size; 50 if omitted)".to_owned()
        }
        "prevId" => "'prevId' must be a whole number, 0 or more (how many keys to skip; 0 or \
                     omitted for the first page)"
            .to_owned(),
        "status" => {
            "'status' must be ACTIVE or REVOKED (omit it to list keys in both states)".to_owned()
        }
        _ => format!("the '{name}' parameter is not acceptable: {reason}"),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

pub fn payload_too_large(limit: Option<usize>) -> ApiError {
    let message = match limit {
        Some(limit) => {
            format!("the request body is larger than the {limit}-byte limit; send a smaller body")
        }
        None => "the request body is too large; send a smaller body".to_owned(),
    };
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
}

pub fn request_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "REQUEST_TIMEOUT",
        "the request body arrived too slowly; send it again at once",
    )
}

pub fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        "send the body as JSON with 'Content-Type: application/json'",
    )
}

/// Declares an operation's error responses: the statuses particular to it, plus those
/// every authenticated operation can answer (401, 403, 408, 413, 429, 500, 503), each
/// with the error body, so the document lists exactly those. An error whose status the
/// operation does not declare is a bug; it is logged and answered as a 500.
macro_rules! error_responses {
    ($(#[$meta:meta])* $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $status:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(poem_openapi::ApiResponse, Debug)]
        pub enum $name {
            $(
                $(#[doc = $doc])*
                #[oai(status = $status)]
                $variant(poem_openapi::payload::Json<$crate::error::ErrorBody>),
            )*
            /// Missing or invalid bearer token (`UNAUTHENTICATED`).
            #[oai(status = 401)]
            Unauthorized(poem_openapi::payload::Json<$crate::error::ErrorBody>),
            /// Not an admin of this enterprise, or no such enterprise (`FORBIDDEN`).
            #[oai(status = 403)]
            Forbidden(poem_openapi::payload::Json<$crate::error::ErrorBody>),
            /// The request body arrived too slowly (`REQUEST_TIMEOUT`).
            #[oai(status = 408)]
            RequestTimeout(poem_openapi::payload::Json<$crate::error::ErrorBody>),
            /// The request body is over the size limit (`PAYLOAD_TOO_LARGE`).
            #[oai(status = 413)]
            PayloadTooLarge(poem_openapi::payload::Json<$crate::error::ErrorBody>),
            /// Too many failed authentication attempts from this address (`TOO_MANY_REQUESTS`); see `Retry-After`.
            #[oai(status = 429)]
            TooManyRequests(poem_openapi::payload::Json<$crate::error::ErrorBody>),
            /// Internal error (`INTERNAL_ERROR`); details are in the service log under the request id.
            #[oai(status = 500)]
            Internal(poem_openapi::payload::Json<$crate::error::ErrorBody>),
            /// The database is unreachable, or the service is at its limit of requests in flight (`SERVICE_UNAVAILABLE`); retry.
            #[oai(status = 503)]
            Unavailable(poem_openapi::payload::Json<$crate::error::ErrorBody>),
        }

        impl From<$crate::error::ApiError> for $name {
            fn from(err: $crate::error::ApiError) -> Self {
                match err.status.as_u16() {
                    $( $status => Self::$variant(err.into_body()), )*
                    401 => Self::Unauthorized(err.into_body()),
                    403 => Self::Forbidden(err.into_body()),
                    408 => Self::RequestTimeout(err.into_body()),
                    413 => Self::PayloadTooLarge(err.into_body()),
                    429 => Self::TooManyRequests(err.into_body()),
                    503 => Self::Unavailable(err.into_body()),
                    500 => Self::Internal(err.into_body()),
                    other => {
                        tracing::error!(status = other, code = err.code, "undeclared error status for {}", stringify!($name));
                        Self::Internal($crate::error::ApiError::internal().into_body())
                    }
                }
            }
        }

        impl From<keyward_domain::DomainError> for $name {
            fn from(err: keyward_domain::DomainError) -> Self {
                Self::from($crate::error::ApiError::from(err))
            }
        }
    };
}

pub(crate) use error_responses;
