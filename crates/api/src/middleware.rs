//! The envelope around every request: a request id, the error shape for whatever the
//! framework answers, the security headers, and one access log line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use metrics::{Counter, Histogram};

use poem::http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use poem::http::Method;
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::body::BodyLimit;
use crate::error::{framework_error, invalid_parameter, ApiError};
use crate::limits::Limits;
use crate::state::{AppState, RequestId};

const REQUEST_ID: &str = "x-request-id";

/// A client-sent request id is echoed when it is short and printable; otherwise the
/// service makes one.
fn request_id_of(req: &Request) -> String {
    req.header(REQUEST_ID)
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned)
}

/// A random (version 4) UUID. A request id names a request, it guards nothing, so it
/// comes from a fast per-thread generator rather than a system call per request.
fn new_request_id() -> String {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Reads a request body within the limit before routing, so that a request refused
/// early (401, 403, 404, 405, ...) still leaves its connection clean for the client's
/// next request. A body declared larger than the limit is left to the handler, which
/// answers 413; a chunked body that turns out larger is answered 413 here, and the
/// connection is then closed. A body that arrives too slowly is answered 408.
async fn buffer_body(req: &mut Request, shared: &Shared) -> Result<(), ApiError> {
    let limit = shared.body_limit.0;
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = req
        .headers()
        .contains_key(poem::http::header::TRANSFER_ENCODING);
    let read_up_to = match declared {
        Some(0) => return Ok(()),
        Some(len) if len <= limit => len,
        Some(_) => return Ok(()),
        None if chunked => limit,
        None => return Ok(()),
    };
    let timeout = shared.limits.body_read_timeout;
    // Boxed: reading a body is a large future, and every request's envelope would
    // otherwise carry (and move) room for it.
    let read = Box::pin(tokio::time::timeout(
        timeout,
        req.take_body().into_bytes_limit(read_up_to),
    ))
    .await;
    match read {
        Err(_) => return Err(crate::error::request_timeout()),
        Ok(Ok(bytes)) => req.set_body(bytes),
        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => {
            return Err(crate::error::payload_too_large(Some(limit)))
        }
        Ok(Err(_)) => req.set_body(poem::Body::empty()),
    }
    Ok(())
}

/// What every request carries to its handler, attached by [`envelope`] itself: a layer
/// per value would add its inner future to the endpoint stack's own, which is built
/// and moved in memory for every request (each such layer made it about 1 KB larger).
pub struct Shared {
    pub state: AppState,
    pub body_limit: BodyLimit,
    pub limits: Limits,
}

pub async fn envelope<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    shared: Arc<Shared>,
) -> poem::Result<Response> {
    let started = Instant::now();
    req.set_data(shared.state.clone());
    req.set_data(shared.body_limit);
    req.set_data(shared.limits.clone());
    let request_id = request_id_of(&req);
    req.set_data(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Probes are never refused for load: an orchestrator must see the truth.
    let operational = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    let limits = &shared.limits;
    let _permit = if operational {
        None
    } else {
        match limits.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let mut resp = busy(limits.max_in_flight).into_response();
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(finish(resp, &request_id, &method, &path, started));
            }
        }
    };
    let resp = match buffer_body(&mut req, &shared).await {
        Err(refused) => {
            // The rest of the body is unread: the connection cannot be reused.
            let mut resp = refused.into_response();
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        Ok(()) => match ep.call(req).await {
            Ok(resp) => resp.into_response(),
            Err(err) => {
                if let Some(param) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
                    let resp = invalid_parameter(param.name, &param.reason).into_response();
                    return Ok(finish(resp, &request_id, &method, &path, started));
                }
                let status = err.status();
                let detail = err.to_string();
                let resp = err.into_response();
                if is_json(&resp) {
                    resp
                } else {
                    framework_error(status, &detail).into_response()
                }
            }
        },
    };
    Ok(finish(resp, &request_id, &method, &path, started))
}

/// 503: the service is serving as many requests as it may.
fn busy(max: usize) -> ApiError {
    ApiError::new(
        poem::http::StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
        format!("the service is already handling its limit of {max} requests; retry in a second"),
    )
}

