//! The raw JSON request body.
//!
//! Handlers receive the body's bytes, not a parsed value, for two reasons: the rules
//! need the raw JSON (a repeated member must be refused, which a map-based parse would
//! hide), and the contract orders the checks — authentication, then authorization, then
//! the body. So reading the body never fails here; a wrong media type or an oversized
//! body is kept and reported by [`JsonBody::bytes`] when the handler asks.

use std::marker::PhantomData;

use poem::web::headers::{ContentLength, HeaderMapExt};
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::error::{payload_too_large, unsupported_media_type, ApiError};

/// The largest request body the service reads, set by the operator.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body documented as `T` and handed over raw.
pub struct JsonBody<T> {
    bytes: Result<Vec<u8>, ApiError>,
    _schema: PhantomData<fn() -> T>,
}

impl<T> JsonBody<T> {
    /// The body, or the error reading it produced.
    pub fn bytes(&self) -> Result<&[u8], ApiError> {
        self.bytes.as_deref().map_err(Clone::clone)
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A refused body up to this size is still read (and dropped) so the connection stays
/// usable and the client, still sending, sees the answer; a larger one is not read at all.
const DRAIN_CAP: u64 = 1 << 20;

async fn read(request: &Request, body: &mut RequestBody) -> Result<Vec<u8>, ApiError> {
    let limit = request.data::<BodyLimit>().map_or(65_536, |l| l.0);
    let declared = request
        .headers()
        .typed_get::<ContentLength>()
        .map(|ContentLength(len)| len);
    let body = body.take().map_err(|_| {
        ApiError::new(
            poem::http::StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "the request body could not be read",
        )
    })?;
    let timeout = request
        .data::<crate::limits::Limits>()
        .map_or(std::time::Duration::from_secs(10), |l| l.body_read_timeout);
    if declared.is_some_and(|len| len > limit as u64) {
        if declared.is_some_and(|len| len <= DRAIN_CAP) {
            let _ = tokio::time::timeout(timeout, body.into_bytes_limit(DRAIN_CAP as usize)).await;
        }
        return Err(payload_too_large(Some(limit)));
    }
    let Ok(read) = tokio::time::timeout(timeout, body.into_bytes_limit(limit)).await else {
        return Err(crate::error::request_timeout());
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            return Err(payload_too_large(Some(limit)))
        }
        Err(_) => {
            return Err(ApiError::new(
                poem::http::StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "the request body could not be read completely; send it again",
            ))
        }
    };
    if !request.content_type().is_some_and(is_json) {
        return Err(unsupported_media_type());
    }
    Ok(bytes.to_vec())
}

impl<'a, T: Type> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self {
            bytes: read(request, body).await,
            _schema: PhantomData,
        })
    }
}
