//! The request pipeline, one stage per module, in the order a request meets them:
//!
//! ```text
//! route → shed load → authenticate → admit (rate, room) → read body → read query
//!       → resolve database → guard → admit (tenant in flight, cluster cap)
//!       → cluster credential → forward → respond                       … then one log line
//! ```
//!
//! [`handle`] is the outer shell: it starts the access-log record, runs [`handle_inner`], and is
//! the one place where a [`ProxyError`] becomes a response (and an internal error is logged).
//! `handle_inner` reads like the chart above: one line per stage, each ending in `?`. The
//! long-lived services the stages call (authenticator, limiter state, pools, identities) are in
//! `crate::services`; a request loads one snapshot of the tenant table and keeps it to its end.

pub mod admit;
pub mod body;
pub mod forward;
pub mod guard;
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
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::gateway::Gateway;
use crate::headers;
use crate::services::cost;
use route::Route;

pub use crate::body::{BoxError, ProxyBody};

/// Answers one request; `worker` is the event loop it runs on (it picks the upstream pool).
pub async fn handle<B>(
    gateway: &Gateway,
    request: Request<B>,
    client: SocketAddr,
    worker: usize,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut log = AccessLog::start(&request, client, gateway.sinks());
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    let response = match handle_inner(gateway, &parts, &mut body, client, worker, &mut log).await {
        Ok(response) => response,
        Err(error) => {
            if let ProxyError::Internal(cause) = &error {
                tracing::error!(client_request_id = %log.client_request_id, %cause, "internal error");
            }
            log.error_code = Some(error.code());
            let mut response = error.into_response(&log.client_request_id).map(full_body);
            match body {
                Some(unread) => keep_connection_usable(&parts, unread, &mut response).await,
                // Refused part-way through the body: what is left of it would be read as the
                // next request.
                None if matches!(
                    error,
                    ProxyError::PayloadTooLarge { .. } | ProxyError::RequestTimeout(_)
                ) && parts.version < http::Version::HTTP_2 =>
                {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                None => {}
            }
            response
        }
    };
    log.attach(response)
}

/// `parts` and `body` are the request's; the body is taken when it is read, so what is left
/// after an error is a body nobody read. The `log` is told what each stage found (its tenant,
/// a refusal's reason, the cluster's answer) for the access line, the metrics and the audit.
async fn handle_inner<B>(
    gateway: &Gateway,
    parts: &http::request::Parts,
    body: &mut Option<B>,
    client: SocketAddr,
    worker: usize,
    log: &mut AccessLog,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let endpoint = match route::classify(&parts.method, parts.uri.path())? {
        Route::Health => return Ok(status_document(StatusCode::OK, "alive")),
        Route::Ready if gateway.draining.load(Ordering::Relaxed) => {
            return Ok(status_document(StatusCode::SERVICE_UNAVAILABLE, "draining"))
        }
        Route::Ready => return Ok(status_document(StatusCode::OK, "ready")),
        Route::AuthMetadata => return auth_metadata(gateway),
        Route::Kusto(endpoint) => endpoint,
    };
    log.endpoint = Some(endpoint);
    if let Some(shed) = gateway.load.shed() {
        gateway.metrics.load_shed(shed.name());
        return Err(ProxyError::Overloaded {
            reason: shed.name(),
        });
    }
    log.hold_counted(gateway.load.request());
    let snapshot = gateway.snapshot();
    let caller = gateway
        .authenticator
        .authenticate(&snapshot, &parts.headers, client.ip())
        .await?;
    let tenant = caller.tenant;
    log.set_tenant(&tenant.label);
    log.principal = Some(caller.principal);
    admit::rate(&gateway.limits, &tenant)
        .await
        .map_err(limit_refusal(log))?;
    admit::room(&gateway.limits, &tenant).map_err(limit_refusal(log))?;

    let encoding = body::precheck(&parts.headers, &snapshot.server).map_err(body_refusal(log))?;
    let unread = body
        .take()
        .ok_or_else(|| ProxyError::internal("the body was taken twice"))?;
    let body = body::read(unread, encoding, &snapshot.server)
        .await
        .map_err(body_refusal(log))?;
    let query = query::QueryBody::parse(&body).map_err(refused(log, "bad_request"))?;
    note_query(log, &query.csl);
    let database = tenant::resolve_database(&tenant.config, query.db.as_deref())
        .map_err(refused(log, "db"))?;
    log.database = Some(database.to_owned());
    let rewrite = guard::check(&tenant, endpoint, &query).map_err(|refusal| {
        match &refusal {
            guard::GuardError::Refused(r) => log.guard_construct = Some(r.label),
            guard::GuardError::Properties(ProxyError::BadRequest(_)) => {
                log.refusal = Some("bad_request");
                return ProxyError::from(refusal);
            }
            guard::GuardError::Properties(_) => {}
        }
        log.refusal = Some("guard");
        ProxyError::from(refusal)
    })?;
    let admission = admit::slot(&gateway.limits, &tenant)
        .await
        .map_err(limit_refusal(log))?;
    log.hold(admission);
    let cluster_place = admit::cluster(&gateway.limits, &tenant)
        .await
        .map_err(limit_refusal(log))?;
    log.hold_cluster(cluster_place);
    let authorization = tenant.credential.authorization().await?;

    let upstream = &tenant.cluster.upstream;
    log.cluster = Some(tenant.cluster.label.clone());
    let outgoing = forward::Outgoing {
        endpoint,
        client_headers: &parts.headers,
        body: query.forwarded(database, &rewrite),
        tenant_id: &tenant.config.id,
        request_id: &log.client_request_id,
        authorization,
        read_only: rewrite.read_only,
    };
    let sent_at = std::time::Instant::now();
    let sent = forward::send(upstream, upstream.pool(worker), &outgoing)
        .await
        .map_err(|failed| {
            log.upstream_error = Some(failed.kind);
            ProxyError::from(failed)
        })?;
    if sent.retried {
        gateway
            .metrics
            .upstream_error(&tenant.cluster.label, "retried");
    }
    let mut answer = sent.answer;
    log.first_byte = Some(sent_at.elapsed());
    log.upstream_status = Some(answer.status().as_u16());
    gateway.limits.cluster_answered(
        &tenant.cluster.cap,
        tenant.cluster.config.max_concurrent,
        answer.status(),
    );
    if answer.status() == StatusCode::TOO_MANY_REQUESTS {
        // The cluster throttles: the client backs off too, told for how long.
        answer
            .headers_mut()
            .entry(http::header::RETRY_AFTER)
            .or_insert(HeaderValue::from_static("1"));
    }
    log.activity_id = answer
        .headers()
        .get(headers::ACTIVITY_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = respond::stream_back(
        answer,
        respond::accepts_gzip(&parts.headers),
        &log.client_request_id,
    );
    if let Some(format) = cost_format(endpoint, response.status()) {
        log.watch_cost(format, respond::is_gzip(response.headers()));
    }
    Ok(response)
}

/// Marks a refusal of `reason` on the log, passing the error on.
fn refused<'l>(
    log: &'l mut AccessLog,
    reason: &'static str,
) -> impl FnOnce(ProxyError) -> ProxyError + 'l {
    move |error| {
        log.refusal = Some(reason);
        error
    }
}

