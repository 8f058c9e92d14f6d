//! Stage: read the request body — bounded in size and in time — and undo its
//! `Content-Encoding: gzip | deflate`.
//!
//! - The size limit applies twice: to the bytes on the wire and to the decoded bytes, which are
//!   produced through a reader capped at `limit + 1`, so a gzip bomb costs at most `limit`
//!   bytes of memory before it is refused with 413.
//! - The whole body must arrive within `body_read_timeout_seconds` and, after its first second,
//!   at no less than `body_min_bytes_per_second` on average; a stalled upload ends with 408.
//! - The declared `Content-Encoding` alone decides the decoder; whatever follows the end of the
//!   compressed data is refused for every encoding. A `Transfer-Encoding` other than `chunked`
//!   (which the HTTP layer has already undone) is refused, never silently ignored.

use std::io::Read;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::config::ServerSettings;
use crate::error::ProxyError;

/// The limits a body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub min_bytes_per_second: u64,
}

impl From<&ServerSettings> for BodyLimits {
    fn from(settings: &ServerSettings) -> BodyLimits {
        BodyLimits {
            max_bytes: settings.max_body_bytes,
            timeout: settings.body_read_timeout,
            min_bytes_per_second: settings.body_min_bytes_per_second,
        }
    }
}

/// What the headers say about the body, checked before any of it is read: its declared size,
/// its transfer coding, its content encoding.
pub fn precheck(
    headers: &HeaderMap,
    limits: impl Into<BodyLimits>,
) -> Result<Encoding, ProxyError> {
    let limits = limits.into();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_bytes as u64) {
        return Err(ProxyError::PayloadTooLarge {
            limit: limits.max_bytes,
        });
    }
    refuse_transfer_codings(headers)?;
    content_encoding(headers)
}

/// The body, read within its limits and decoded as [`precheck`] found it encoded.
pub async fn read<B>(
    body: B,
    encoding: Encoding,
    limits: impl Into<BodyLimits>,
) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = limits.into();
    let raw = collect(body, limits).await?;
    decode(raw, encoding, limits.max_bytes)
}

/// The body's bytes, bounded in size and in time.
async fn collect<B>(body: B, limits: BodyLimits) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let mut body = std::pin::pin!(body);
    let mut received = BytesMut::new();
    loop {
        // Most bodies are in the first read already: no timer is set for them.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                let stalled = started + allowed_time(received.len(), limits);
                tokio::select! {
                    frame = body.frame() => frame,
                    () = tokio::time::sleep_until(stalled.min(deadline)) => {
                        return Err(too_slow(received.len(), started, limits))
                    }
                }
            }
        };
        let Some(frame) = frame else {
            return Ok(received.freeze());
        };
        let frame = frame
            .map_err(|_| ProxyError::BadRequest("the request body could not be read".into()))?;
        if let Ok(data) = frame.into_data() {
            if received.len() + data.len() > limits.max_bytes {
                return Err(ProxyError::PayloadTooLarge {
                    limit: limits.max_bytes,
                });
            }
            if received.is_empty() && body.is_end_stream() {
                return Ok(data);
            }
            received.extend_from_slice(&data);
        }
    }
}

/// How long, from the start, a body that has sent `received` bytes may take before its next
/// bytes: one second, or as long as `received` allows at the minimum rate.
fn allowed_time(received: usize, limits: BodyLimits) -> Duration {
    let at_minimum = match limits.min_bytes_per_second {
        0 => return limits.timeout,
        rate => Duration::from_secs_f64(received as f64 / rate as f64),
    };
    at_minimum.max(Duration::from_secs(1)) + Duration::from_millis(1)
}

fn too_slow(received: usize, started: Instant, limits: BodyLimits) -> ProxyError {
    let elapsed = started.elapsed();
    if elapsed >= limits.timeout {
        ProxyError::RequestTimeout(format!(
            "the whole body must arrive within {} s",
            limits.timeout.as_secs()
        ))
    } else {
        ProxyError::RequestTimeout(format!(
            "{received} bytes in {:.1} s is slower than the minimum of {} bytes/s",
            elapsed.as_secs_f64(),
            limits.min_bytes_per_second
        ))
    }
}