/// The error shape for anything still without it, the common headers, metrics and the
/// access log line.
fn finish(
    mut resp: Response,
    request_id: &str,
    method: &Method,
    path: &str,
    started: Instant,
) -> Response {
    let status = resp.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&resp) {
        resp =
            framework_error(status, status.canonical_reason().unwrap_or("error")).into_response();
    }
    let route = route_template(path);
    let headers = resp.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    if status == poem::http::StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = allowed_methods(route) {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
    }
    if status == poem::http::StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if path.starts_with(crate::BASE_PATH) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    record_request(method, route, status.as_u16(), elapsed);
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        route = route,
        status = status.as_u16(),
        latency_ms = elapsed * 1000.0,
        "request"
    );
    resp
}

/// Counts a request and records its latency. The handles of each (method, route,
/// status) are looked up once per thread: the registry's own lookup hashes the labels
/// and allocates their values at every call.
fn record_request(method: &Method, route: &'static str, status: u16, elapsed: f64) {
    type Handles = HashMap<(&'static str, &'static str, u16), (Counter, Histogram)>;
    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::default();
    }
    let method = method_label(method);
    HANDLES.with_borrow_mut(|handles| {
        let (count, latency) = handles.entry((method, route, status)).or_insert_with(|| {
            (
                metrics::counter!(
                    "keyward_http_requests_total",
                    "method" => method,
                    "route" => route,
                    "status" => status.to_string()
                ),
                metrics::histogram!(
                    "keyward_http_request_duration_seconds",
                    "method" => method,
                    "route" => route
                ),
            )
        });
        count.increment(1);
        latency.record(elapsed);
    });
}

/// The method as a metric label. Methods outside HTTP's standard set count as `OTHER`,
/// so a client cannot create a series per made-up method.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// The methods a route answers, for the `Allow` header of a 405.
fn allowed_methods(route: &str) -> Option<&'static str> {
    match route {
        "/api/policy/v1/enterprises/:enterpriseId/webhooks/keys" => Some("GET, POST"),
        "/api/policy/v1/enterprises/:enterpriseId/webhooks/keys/:keyId" => Some("GET, DELETE"),
        "/api/policy/v1/enterprises/:enterpriseId/webhooks/responses/verify" => Some("POST"),
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs" => Some("GET"),
        _ => None,
    }
}

/// The route template of a path, so metrics have one series per route rather than one
/// per key or enterprise.
pub fn route_template(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix(crate::BASE_PATH) else {
        return match path {
            "/healthz" => "/healthz",
            "/readyz" => "/readyz",
            "/metrics" => "/metrics",
            "/openapi.json" => "/openapi.json",
            p if p == "/docs" || p.starts_with("/docs/") => "/docs",
            _ => "unmatched",
        };
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["enterprises", _, "webhooks", "keys"] => {
            "/api/policy/v1/enterprises/:enterpriseId/webhooks/keys"
        }
        ["enterprises", _, "webhooks", "keys", _] => {
            "/api/policy/v1/enterprises/:enterpriseId/webhooks/keys/:keyId"
        }
        ["enterprises", _, "webhooks", "responses", "verify"] => {
            "/api/policy/v1/enterprises/:enterpriseId/webhooks/responses/verify"
        }
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::{method_label, new_request_id, route_template};

    #[test]
    fn made_up_methods_share_one_label() {
        let method = |m: &str| poem::http::Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(method_label(&method("GET")), "GET");
        assert_eq!(method_label(&method("DELETE")), "DELETE");
        assert_eq!(method_label(&method("FROB")), "OTHER");
        assert_eq!(method_label(&method("get")), "OTHER");
    }

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            let uuid = uuid::Uuid::parse_str(&id).expect(&id);
            assert_eq!(uuid.get_version_num(), 4, "{id}");
            assert_eq!(uuid.hyphenated().to_string(), id);
        }
    }

    #[test]
    fn routes_collapse_to_templates() {
        assert_eq!(
            route_template("/api/policy/v1/enterprises/acme/webhooks/keys"),
            "/api/policy/v1/enterprises/:enterpriseId/webhooks/keys"
        );
        assert_eq!(
            route_template("/api/policy/v1/enterprises/acme/webhooks/keys/k%40x"),
            "/api/policy/v1/enterprises/:enterpriseId/webhooks/keys/:keyId"
        );
        assert_eq!(
            route_template("/api/policy/v1/enterprises/a/webhooks/responses/verify"),
            "/api/policy/v1/enterprises/:enterpriseId/webhooks/responses/verify"
        );
        assert_eq!(route_template("/docs/swagger-ui.css"), "/docs");
        assert_eq!(route_template("/random/path/123"), "unmatched");
        assert_eq!(route_template("/api/policy/v1/x"), "unmatched");
    }
}
