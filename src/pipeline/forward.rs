//! Stage: forward. One pooled keep-alive client per cluster; each request is rebuilt from an
//! allow-list of headers, so nothing the client sent reaches the cluster unless it is named here.
//! In particular the client's `Authorization` never does: the cluster sees the proxy's own
//! credential, and learns which tenant is asking from `x-ms-user`/`x-ms-app` values the tenant
//! cannot forge.

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE};
use http::HeaderMap;

use crate::config::Cluster;
use crate::error::ProxyError;
use crate::headers;
use crate::pipeline::route::Endpoint;

/// What the guard does for requests to one cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterPolicy {
    pub enforce_request_properties: bool,
    pub restrict_statement: bool,
}

pub struct Upstream {
    pub policy: ClusterPolicy,
    client: reqwest::Client,
    /// The three endpoint URLs, in [`Endpoint`] order.
    urls: [reqwest::Url; 3],
    timeout_secs: u64,
}

/// What the client sent that is passed on, besides the rewritten body.
const FORWARDED_HEADERS: [http::HeaderName; 4] = [
    ACCEPT,
    CONTENT_TYPE,
    headers::CLIENT_VERSION,
    headers::KUSTO_VERSION,
];

impl Upstream {
    pub fn new(cluster: &Cluster) -> anyhow::Result<Upstream> {
        let client = reqwest::Client::builder()
            .connect_timeout(cluster.connect_timeout)
            .timeout(cluster.timeout)
            .pool_max_idle_per_host(cluster.pool_max_idle)
            .tcp_nodelay(true)
            .tcp_keepalive(std::time::Duration::from_secs(30))
            // Kusto never redirects a query; a redirect here would be an attack or a mistake.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = cluster.url.as_str().trim_end_matches('/');
        let url = |endpoint: Endpoint| reqwest::Url::parse(&format!("{base}{}", endpoint.path()));
        Ok(Upstream {
            policy: ClusterPolicy {
                enforce_request_properties: cluster.enforce_request_properties,
                restrict_statement: cluster.restrict_statement,
            },
            client,
            urls: [
                url(Endpoint::QueryV1)?,
                url(Endpoint::QueryV2)?,
                url(Endpoint::Mgmt)?,
            ],
            timeout_secs: cluster.timeout.as_secs(),
        })
    }

    pub async fn send(
        &self,
        endpoint: Endpoint,
        client_headers: &HeaderMap,
        body: Bytes,
        tenant_id: &str,
        request_id: &str,
        authorization: Option<HeaderValue>,
    ) -> Result<reqwest::Response, ProxyError> {
        let mut request_headers = HeaderMap::with_capacity(12);
        for name in FORWARDED_HEADERS {
            if let Some(value) = client_headers.get(&name) {
                request_headers.insert(name, value.clone());
            }
        }
        request_headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        request_headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json; charset=utf-8"));
        // The answer is passed through compressed or decoded on the fly; see respond.rs.
        request_headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        request_headers.insert(headers::CLIENT_REQUEST_ID, header_value(request_id)?);
        request_headers.insert(headers::USER, header_value(tenant_id)?);
        request_headers.insert(
            headers::APP,
            header_value(&format!("kqlgate;tenant={tenant_id}"))?,
        );
        if let Some(authorization) = authorization {
            request_headers.insert(AUTHORIZATION, authorization);
        }
        self.client
            .post(self.urls[endpoint as usize].clone())
            .headers(request_headers)
            .body(body)
            .send()
            .await
            .map_err(|error| self.failure(&error))
    }

    fn failure(&self, error: &reqwest::Error) -> ProxyError {
        // The detail (addresses, OS errors) is for the operator's log, not for the tenant.
        tracing::warn!(error = %error_chain(error), "upstream request failed");
        if error.is_timeout() {
            ProxyError::GatewayTimeout(format!(
                "the cluster did not answer within the proxy's limit ({} s)",
                self.timeout_secs
            ))
        } else if error.is_connect() {
            ProxyError::BadGateway("the cluster could not be reached".into())
        } else {
            ProxyError::BadGateway("the connection to the cluster failed".into())
        }
    }
}

fn header_value(value: &str) -> Result<HeaderValue, ProxyError> {
    // Request ids are filtered and tenant ids validated at load, so this cannot fail in practice.
    HeaderValue::from_str(value).map_err(|_| ProxyError::Internal)
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
