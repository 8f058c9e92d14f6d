//! The one error type of the request pipeline, and the one place it becomes a response.
//!
//! Every error kqlgate itself produces is rendered as Kusto's OneApi error envelope
//! (`{"error": {"code", "message", "@type", "@message", "@context", "@permanent"}}`) with
//! `Content-Type: application/json`, because the SDKs parse exactly that: the Python SDK shows
//! `@message` to the user and its async client refuses any other content type. Errors that come
//! from the cluster never pass through here: they are streamed back untouched.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

/// A failure that ends a request before (or instead of) forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "no route for path {0:?}; kqlgate serves /v1/rest/query, /v2/rest/query and /v1/rest/mgmt"
    )]
    NotFound(String),
    #[error("method {method} is not allowed on {path}; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    /// Deliberately says nothing about whether the tenant exists or the key was wrong.
    #[error("the request carries no valid credentials: send HTTP Basic credentials (tenant id and API key)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than the limit of {limit} bytes (after decompression)")]
    PayloadTooLarge { limit: usize },
    #[error("{reason}; retry after {retry_after_secs} s")]
    TooManyRequests {
        reason: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    ServiceUnavailable(String),
    /// kqlgate is near one of its limits (`reason`: which) and sheds new requests.
    #[error("kqlgate is overloaded ({reason} near its limit); retry in a moment")]
    Overloaded { reason: &'static str },
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("the request body did not arrive in time: {0}")]
    RequestTimeout(String),
    /// A failure inside kqlgate; the cause is for the log (written once, in `pipeline::handle`),
    /// never for the client.
    #[error("internal error in kqlgate")]
    Internal(String),
}

/// The error a streamed answer yields when its deadline passes mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("the answer did not finish within the proxy's limit")]
pub struct StreamTimedOut;

impl ProxyError {
    /// Redis, which holds the shared limits, cannot decide and `on_redis_failure = "deny"`.
    pub fn limits_unavailable() -> ProxyError {
        ProxyError::ServiceUnavailable(
            "kqlgate cannot reach its limits backend (Redis) and is configured to refuse until it is back"
                .into(),
        )
    }

