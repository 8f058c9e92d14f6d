//! Stage: read the request body, bounded, and undo `Content-Encoding: gzip | deflate`.
//!
//! The limit applies twice: to the bytes on the wire and to the decoded bytes, which are produced
//! through a reader capped at `limit + 1`, so a gzip bomb costs at most `limit` bytes of memory
//! before it is refused with 413.

use std::io::Read;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::HeaderMap;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::ProxyError;

pub async fn read<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, ProxyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = ProxyError::PayloadTooLarge { limit };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large);
    }
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large),
        Err(_) => {
            return Err(ProxyError::BadRequest(
                "the request body could not be read".into(),
            ))
        }
    };
    decode(raw, content_encoding(headers)?, limit)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ProxyError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.to_str().unwrap_or("").trim();
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
        Encoding::Gzip => inflate(flate2::read::MultiGzDecoder::new(&raw[..]), limit, "gzip"),
        // RFC 9110 says deflate means the zlib format, but some clients send raw deflate.
        Encoding::Deflate if looks_like_zlib(&raw) => {
            inflate(flate2::read::ZlibDecoder::new(&raw[..]), limit, "deflate")
        }
        Encoding::Deflate => inflate(
            flate2::read::DeflateDecoder::new(&raw[..]),
            limit,
            "deflate",
        ),
    }
}

/// A zlib stream starts with a CMF/FLG pair whose 16-bit value is a multiple of 31 (RFC 1950).
fn looks_like_zlib(raw: &[u8]) -> bool {
    raw.len() >= 2 && raw[0] & 0x0f == 8 && (u16::from(raw[0]) << 8 | u16::from(raw[1])) % 31 == 0
}

fn inflate(decoder: impl Read, limit: usize, name: &str) -> Result<Bytes, ProxyError> {
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
    use http_body_util::Full;
    use std::io::Write;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
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
        read(Full::new(Bytes::from(body)), &headers, limit).await
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
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
        let result = read(Full::new(Bytes::from_static(b"{}")), &h, 100).await;
        assert!(matches!(result, Err(ProxyError::PayloadTooLarge { .. })));
    }

    #[tokio::test]
    async fn gzip_zlib_and_raw_deflate_are_decoded() {
        let data = br#"{"db":"x","csl":"T | take 1"}"#;
        assert_eq!(
            &read_with(gzip(data), Some("gzip"), 1000).await.unwrap()[..],
            data
        );
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::fast());
        zlib.write_all(data).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(
            &read_with(zlib, Some("deflate"), 1000).await.unwrap()[..],
            data
        );
        let mut raw = DeflateEncoder::new(Vec::new(), Compression::fast());
        raw.write_all(data).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            &read_with(raw, Some("Deflate"), 1000).await.unwrap()[..],
            data
        );
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
    }
}