/// hyper has undone `chunked`; any other transfer coding would be left in the bytes.
fn refuse_transfer_codings(headers: &HeaderMap) -> Result<(), ProxyError> {
    for value in headers.get_all(TRANSFER_ENCODING) {
        let codings = value.to_str().unwrap_or("?");
        let only_chunked = codings
            .split(',')
            .map(str::trim)
            .all(|coding| coding.eq_ignore_ascii_case("chunked"));
        if !only_chunked {
            return Err(ProxyError::BadRequest(format!(
                "Transfer-Encoding {codings:?} is not supported; send Content-Encoding: gzip instead"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ProxyError> {
    let mut values = headers.get_all(CONTENT_ENCODING).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(CONTENT_ENCODING) {
            false => Ok(Encoding::Identity),
            true => Err(ProxyError::BadRequest(
                "Content-Encoding is given more than once; send one encoding".into(),
            )),
        };
    };
    let value = value.to_str().unwrap_or("?").trim();
    if value.is_empty() || value.eq_ignore_ascii_case("identity") {
        Ok(Encoding::Identity)
    } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
        Ok(Encoding::Gzip)
    } else if value.eq_ignore_ascii_case("deflate") {
        Ok(Encoding::Deflate)
    } else {
        Err(ProxyError::BadRequest(format!(
            "Content-Encoding {value:?} is not supported; send gzip, deflate or no encoding"
        )))
    }
}

fn decode(raw: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, ProxyError> {
    match encoding {
        Encoding::Identity => Ok(raw),
        // Bytes after the last gzip member read as a bad member header: refused in `inflate`.
        Encoding::Gzip => inflate(
            &mut flate2::read::MultiGzDecoder::new(&raw[..]),
            limit,
            "gzip",
        ),
        // RFC 9110 says deflate means the zlib format; some clients send raw deflate. Both are
        // tried, zlib first, on the whole body: a raw stream may start like a zlib header.
        Encoding::Deflate => {
            let mut zlib = flate2::read::ZlibDecoder::new(&raw[..]);
            match inflate(&mut zlib, limit, "deflate") {
                Err(too_large @ ProxyError::PayloadTooLarge { .. }) => Err(too_large),
                Ok(decoded) if zlib.total_in() == raw.len() as u64 => Ok(decoded),
                _ => {
                    let mut deflate = flate2::read::DeflateDecoder::new(&raw[..]);
                    let decoded = inflate(&mut deflate, limit, "deflate")?;
                    // These decoders stop at the end of their stream; what follows is refused.
                    if deflate.total_in() != raw.len() as u64 {
                        return Err(ProxyError::BadRequest(
                            "the request body has bytes after the end of its deflate data".into(),
                        ));
                    }
                    Ok(decoded)
                }
            }
        }
    }
}

fn inflate(decoder: &mut impl Read, limit: usize, name: &str) -> Result<Bytes, ProxyError> {
    let mut decoded = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|_| {
            ProxyError::BadRequest(format!("the request body is not valid {name} data"))
        })?;
    if decoded.len() > limit {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    Ok(Bytes::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use http_body_util::{Full, StreamBody};
    use std::io::Write;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn limits(max_bytes: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            timeout: Duration::from_secs(30),
            min_bytes_per_second: 1024,
        }
    }

    async fn read_with(
        body: Vec<u8>,
        encoding: Option<&str>,
        limit: usize,
    ) -> Result<Bytes, ProxyError> {
        let headers = match encoding {
            Some(e) => headers(&[("content-encoding", e)]),
            None => HeaderMap::new(),
        };
        read_all(Full::new(Bytes::from(body)), &headers, limits(limit)).await
    }

    async fn read_all<B>(
        body: B,
        headers: &HeaderMap,
        limits: BodyLimits,
    ) -> Result<Bytes, ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let encoding = precheck(headers, limits)?;
        read(body, encoding, limits).await
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn plain_body_at_the_limit_passes_one_over_is_refused() {
        assert_eq!(
            read_with(vec![b'x'; 100], None, 100).await.unwrap().len(),
            100
        );
        assert!(matches!(
            read_with(vec![b'x'; 101], None, 100).await,
            Err(ProxyError::PayloadTooLarge { limit: 100 })
        ));
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_refused_unread() {
        let h = headers(&[("content-length", "1000000")]);
        let result = read_all(Full::new(Bytes::from_static(b"{}")), &h, limits(100)).await;
        assert!(matches!(result, Err(ProxyError::PayloadTooLarge { .. })));
    }

    #[tokio::test]
    async fn gzip_zlib_and_raw_deflate_are_decoded() {
        let data = br#"{"db":"x","csl":"T | take 1"}"#;
        assert_eq!(
            &read_with(gzip(data), Some("gzip"), 1000).await.unwrap()[..],
            data
        );
        assert_eq!(
            &read_with(zlib(data), Some("deflate"), 1000).await.unwrap()[..],
            data
        );
        let raw = raw_deflate(data);
        assert_eq!(
            &read_with(raw, Some("Deflate"), 1000).await.unwrap()[..],
            data
        );
    }

    /// A raw deflate stream whose first two bytes happen to form a valid zlib header: a
    /// non-final stored block (whose header byte's padding bits are free) of length 1.
    #[tokio::test]
    async fn raw_deflate_that_looks_like_zlib_is_decoded() {
        let data = br#"{"csl":"print 1"}"#;
        let rest = &data[1..];
        let len = rest.len() as u16;
        let mut raw = vec![0x78, 0x01, 0x00, 0xFE, 0xFF, data[0]];
        raw.push(0x01); // the final stored block
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(&(!len).to_le_bytes());
        raw.extend_from_slice(rest);
        assert_eq!(
            (u16::from(raw[0]) << 8 | u16::from(raw[1])) % 31,
            0,
            "looks like zlib"
        );
        assert_eq!(
            &read_with(raw, Some("deflate"), 1000).await.unwrap()[..],
            data
        );
    }

    #[tokio::test]
    async fn trailing_garbage_is_refused_for_every_encoding() {
        let data = br#"{"csl":"print 1"}"#;
        for (encoded, name) in [
            (gzip(data), "gzip"),
            (zlib(data), "deflate"),
            (raw_deflate(data), "deflate"),
        ] {
            let mut with_garbage = encoded;
            with_garbage.extend_from_slice(b"garbage");
            assert!(
                matches!(
                    read_with(with_garbage, Some(name), 1000).await,
                    Err(ProxyError::BadRequest(_))
                ),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn gzip_bomb_is_refused_without_inflating_it() {
        // 100 MB of zeros compresses to about 100 KB.
        let bomb = gzip(&vec![0u8; 100 * 1024 * 1024]);
        assert!(bomb.len() < 1024 * 1024);
        assert!(matches!(
            read_with(bomb, Some("gzip"), 1024 * 1024).await,
            Err(ProxyError::PayloadTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn corrupt_or_unknown_encodings_are_bad_requests() {
        assert!(matches!(
            read_with(b"not gzip".to_vec(), Some("gzip"), 1000).await,
            Err(ProxyError::BadRequest(_))
        ));
        assert!(matches!(
            read_with(b"{}".to_vec(), Some("br"), 1000).await,
            Err(ProxyError::BadRequest(_))
        ));
        let twice = headers(&[("content-encoding", "gzip"), ("content-encoding", "gzip")]);
        let result = read_all(Full::new(Bytes::from(gzip(b"{}"))), &twice, limits(1000)).await;
        assert!(matches!(result, Err(ProxyError::BadRequest(_))));
    }

    #[tokio::test]
    async fn transfer_codings_other_than_chunked_are_refused() {
        for value in ["gzip, chunked", "deflate", "chunked, chunked, x"] {
            let h = headers(&[("transfer-encoding", value)]);
            let result = read_all(Full::new(Bytes::from_static(b"{}")), &h, limits(100)).await;
            assert!(matches!(result, Err(ProxyError::BadRequest(_))), "{value}");
        }
        let h = headers(&[("transfer-encoding", "chunked")]);
        read_all(Full::new(Bytes::from_static(b"{}")), &h, limits(100))
            .await
            .unwrap();
    }

    /// A body that sends a first chunk and then nothing.
    fn stalled() -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        use futures_util::StreamExt;
        let first = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"{")))
        });
        StreamBody::new(first.chain(futures_util::stream::pending()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_after_a_second_below_the_minimum_rate() {
        let started = Instant::now();
        let result = read_all(stalled(), &HeaderMap::new(), limits(1000)).await;
        assert!(
            matches!(result, Err(ProxyError::RequestTimeout(_))),
            "{result:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_minimum_rate_the_whole_body_deadline_holds() {
        let started = Instant::now();
        let mut slow = limits(1000);
        slow.min_bytes_per_second = 0;
        slow.timeout = Duration::from_secs(7);
        let result = read_all(stalled(), &HeaderMap::new(), slow).await;
        assert!(matches!(result, Err(ProxyError::RequestTimeout(m)) if m.contains("within 7 s")));
        assert!(started.elapsed() >= Duration::from_secs(7));
    }
}