    /// An internal error, keeping its cause for the log.
    pub fn internal(cause: impl fmt::Display) -> ProxyError {
        ProxyError::Internal(cause.to_string())
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ServiceUnavailable(_) | ProxyError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OneApi `code` clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NotFound(_) => "NotFound",
            ProxyError::MethodNotAllowed { .. } => "MethodNotAllowed",
            ProxyError::Unauthorized => "Unauthorized",
            ProxyError::Forbidden(_) => "Forbidden",
            ProxyError::BadRequest(_) => "BadRequest",
            ProxyError::PayloadTooLarge { .. } => "PayloadTooLarge",
            ProxyError::TooManyRequests { .. } => "TooManyRequests",
            ProxyError::ServiceUnavailable(_) | ProxyError::Overloaded { .. } => {
                "ServiceUnavailable"
            }
            ProxyError::BadGateway(_) => "BadGateway",
            ProxyError::GatewayTimeout(_) => "GatewayTimeout",
            ProxyError::RequestTimeout(_) => "RequestTimeout",
            ProxyError::Internal(_) => "InternalServiceError",
        }
    }

    /// The short, generic `message`; the specific reason goes in `@message`.
    fn summary(&self) -> &'static str {
        match self {
            ProxyError::NotFound(_) => "The requested endpoint does not exist.",
            ProxyError::MethodNotAllowed { .. } => {
                "The HTTP method is not allowed on this endpoint."
            }
            ProxyError::Unauthorized => "Unauthorized.",
            ProxyError::Forbidden(_) => "Access to the requested resource is denied.",
            ProxyError::BadRequest(_) => "Request is invalid and cannot be executed.",
            ProxyError::PayloadTooLarge { .. } => "Request payload is too large.",
            ProxyError::TooManyRequests { .. } => "The request was throttled.",
            ProxyError::ServiceUnavailable(_) | ProxyError::Overloaded { .. } => {
                "The service is temporarily unavailable."
            }
            ProxyError::BadGateway(_) => "The cluster could not be reached.",
            ProxyError::GatewayTimeout(_) => "The cluster did not answer in time.",
            ProxyError::RequestTimeout(_) => "The request was not received in time.",
            ProxyError::Internal(_) => "An internal error occurred.",
        }
    }

    /// The .NET exception type Kusto itself would name for this failure.
    fn kusto_type(&self) -> &'static str {
        match self {
            ProxyError::Forbidden(_) | ProxyError::Unauthorized => {
                "Kusto.Data.Exceptions.KustoRequestDeniedException"
            }
            ProxyError::BadRequest(_)
            | ProxyError::NotFound(_)
            | ProxyError::RequestTimeout(_)
            | ProxyError::MethodNotAllowed { .. } => {
                "Kusto.Data.Exceptions.KustoBadRequestException"
            }
            ProxyError::PayloadTooLarge { .. } => {
                "Kusto.Data.Exceptions.KustoRequestPayloadTooLargeException"
            }
            ProxyError::TooManyRequests { .. } => {
                "Kusto.Data.Exceptions.KustoRequestThrottledException"
            }
            ProxyError::GatewayTimeout(_) => "Kusto.Data.Exceptions.KustoServiceTimeoutException",
            ProxyError::ServiceUnavailable(_)
            | ProxyError::Overloaded { .. }
            | ProxyError::BadGateway(_)
            | ProxyError::Internal(_) => "Kusto.Data.Exceptions.KustoServiceException",
        }
    }

    /// `@permanent: false` tells SDK retry loops that trying again may succeed.
    fn permanent(&self) -> bool {
        !matches!(
            self,
            ProxyError::TooManyRequests { .. }
                | ProxyError::ServiceUnavailable(_)
                | ProxyError::Overloaded { .. }
                | ProxyError::BadGateway(_)
                | ProxyError::GatewayTimeout(_)
                | ProxyError::RequestTimeout(_)
                | ProxyError::Internal(_)
        )
    }

    /// Renders the Kusto error envelope. `client_request_id` is echoed in `@context` and in the
    /// `x-ms-client-request-id` header so a caller can correlate the refusal with its logs.
    pub fn into_response(&self, client_request_id: &str) -> Response<Full<Bytes>> {
        let activity_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "error": {
                "code": self.code(),
                "message": self.summary(),
                "@type": self.kusto_type(),
                "@message": self.to_string(),
                "@context": {
                    "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                    "serviceAlias": "kqlgate",
                    "machineName": "kqlgate",
                    "processName": "kqlgate",
                    "processId": 0,
                    "threadId": 0,
                    "clientRequestId": client_request_id,
                    "activityId": activity_id,
                    "subActivityId": activity_id,
                    "activityType": "kqlgate.request",
                    "parentActivityId": activity_id,
                    "activityStack": format!("({activity_id})"),
                },
                "@permanent": self.permanent(),
            }
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Ok(value) = HeaderValue::from_str(client_request_id) {
            headers.insert(crate::headers::CLIENT_REQUEST_ID, value);
        }
        if let Ok(value) = HeaderValue::from_str(&activity_id) {
            headers.insert(crate::headers::ACTIVITY_ID, value);
        }
        match self {
            ProxyError::Unauthorized => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"kqlgate\""),
                );
            }
            ProxyError::TooManyRequests {
                retry_after_secs, ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ProxyError::Overloaded { .. } | ProxyError::ServiceUnavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(1u64));
            }
            ProxyError::MethodNotAllowed { allowed, .. } => {
                headers.insert(http::header::ALLOW, HeaderValue::from_static(allowed));
            }
            _ => {}
        }
        response
    }
}

/// An error and its causes on one line, e.g. "error sending request: connection refused".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether an I/O timeout is anywhere in the error's chain of causes.
pub fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// `Retry-After` takes whole seconds; round up and never say 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(7)), 7);
    }

    async fn envelope(error: ProxyError) -> (Response<Full<Bytes>>, serde_json::Value) {
        let response = error.into_response("KPC.execute;abc");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            Response::from_parts(parts, Full::new(Bytes::new())),
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn envelope_has_every_field_the_sdks_read() {
        let (response, body) = envelope(ProxyError::Forbidden("no".into())).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        let error = &body["error"];
        assert_eq!(error["code"], "Forbidden");
        assert_eq!(error["@message"], "no");
        assert_eq!(error["@permanent"], true);
        assert!(error["message"].as_str().is_some());
        assert!(error["@type"].as_str().unwrap().starts_with("Kusto."));
        let context = &error["@context"];
        assert_eq!(context["clientRequestId"], "KPC.execute;abc");
        for field in [
            "timestamp",
            "serviceAlias",
            "machineName",
            "processName",
            "processId",
            "threadId",
            "activityId",
            "subActivityId",
            "activityType",
            "parentActivityId",
            "activityStack",
        ] {
            assert!(!context[field].is_null(), "@context.{field} missing");
        }
    }

    #[tokio::test]
    async fn throttling_is_transient_and_says_when_to_retry() {
        let (response, body) = envelope(ProxyError::TooManyRequests {
            reason: "rate".into(),
            retry_after_secs: 3,
        })
        .await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(body["error"]["@permanent"], false);
    }

    #[tokio::test]
    async fn unauthorized_asks_for_basic_credentials() {
        let (response, _) = envelope(ProxyError::Unauthorized).await;
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Basic realm=\"kqlgate\""
        );
    }
}
