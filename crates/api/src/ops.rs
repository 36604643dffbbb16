//! Operational endpoints, outside the public API document: liveness, readiness and
//! Prometheus metrics.

use poem::handler;
use poem::web::{Data, Json};
use poem::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::state::{blocking, AppState};

/// Liveness: the process answers.
#[handler]
pub fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers and its schema is current.
#[handler]
pub async fn readyz(state: Data<&AppState>) -> Response {
    let probe = state.readiness.clone();
    match blocking(move || probe.ready().map_err(Into::into)).await {
        Ok(true) => Json(json!({"status": "ready"})).into_response(),
        Ok(false) => ApiError::new(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "the database schema is not current; run 'cargo xtask migrate' or restart 'keyward serve'",
        )
        .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            ApiError::new(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "the database is unreachable; retry in a few seconds",
            )
            .into_response()
        }
    }
}

/// Prometheus text exposition.
#[handler]
pub fn metrics(state: Data<&AppState>) -> Response {
    let Some(render) = state.metrics.as_ref() else {
        return crate::error::framework_error(poem::http::StatusCode::NOT_FOUND, "")
            .into_response();
    };
    if let Some((in_use, idle)) = state.readiness.connections() {
        ::metrics::gauge!("keyward_db_pool_connections", "state" => "in_use")
            .set(f64::from(in_use));
        ::metrics::gauge!("keyward_db_pool_connections", "state" => "idle").set(f64::from(idle));
    }
    render()
        .with_content_type("text/plain; version=0.0.4")
        .into_response()
}
