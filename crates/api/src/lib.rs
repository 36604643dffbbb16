//! keyward's HTTP surface: routes, request and response bodies, authentication and the
//! error mapping. The OpenAPI document is generated from this code by [`api_service`],
//! the same function that serves it, and needs no database to build.

mod auth;
mod body;
mod direct;
mod dto;
mod error;
mod keys;
mod limits;
mod middleware;
mod ops;
mod state;
mod types;
mod verify;

use std::sync::Arc;

use poem::middleware::CatchPanic;
use poem::{get, Endpoint, EndpointExt, IntoResponse, Route};
use poem_openapi::OpenApiService;

pub use body::BodyLimit;
pub use error::{ApiError, ErrorBody};
pub use keys::{KeysApi, LastPage};
pub use state::{AppState, MetricsRenderer, RequestId};

/// Where the API lives.
pub const BASE_PATH: &str = "/api/policy/v1";

/// The OpenAPI service: the single source of the served and the committed document.
pub fn api_service() -> OpenApiService<(KeysApi, verify::VerifyApi), ()> {
    OpenApiService::new((KeysApi, verify::VerifyApi), "keyward", env!("CARGO_PKG_VERSION"))
        .description(
            "Register, list, revoke and use the public keys that sign an enterprise's policy-webhook responses. \
             Every error is JSON of the shape {code, message, status}; every response carries X-Request-Id.",
        )
}

/// Request bodies that refuse members they do not document. poem-openapi enforces
/// `deny_unknown_fields` but does not say so in the document, so it is said here.
const CLOSED_SCHEMAS: [&str; 2] = ["RegisterKeyRequest", "VerifyRequestBody"];

/// Links from an operation's success to the operations that take what it returns
/// (OpenAPI `links`, which poem-openapi does not generate): the keyId a registration or
/// a get answers with is the one the key's get and revoke take, in the same enterprise.
/// Each is (operationId, status, link name, operationId it leads to, description).
const LINKS: [(&str, &str, &str, &str, &str); 3] = [
    (
        "registerKey",
        "201",
        "GetKey",
        "getKey",
        "Read the key just registered.",
    ),
    (
        "registerKey",
        "201",
        "RevokeKey",
        "revokeKey",
        "Revoke the key just registered.",
    ),
    (
        "getKey",
        "200",
        "RevokeKey",
        "revokeKey",
        "Revoke this key.",
    ),
];

/// Adds [`LINKS`] to the responses they start from.
fn add_links(spec: &mut serde_json::Value) {
    let Some(paths) = spec.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for (_, status, name, to, description) in LINKS.iter().filter(|link| link.0 == id) {
            let Some(response) = operation
                .pointer_mut(&format!("/responses/{status}"))
                .and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            let links = response
                .entry("links")
                .or_insert_with(|| serde_json::json!({}));
            links[*name] = serde_json::json!({
                "operationId": to,
                "parameters": {
                    "enterpriseId": "$request.path.enterpriseId",
                    "keyId": "$response.body#/keyId",
                },
                "description": description,
            });
        }
    }
}

/// The OpenAPI document as pretty JSON with a trailing newline, exactly as committed in
/// `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let generated = api_service().spec();
    let mut spec: serde_json::Value = match serde_json::from_str(&generated) {
        Ok(spec) => spec,
        Err(_) => return generated + "\n",
    };
    for name in CLOSED_SCHEMAS {
        if let Some(schema) = spec
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(|s| s.as_object_mut())
        {
            schema.insert(
                "additionalProperties".into(),
                serde_json::Value::Bool(false),
            );
        }
    }
    add_links(&mut spec);
    let mut text = serde_json::to_string_pretty(&spec).unwrap_or(generated);
    text.push('\n');
    text
}

/// HTTP settings chosen by the operator.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    pub max_body_bytes: usize,
    /// How long a client may take to send a request body.
    pub body_read_timeout: std::time::Duration,
    /// Requests served at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Failed authentications one client may make per minute before it gets 429.
    pub auth_failure_limit: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 65_536,
            body_read_timeout: std::time::Duration::from_secs(10),
            max_concurrent_requests: 512,
            auth_failure_limit: 100,
        }
    }
}

/// The whole service: the API, its document at `/openapi.json`, interactive docs at
/// `/docs` (assets bundled, no internet needed), and the operational `/healthz`,
/// `/readyz` and `/metrics`, which are not part of the API document.
pub fn app(state: AppState, settings: HttpSettings) -> impl Endpoint<Output = poem::Response> {
    let api = api_service();
    let spec = Arc::new(openapi_json());
    let docs = api.swagger_ui();
    let shared = Arc::new(middleware::Shared {
        state,
        body_limit: BodyLimit(settings.max_body_bytes),
        limits: limits::Limits::new(&settings),
    });
    Route::new()
        .nest_no_strip(BASE_PATH, api)
        .nest("/docs", docs)
        .at(
            "/openapi.json",
            get(poem::endpoint::make_sync(move |_| {
                spec.as_str()
                    .to_owned()
                    .with_content_type("application/json")
                    .into_response()
            })),
        )
        .at("/healthz", get(ops::healthz))
        .at("/readyz", get(ops::readyz))
        .at("/metrics", get(ops::metrics))
        .with(CatchPanic::new().with_handler(|_| ApiError::internal()))
        .around(move |ep, req| middleware::envelope(ep, req, shared.clone()))
}
