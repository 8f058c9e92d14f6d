//! Stage: respond. Streams the cluster's answer back chunk by chunk as it arrives — status,
//! Kusto headers and body untouched — so memory does not grow with the result and the first
//! bytes reach the client before the cluster has finished.
//!
//! The cluster is always asked for gzip. A client that accepts gzip gets the compressed bytes as
//! they are (no re-compression); any other client gets them decompressed on the fly. If the
//! cluster's stream breaks, the body yields an error, which makes hyper abort the client's
//! connection instead of ending the answer as if it were complete.

use async_compression::tokio::bufread::GzipDecoder;
use futures_util::TryStreamExt;
use http::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, VARY};
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, StreamBody};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::headers;
use crate::pipeline::forward::Answer;
use crate::pipeline::ProxyBody;

/// Decoded output is produced in pieces of at most this size.
const DECODE_CHUNK: usize = 64 * 1024;

pub fn stream_back(
    upstream: Answer,
    client_accepts_gzip: bool,
    request_id: &str,
) -> Response<ProxyBody> {
    // Taking the response apart moves its headers and body out: nothing is copied.
    let (mut parts, body) = upstream.into_parts();
    let response_headers = &mut parts.headers;
    headers::strip_hop_by_hop(response_headers);
    // Which software runs the cluster is nobody else's business.
    response_headers.remove(http::header::SERVER);
    if !response_headers.contains_key(headers::CLIENT_REQUEST_ID) {
        if let Ok(value) = HeaderValue::from_str(request_id) {
            response_headers.insert(headers::CLIENT_REQUEST_ID, value);
        }
    }
    let body = if is_gzip(response_headers) && !client_accepts_gzip {
        response_headers.remove(CONTENT_ENCODING);
        response_headers.remove(CONTENT_LENGTH);
        response_headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
        let chunks = body.into_data_stream().map_err(std::io::Error::other);
        let mut decoder = GzipDecoder::new(StreamReader::new(chunks));
        decoder.multiple_members(true);
        let decoded = ReaderStream::with_capacity(decoder, DECODE_CHUNK);
        BodyExt::map_err(
            StreamBody::new(decoded.map_ok(http_body::Frame::data)),
            Into::into,
        )
        .boxed_unsync()
    } else {
        body.boxed_unsync()
    };
    Response::from_parts(parts, body)
}

/// Whether the body a response carries is gzip-compressed.
pub fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// Whether the client's `Accept-Encoding` admits gzip (RFC 9110 §12.5.3): listed as `gzip` or
/// `x-gzip`, or covered by `*`, with a non-zero q-value. Hand-written: a dozen lines, and the
/// header crates parse far more than this one question needs.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip_q = None;
    let mut any_q = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip_q = Some(q),
                "*" => any_q = Some(q),
                _ => {}
            }
        }
    }
    gzip_q.or(any_q).is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: Option<&str>) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(ACCEPT_ENCODING, v.parse().unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_acceptance_follows_the_header() {
        assert!(accepts(Some("gzip")));
        assert!(accepts(Some("gzip,deflate")));
        assert!(accepts(Some("deflate, GZIP;q=0.5")));
        assert!(accepts(Some("*")));
        assert!(accepts(Some("x-gzip")));
        assert!(!accepts(None));
        assert!(!accepts(Some("identity")));
        assert!(!accepts(Some("gzip;q=0")));
        assert!(!accepts(Some("gzip; q=0.0, deflate")));
        assert!(!accepts(Some("*;q=0")));
        assert!(!accepts(Some("br, deflate")));
        assert!(!accepts(Some("*, gzip;q=0")));
    }
}
