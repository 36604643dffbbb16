//! Authentication and authorization as an extractor.
//!
//! [`AdminAuth`] is the first argument of every key operation, so it runs before any
//! parameter or body is looked at: a missing or bad token is a 401, then a caller who is
//! not an admin of the enterprise in the path (or an enterprise that does not exist) is
//! a 403. It yields the domain's [`EnterpriseAdmin`] proof, which the use cases require.

use keyward_domain::{DomainError, EnterpriseAdmin};
use poem::{IntoResponse, Request};
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use crate::error::ApiError;
use crate::limits::Limits;
use crate::state::AppState;

/// A bearer token issued by `keyward admin token issue`, held by an admin of the
/// enterprise named in the path.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "opaque", checker = "authorize")]
pub struct AdminAuth(pub EnterpriseAdmin);

async fn authorize(req: &Request, bearer: Bearer) -> poem::Result<EnterpriseAdmin> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::internal().into_poem())?
        .clone();
    let client = req.remote_addr().as_socket_addr().map(|addr| addr.ip());
    let failures = req
        .data::<Limits>()
        .map(|limits| limits.auth_failures.clone());
    // A client over its limit of failed attempts gets 429 for every attempt that fails
    // (a token that cannot even be well formed is refused without a lookup); a valid
    // token still works, so a neighbour behind the same address is not locked out.
    let blocked = match (client, &failures) {
        (Some(client), Some(failures)) => failures.blocked(client),
        _ => None,
    };
    if let Some(wait) = blocked {
        if keyward_domain::auth::token_id(&bearer.token).is_none() {
            return Err(too_many_failures(wait));
        }
    }
    let enterprise = enterprise_in_path(req.uri().path());
    let token = bearer.token;
    // A grant read moments ago decides without a trip to the database.
    let result = match state.keys.authorize_cached(&token, &enterprise) {
        Some(decided) => decided,
        None => {
            let keys = state.keys.clone();
            state
                .read(move || keys.authorize(&token, &enterprise))
                .await
        }
    };
    if let (Err(DomainError::Unauthenticated), Some(client), Some(failures)) =
        (&result, client, &failures)
    {
        failures.record(client);
        if let Some(wait) = blocked.or_else(|| failures.blocked(client)) {
            return Err(too_many_failures(wait));
        }
    }
    result.map_err(|err| ApiError::from(err).into_poem())
}

/// 429 with `Retry-After`: this client failed to authenticate too often.
fn too_many_failures(wait: std::time::Duration) -> poem::Error {
    let seconds = wait.as_secs().max(1);
    let mut response = ApiError::new(
        poem::http::StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        format!("too many failed authentication attempts from this address; wait {seconds} s, then retry with a valid token"),
    )
    .into_response();
    if let Ok(value) = poem::http::HeaderValue::from_str(&seconds.to_string()) {
        response
            .headers_mut()
            .insert(poem::http::header::RETRY_AFTER, value);
    }
    poem::Error::from_response(response)
}

/// The enterprise segment of `/api/policy/v1/enterprises/{enterpriseId}/...`, decoded.
/// (The framework renames path variables internally, so the URI is read directly.)
fn enterprise_in_path(path: &str) -> String {
    let segment = path
        .strip_prefix(crate::BASE_PATH)
        .and_then(|rest| rest.strip_prefix("/enterprises/"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_enterprise_segment() {
        assert_eq!(
            super::enterprise_in_path("/api/policy/v1/enterprises/acme/webhooks/keys"),
            "acme"
        );
        assert_eq!(
            super::enterprise_in_path("/api/policy/v1/enterprises/a%2Db/webhooks/keys/x"),
            "a-b"
        );
        assert_eq!(super::enterprise_in_path("/elsewhere"), "");
    }
}
