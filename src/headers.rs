//! Header names kqlgate reads or writes, and the hop-by-hop set it never passes on.

use http::header::HeaderName;

pub const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");
pub const ACTIVITY_ID: HeaderName = HeaderName::from_static("x-ms-activity-id");
pub const CLIENT_VERSION: HeaderName = HeaderName::from_static("x-ms-client-version");
pub const KUSTO_VERSION: HeaderName = HeaderName::from_static("x-ms-version");
pub const USER: HeaderName = HeaderName::from_static("x-ms-user");
pub const APP: HeaderName = HeaderName::from_static("x-ms-app");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the proxy
/// credentials of this hop. Also removed: every header the `Connection` header itself names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request id a client sent, if it is one we can echo safely; kqlgate mints one otherwise.
pub fn client_request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(CLIENT_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 256)
        .map_or_else(
            || format!("kqlgate;{}", uuid::Uuid::new_v4()),
            str::to_owned,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut headers = http::HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("x-ms-activity-id", "a".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-ms-activity-id"));
    }

    #[test]
    fn request_id_is_kept_or_minted() {
        let mut headers = http::HeaderMap::new();
        assert!(client_request_id(&headers).starts_with("kqlgate;"));
        headers.insert(CLIENT_REQUEST_ID, "KPC.execute;1".parse().unwrap());
        assert_eq!(client_request_id(&headers), "KPC.execute;1");
        headers.insert(CLIENT_REQUEST_ID, "x".repeat(300).parse().unwrap());
        assert!(client_request_id(&headers).starts_with("kqlgate;"));
    }
}
