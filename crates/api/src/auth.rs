//! Authentication and authorization as an extractor.
//!
//! [`AdminAuth`] is the first argument of every key operation, so it runs before any
//! parameter or body is looked at: a missing or bad token is a 401, then a caller who is
//! not an admin of the enterprise in the path (or an enterprise that does not exist) is
//! a 403. It yields the domain's [`EnterpriseAdmin`] proof, which the use cases require.

use keyward_domain::EnterpriseAdmin;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use crate::error::ApiError;
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
    let enterprise = enterprise_in_path(req.uri().path());
    let token = bearer.token;
    crate::state::blocking(move || state.keys.authorize(&token, &enterprise))
        .await
        .map_err(|err| ApiError::from(err).into_poem())
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
