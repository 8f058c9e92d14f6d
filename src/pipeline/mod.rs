//! The request pipeline, one stage per module, in the order a request meets them:
//!
//! ```text
//! route → authenticate → admit (limits) → read body → read query → resolve database
//!       → guard → forward → respond (stream back)               … then one access-log line
//! ```
//!
//! [`handle`] is the outer shell: it starts the access-log record, runs [`handle_inner`], and is
//! the one place where a [`ProxyError`] becomes a response. `handle_inner` reads like the chart
//! above: one line per stage, each ending in `?`.

pub mod authenticate;
pub mod body;
pub mod forward;
pub mod guard;
pub mod limit;
pub mod query;
pub mod respond;
pub mod route;
pub mod tenant;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};

use crate::access_log::AccessLog;
use crate::error::ProxyError;
use crate::gateway::Gateway;
use route::Route;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body: streamed from the cluster, or a small JSON document of our own.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub async fn handle<B>(
    gateway: &Gateway,
    request: Request<B>,
    client: SocketAddr,
) -> Response<ProxyBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut log = AccessLog::start(&request);
    let response = match handle_inner(gateway, request, client, &mut log).await {
        Ok(response) => response,
        Err(error) => {
            log.error_code = Some(error.code());
            error.into_response(&log.client_request_id).map(full_body)
        }
    };
    log.attach(response)
}

async fn handle_inner<B>(
    gateway: &Gateway,
    request: Request<B>,
    client: SocketAddr,
    log: &mut AccessLog,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let endpoint = match route::classify(request.method(), request.uri().path())? {
        Route::Health => return Ok(status_document(StatusCode::OK, "alive")),
        Route::Ready if gateway.draining.load(Ordering::Relaxed) => {
            return Ok(status_document(StatusCode::SERVICE_UNAVAILABLE, "draining"))
        }
        Route::Ready => return Ok(status_document(StatusCode::OK, "ready")),
        Route::AuthMetadata => return auth_metadata(gateway),
        Route::Kusto(endpoint) => endpoint,
    };
    let tenant = gateway.authenticate(request.headers(), client.ip()).await?;
    log.tenant = Some(tenant.config.id.clone());
    log.hold(tenant.limits.admit()?);

    let (parts, body) = request.into_parts();
    let body = body::read(body, &parts.headers, gateway.server.max_body_bytes).await?;
    let query = query::QueryBody::parse(&body)?;
    let database = tenant::resolve_database(&tenant.config, query.db.as_deref())?;
    log.database = Some(database.to_owned());
    let upstream = gateway.upstream_for(tenant);
    let rewrite = guard::check(
        &tenant.config,
        &tenant.default_properties,
        upstream.policy,
        endpoint,
        &query,
    )?;
    let authorization = tenant.credential.authorization().await?;

    let answer = upstream
        .send(
            endpoint,
            &parts.headers,
            query.forwarded(database, &rewrite),
            &tenant.config.id,
            &log.client_request_id,
            authorization,
        )
        .await?;
    log.upstream_status = Some(answer.status().as_u16());
    Ok(respond::stream_back(
        answer,
        respond::accepts_gzip(&parts.headers),
        &log.client_request_id,
    ))
}

/// Without `[aad]` this is a 404, which the SDKs read as "use the public-cloud defaults".
fn auth_metadata(gateway: &Gateway) -> Result<Response<ProxyBody>, ProxyError> {
    let metadata = gateway.aad_metadata.clone().ok_or_else(|| {
        ProxyError::NotFound("/v1/rest/auth/metadata (AAD callers are not configured)".into())
    })?;
    Ok(json_document(StatusCode::OK, metadata))
}

fn full_body(body: Full<Bytes>) -> ProxyBody {
    body.map_err(|never| match never {}).boxed_unsync()
}

fn status_document(status: StatusCode, state: &'static str) -> Response<ProxyBody> {
    json_document(status, format!("{{\"status\":\"{state}\"}}"))
}

fn json_document(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
