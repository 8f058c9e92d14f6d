//! The body types every layer shares: what a response body is (streamed from the cluster, or a
//! small JSON document of kqlgate's own) and the error it may yield. Here, below the pipeline and
//! the access log, so both can name them without importing each other.

use bytes::Bytes;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body: streamed from the cluster, or a small JSON document of our own.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
