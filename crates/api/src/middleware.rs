//! The envelope around every request: a request id, the error shape for whatever the
//! framework answers, the security headers, and one access log line.

use std::sync::Arc;
use std::time::Instant;

use poem::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::error::framework_error;
use crate::state::RequestId;

const REQUEST_ID: &str = "x-request-id";

/// A client-sent request id is echoed when it is short and printable; otherwise the
/// service makes one.
fn request_id_of(req: &Request) -> String {
    req.header(REQUEST_ID)
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Reads a body whose declared length is within the limit before routing, so that a
/// request refused early (401, 403, 404, ...) still leaves its connection clean for
/// the client's next request. Larger or undeclared bodies are left to the handler,
/// which enforces the limit.
async fn buffer_declared_body(req: &mut Request) {
    let limit = req.data::<crate::BodyLimit>().map_or(65_536, |l| l.0);
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|len| *len > 0 && *len <= limit) {
        let body = req.take_body();
        match body.into_bytes_limit(len).await {
            Ok(bytes) => req.set_body(bytes),
            Err(_) => req.set_body(poem::Body::empty()),
        }
    }
}

pub async fn envelope<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let request_id = request_id_of(&req);
    req.set_data(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    buffer_declared_body(&mut req).await;

    let mut resp = match ep.call(req).await {
        Ok(resp) => resp.into_response(),
        Err(err) => {
            let status = err.status();
            let detail = err.to_string();
            let resp = err.into_response();
            if is_json(&resp) {
                resp
            } else {
                framework_error(status, &detail).into_response()
            }
        }
    };
    let status = resp.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&resp) {
        resp =
            framework_error(status, status.canonical_reason().unwrap_or("error")).into_response();
    }
    let headers = resp.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, value);
    }
    if status == poem::http::StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if path.starts_with(crate::BASE_PATH) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(resp)
}
