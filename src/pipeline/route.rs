//! Stage: route. Which of kqlgate's few endpoints a request is for; anything else is a 404 or,
//! on a known path with the wrong method, a 405 — both in the Kusto envelope.

use http::Method;

pub use crate::endpoint::Endpoint;
use crate::error::ProxyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    /// `GET /v1/rest/auth/metadata`: what SDKs fetch before they sign in.
    AuthMetadata,
    Kusto(Endpoint),
}

pub fn classify(method: &Method, path: &str) -> Result<Route, ProxyError> {
    let (route, allowed) = match path {
        "/healthz" => (Route::Health, Method::GET),
        "/readyz" => (Route::Ready, Method::GET),
        "/v1/rest/auth/metadata" => (Route::AuthMetadata, Method::GET),
        "/v1/rest/query" => (Route::Kusto(Endpoint::QueryV1), Method::POST),
        "/v2/rest/query" => (Route::Kusto(Endpoint::QueryV2), Method::POST),
        "/v1/rest/mgmt" => (Route::Kusto(Endpoint::Mgmt), Method::POST),
        _ => return Err(ProxyError::NotFound(truncate(path, 200).to_owned())),
    };
    let head_of_get = allowed == Method::GET && method == Method::HEAD;
    if method == allowed || head_of_get {
        Ok(route)
    } else {
        Err(ProxyError::MethodNotAllowed {
            method: truncate(method.as_str(), 20).to_owned(),
            path: path.to_owned(),
            allowed: if allowed == Method::GET {
                "GET"
            } else {
                "POST"
            },
        })
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_routes() {
        assert_eq!(classify(&Method::GET, "/healthz").unwrap(), Route::Health);
        assert_eq!(classify(&Method::GET, "/readyz").unwrap(), Route::Ready);
        assert_eq!(
            classify(&Method::GET, "/v1/rest/auth/metadata").unwrap(),
            Route::AuthMetadata
        );
        assert_eq!(
            classify(&Method::POST, "/v2/rest/query").unwrap(),
            Route::Kusto(Endpoint::QueryV2)
        );
        assert_eq!(
            classify(&Method::POST, "/v1/rest/mgmt").unwrap(),
            Route::Kusto(Endpoint::Mgmt)
        );
    }

    #[test]
    fn wrong_method_is_405_unknown_path_is_404() {
        assert!(matches!(
            classify(&Method::GET, "/v1/rest/query"),
            Err(ProxyError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            classify(&Method::POST, "/healthz"),
            Err(ProxyError::MethodNotAllowed { .. })
        ));
        for path in [
            "/",
            "/v2/rest/mgmt",
            "/v1/rest/query/",
            "/V1/REST/QUERY",
            "/v1/rest/ingest/db/t",
        ] {
            assert!(
                matches!(classify(&Method::POST, path), Err(ProxyError::NotFound(_))),
                "{path}"
            );
        }
    }
}