/// Marks a limit's refusal on the log, passing its error on.
fn limit_refusal(log: &mut AccessLog) -> impl FnOnce(admit::Refused) -> ProxyError + '_ {
    move |refused| {
        log.refusal = Some(refused.reason);
        refused.error
    }
}

/// The refusal reason of a body that could not be read.
fn body_refusal(log: &mut AccessLog) -> impl FnOnce(ProxyError) -> ProxyError + '_ {
    move |error| {
        log.refusal = Some(match error {
            ProxyError::PayloadTooLarge { .. } => "body_size",
            ProxyError::RequestTimeout(_) => "body_timeout",
            _ => "bad_request",
        });
        error
    }
}

/// The query's hash (and, when asked, its text) for the audit record.
fn note_query(log: &mut AccessLog, csl: &str) {
    if log.audited() {
        log.query_hash = Some(crate::services::audit::query_hash(csl));
        if log.wants_query_text() {
            log.query_text = Some(csl.to_owned());
        }
    }
}

/// Queries answer with a cost report (v1's QueryStatus, v2's QueryCompletionInformation);
/// control commands do not.
fn cost_format(endpoint: Endpoint, status: StatusCode) -> Option<cost::Format> {
    match endpoint {
        _ if status != StatusCode::OK => None,
        Endpoint::QueryV1 => Some(cost::Format::V1),
        Endpoint::QueryV2 => Some(cost::Format::V2),
        Endpoint::Mgmt => None,
    }
}

/// Bytes of an unread HTTP/1 body read and dropped after an early refusal, at most…
const DRAIN_LIMIT: usize = 1024 * 1024;
/// …and for at most this long.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// After a refusal sent before the request body was read (401, 429, 413…), an HTTP/1 client
/// that is still sending that body cannot use the connection for its next request. A small
/// remainder is read and dropped so it can; a larger or slower one gets `Connection: close`, so
/// the client reads its answer and opens a new connection instead of finding this one broken.
/// (HTTP/2 ends just the stream.)
async fn keep_connection_usable<B>(
    parts: &http::request::Parts,
    body: B,
    response: &mut Response<ProxyBody>,
) where
    B: Body<Data = Bytes>,
{
    if parts.version >= http::Version::HTTP_2 {
        return;
    }
    let mut body = std::pin::pin!(body);
    let mut drained = 0usize;
    let finished = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            drained += frame.data_ref().map_or(0, |d| d.len());
            if drained > DRAIN_LIMIT {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if !finished {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
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
