//! A purpose-built AAD for the cases an off-the-shelf IdP cannot stage: forged and malformed
//! tokens signed with keys made here, a token endpoint that fails on command, and exact counts
//! of token requests and key fetches. (End-to-end tests use an independent IdP, oauth2-mock-server.)
//!
//! Routes: `GET /.well-known/openid-configuration`, `GET /keys`,
//! `POST /{tenant}/oauth2/v2.0/token` (client credentials), `GET /imds` (managed identity).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub const AUDIENCE: &str = "api://kqlgate";
pub const AAD_TENANT: &str = "aad-tenant-1";

/// An ECDSA P-256 signing key and its JWK.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: serde_json::Value,
    /// The raw public point, for the HMAC-with-public-key attack.
    pub public_raw: Vec<u8>,
}

impl SigningKey {
    pub fn generate(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw().to_vec();
        SigningKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid, "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
            }),
            public_raw: raw,
        }
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

#[derive(Default)]
struct State {
    token_requests: Vec<HashMap<String, String>>,
    imds_requests: Vec<String>,
    key_fetches: usize,
    failing: bool,
    lifetime_seconds: u64,
}

#[derive(Clone)]
pub struct FakeAad {
    pub addr: SocketAddr,
    pub key: Arc<SigningKey>,
    state: Arc<Mutex<State>>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl FakeAad {
    pub async fn start() -> FakeAad {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let aad = FakeAad {
            addr: listener.local_addr().unwrap(),
            key: Arc::new(SigningKey::generate("key-1")),
            state: Arc::new(Mutex::new(State {
                lifetime_seconds: 3600,
                ..State::default()
            })),
        };
        super::serve(
            listener,
            aad.clone(),
            |aad: FakeAad, request| Box::pin(async move { aad.answer(request).await }),
            |_| {},
        );
        aad
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn issuer(&self) -> String {
        format!("{}/{AAD_TENANT}/v2.0", self.base())
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base())
    }

    /// Claims of a valid caller token; tests override what they attack.
    pub fn claims(&self, appid: &str) -> serde_json::Value {
        serde_json::json!({
            "iss": self.issuer(), "aud": AUDIENCE, "tid": AAD_TENANT, "appid": appid,
            "oid": format!("oid-of-{appid}"), "iat": now(), "nbf": now(), "exp": now() + 600,
        })
    }

    pub fn token_for(&self, appid: &str) -> String {
        self.key.sign(&self.claims(appid))
    }

    pub fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().token_requests.clone()
    }

    pub fn imds_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().imds_requests.clone()
    }

    pub fn key_fetches(&self) -> usize {
        self.state.lock().unwrap().key_fetches
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }

    pub fn set_lifetime(&self, seconds: u64) {
        self.state.lock().unwrap().lifetime_seconds = seconds;
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let metadata = request.headers().get("metadata").cloned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let mut state = self.state.lock().unwrap();
        match path.as_str() {
            "/.well-known/openid-configuration" => json(
                StatusCode::OK,
                serde_json::json!({"issuer": self.issuer(), "jwks_uri": format!("{}/keys", self.base())}),
            ),
            "/keys" => {
                state.key_fetches += 1;
                json(StatusCode::OK, serde_json::json!({"keys": [self.key.jwk]}))
            }
            "/imds" => {
                if metadata.is_none() {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "no Metadata header"}),
                    );
                }
                state.imds_requests.push(query);
                let lifetime = state.lifetime_seconds.to_string();
                json(
                    StatusCode::OK,
                    serde_json::json!({"access_token": "imds-token", "expires_in": lifetime, "token_type": "Bearer"}),
                )
            }
            p if p.ends_with("/oauth2/v2.0/token") => {
                let form: HashMap<String, String> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                state.token_requests.push(form.clone());
                if state.failing {
                    return json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"error": "temporarily_unavailable", "error_description": "down for the test"}),
                    );
                }
                let n = state.token_requests.len();
                let client = form.get("client_id").cloned().unwrap_or_default();
                json(
                    StatusCode::OK,
                    serde_json::json!({"token_type": "Bearer", "expires_in": state.lifetime_seconds,
                        "access_token": format!("upstream-token-{n}-{client}")}),
                )
            }
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not_found"}),
            ),
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
