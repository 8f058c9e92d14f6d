//! AAD on both sides, against the real binary: Bearer callers validated and mapped to tenants
//! (with forged and malformed tokens made here), and the proxy's own cluster identity —
//! client secret, workload identity, managed identity — cached, refreshed and shared.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::fake_aad::{now, FakeAad, SigningKey, AAD_TENANT, AUDIENCE};
use common::upstream::TestUpstream;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SECRET_ENV: &str = "KQLGATE_TEST_CLIENT_SECRET";
const SECRET: &str = "client-secret-value-never-logged";

fn aad_section(aad: &FakeAad) -> String {
    format!(
        "[aad]\nopenid_config_url = \"{}\"\naudiences = [\"{AUDIENCE}\"]\ntenants = [\"{AAD_TENANT}\"]\njwks_min_refetch_seconds = 3600\n",
        aad.discovery_url()
    )
}

fn client_secret(aad: &FakeAad, client_id: &str) -> String {
    format!(
        "auth = \"client-secret\"\ntenant_id = \"{AAD_TENANT}\"\nclient_id = \"{client_id}\"\nclient_secret_env = \"{SECRET_ENV}\"\nauthority_host = \"{}\"",
        aad.base()
    )
}

fn contoso() -> TenantSpec {
    TenantSpec::new("contoso", "contoso-key-123", CONTOSO_DB)
        .with("aad_principals = [\"app:dashboard-app\", \"app:both\"]")
}

fn fabrikam() -> TenantSpec {
    TenantSpec::new("fabrikam", "fabrikam-key-123", FABRIKAM_DB)
        .with("aad_principals = [\"oid:oid-of-both\"]")
}

async fn start(aad: &FakeAad, upstream: &TestUpstream, tenants: &[TenantSpec]) -> Kqlgate {
    let text = config(
        &upstream.url(),
        &client_secret(aad, "kqlgate-app"),
        &aad_section(aad),
        tenants,
    );
    Kqlgate::start_with_env(&text, &[(SECRET_ENV, SECRET)])
}

async fn with_bearer(gate: &Kqlgate, token: &str) -> reqwest::Response {
    client()
        .post(gate.url("/v2/rest/query"))
        .header("authorization", format!("Bearer {token}"))
        .body(r#"{"csl":"print 1"}"#)
        .send()
        .await
        .unwrap()
}

/// A JWT with any header and claims, signed by `sign` over the signing input.
fn handmade(header: serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
    let part = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(&header),
        part(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn aad_callers_act_as_their_tenant_and_the_cluster_sees_only_the_proxys_token() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    let gate = start(&aad, &upstream, &[contoso(), fabrikam()]).await;

    let token = aad.token_for("dashboard-app");
    let response = with_bearer(&gate, &token).await;
    assert_eq!(response.status(), 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.headers["x-ms-user"], "contoso");
    assert_eq!(seen.body["db"], CONTOSO_DB);
    assert_eq!(
        seen.headers["authorization"],
        "Bearer upstream-token-1-kqlgate-app"
    );
    for value in seen.headers.values() {
        assert!(
            !value.to_str().unwrap_or("").contains(&token),
            "caller token forwarded"
        );
    }

    // The most specific principal wins: oid (fabrikam) over appid (contoso).
    assert_eq!(
        with_bearer(&gate, &aad.token_for("both")).await.status(),
        200
    );
    assert_eq!(
        upstream.requests().pop().unwrap().headers["x-ms-user"],
        "fabrikam"
    );

    // A valid token whose principal maps to no tenant is refused like an unknown Basic tenant.
    let stranger = with_bearer(&gate, &aad.token_for("stranger-app")).await;
    assert_eq!(stranger.status(), 401);
    assert_eq!(error_body(stranger).await["error"]["code"], "Unauthorized");

    // Basic callers still work beside Bearer callers.
    assert_eq!(query_as(&gate, &contoso()).await.status(), 200);
}

/// Every attack gets the same 401, and nothing reaches the cluster.
#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    let gate = start(&aad, &upstream, &[contoso()]).await;
    let good = aad.claims("dashboard-app");
    let with = |field: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    let impostor = SigningKey::generate("key-1"); // same kid, different key
    let hs256 = |secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("key-1".into());
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(secret)).unwrap()
    };
    let valid = aad.key.sign(&good);
    let (head, _, signature) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    let tampered = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(with("appid", "admin-app".into()).to_string())
    );
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            handmade(
                serde_json::json!({"alg": "none", "kid": "key-1"}),
                &good,
                b"",
            ),
        ),
        (
            "alg none, no signature part",
            format!(
                "{}.",
                handmade(
                    serde_json::json!({"alg": "none", "kid": "key-1"}),
                    &good,
                    b""
                )
                .rsplit_once('.')
                .unwrap()
                .0
            ),
        ),
        (
            "HS256 keyed with the public key",
            hs256(&aad.key.public_raw),
        ),
        (
            "HS256 keyed with the JWK",
            hs256(aad.key.jwk.to_string().as_bytes()),
        ),
        ("signed by another key", impostor.sign(&good)),
        ("payload changed after signing", tampered),
        (
            "wrong audience",
            aad.key
                .sign(&with("aud", "https://mycluster.kusto.windows.net".into())),
        ),
        ("expired", aad.key.sign(&with("exp", (now() - 3600).into()))),
        (
            "not yet valid",
            aad.key.sign(&with("nbf", (now() + 3600).into())),
        ),
        (
            "another issuer",
            aad.key.sign(&with(
                "iss",
                "https://login.microsoftonline.com/evil/v2.0".into(),
            )),
        ),
        (
            "unlisted tenant",
            aad.key.sign(&with("tid", "other-tenant".into())),
        ),
        ("no expiry", {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("exp");
            aad.key.sign(&c)
        }),
        (
            "unknown kid",
            SigningKey::generate("key-unknown").sign(&good),
        ),
        ("not a JWT", "abc.def".into()),
        ("empty", String::new()),
    ];
    for (name, token) in attacks {
        let response = with_bearer(&gate, &token).await;
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(
            error_body(response).await["error"]["code"],
            "Unauthorized",
            "{name}"
        );
    }
    assert!(
        upstream.requests().is_empty(),
        "a refused caller reached the cluster"
    );
    // The genuine token still works after all that.
    assert_eq!(with_bearer(&gate, &valid).await.status(), 200);
}

#[tokio::test]
async fn unknown_kid_floods_do_not_hammer_the_idp() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    let gate = start(&aad, &upstream, &[contoso()]).await;
    assert_eq!(
        with_bearer(&gate, &aad.token_for("dashboard-app"))
            .await
            .status(),
        200
    );
    let before = aad.key_fetches();
    for i in 0..40 {
        let bogus = SigningKey::generate(&format!("bogus-{i}")).sign(&aad.claims("dashboard-app"));
        assert_eq!(with_bearer(&gate, &bogus).await.status(), 401);
    }
    let extra = aad.key_fetches() - before;
    assert!(extra <= 1, "{extra} key fetches for 40 unknown kids");
}

#[tokio::test]
async fn metadata_names_kqlgates_own_audience_and_bearer_needs_aad() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    let gate = start(&aad, &upstream, &[contoso()]).await;
    let metadata: serde_json::Value = client()
        .get(gate.url("/v1/rest/auth/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let azure_ad = &metadata["AzureAD"];
    assert_eq!(azure_ad["KustoServiceResourceId"], AUDIENCE);
    for field in [
        "LoginEndpoint",
        "LoginMfaRequired",
        "KustoClientAppId",
        "KustoClientRedirectUri",
        "FirstPartyAuthorityUrl",
    ] {
        assert!(!azure_ad[field].is_null(), "{field} missing");
    }

    let plain = Kqlgate::start(&config(
        &upstream.url(),
        "",
        "",
        &[TenantSpec::new("contoso", "k", CONTOSO_DB)],
    ));
    assert_eq!(
        with_bearer(&plain, &aad.token_for("dashboard-app"))
            .await
            .status(),
        401
    );
    let missing = client()
        .get(plain.url("/v1/rest/auth/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Concurrent first requests share one token request, and later ones reuse the token.
#[tokio::test]
async fn one_token_request_serves_concurrent_callers() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    let gate = start(&aad, &upstream, &[contoso()]).await;
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let (url, auth) = (gate.url("/v1/rest/query"), contoso().basic());
            tokio::spawn(async move {
                client()
                    .post(url)
                    .header("authorization", auth)
                    .body(r#"{"csl":"print 1"}"#)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let token_requests = aad.token_requests();
    assert_eq!(token_requests.len(), 1, "{token_requests:?}");
    let form = &token_requests[0];
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "kqlgate-app");
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["scope"], format!("{}/.default", upstream.url()));
}

#[tokio::test]
async fn failing_token_endpoint_fails_fast_without_secrets_then_recovers() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    aad.set_failing(true);
    let gate = start(&aad, &upstream, &[contoso()]).await;
    let response = query_as(&gate, &contoso()).await;
    assert_eq!(response.status(), 502);
    let body = error_body(response).await;
    assert_eq!(body["error"]["code"], "BadGateway");
    assert!(body["error"]["@message"]
        .as_str()
        .unwrap()
        .contains("cluster credential is unavailable"));
    assert!(!body.to_string().contains(SECRET));
    assert!(upstream.requests().is_empty());

    aad.set_failing(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    while Instant::now() < deadline {
        status = query_as(&gate, &contoso()).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        status, 200,
        "no recovery after the token endpoint came back"
    );
    assert!(
        !gate.log().contains(SECRET),
        "the client secret reached the log"
    );
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry() {
    const LIFETIME: u64 = 3;
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    aad.set_lifetime(LIFETIME);
    let gate = start(&aad, &upstream, &[contoso()]).await;
    let run = Duration::from_secs(10);
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < run {
        assert_eq!(
            query_as(&gate, &contoso()).await.status(),
            200,
            "request {served} failed"
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token_requests = aad.token_requests().len() as f64;
    // kqlgate counts a token one second short, then refreshes a tenth of that early
    // (identity.rs): one request at start, then one per refresh period.
    let period = 0.9 * (LIFETIME as f64 - 1.0);
    let expected = 1.0 + (started.elapsed().as_secs_f64() / period).floor();
    eprintln!(
        "{served} requests over {run:?}: {token_requests} token requests, {expected} expected (period {period:.1} s)"
    );
    assert!(
        (token_requests - expected).abs() <= 1.0,
        "{token_requests} token requests, {expected} expected"
    );
    let expiries = run.as_secs() / LIFETIME;
    // Each upstream request carried a then-current token.
    let tokens: std::collections::HashSet<String> = upstream
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert!(tokens.len() as u64 >= expiries, "{tokens:?}");
}

#[tokio::test]
async fn workload_identity_presents_the_federated_token_and_rereads_it() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    aad.set_lifetime(2);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("federated-token");
    std::fs::write(&token_file, "federated-1\n").unwrap();
    let cluster = format!(
        "auth = \"workload-identity\"\ntenant_id = \"{AAD_TENANT}\"\nclient_id = \"wi-app\"\nfederated_token_file = \"{}\"\nauthority_host = \"{}\"",
        token_file.display(),
        aad.base()
    );
    let plain = || TenantSpec::new("contoso", "contoso-key-123", CONTOSO_DB);
    let gate = Kqlgate::start(&config(&upstream.url(), &cluster, "", &[plain()]));
    assert_eq!(query_as(&gate, &plain()).await.status(), 200);
    let first = aad.token_requests()[0].clone();
    assert_eq!(first["client_assertion"], "federated-1");
    assert_eq!(
        first["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(!first.contains_key("client_secret"));

    std::fs::write(&token_file, "federated-2\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !aad
            .token_requests()
            .iter()
            .any(|f| f["client_assertion"] == "federated-2")
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(aad
        .token_requests()
        .iter()
        .any(|f| f["client_assertion"] == "federated-2"));
}

#[tokio::test]
async fn managed_identity_asks_the_metadata_endpoint() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    let cluster = format!(
        "auth = \"managed-identity\"\nclient_id = \"user-assigned\"\nimds_endpoint = \"{}/imds\"",
        aad.base()
    );
    let plain = || TenantSpec::new("contoso", "contoso-key-123", CONTOSO_DB);
    let gate = Kqlgate::start(&config(&upstream.url(), &cluster, "", &[plain()]));
    assert_eq!(query_as(&gate, &plain()).await.status(), 200);
    assert_eq!(
        upstream.requests().pop().unwrap().headers["authorization"],
        "Bearer imds-token"
    );
    let query = aad.imds_requests().pop().unwrap();
    assert!(query.contains("api-version=2018-02-01"), "{query}");
    assert!(query.contains("client_id=user-assigned"), "{query}");
    let resource = format!(
        "resource={}",
        url::form_urlencoded::byte_serialize(upstream.url().as_bytes()).collect::<String>()
    );
    assert!(query.contains(&resource), "{query}");
}

#[tokio::test]
async fn a_tenants_own_identity_replaces_the_clusters() {
    let (aad, upstream) = (FakeAad::start().await, TestUpstream::start().await);
    let own = format!(
        "aad_principals = [\"app:dashboard-app\"]\n[tenants.upstream]\n{}",
        client_secret(&aad, "contoso-own-app")
    );
    let contoso = TenantSpec::new("contoso", "contoso-key-123", CONTOSO_DB)
        .with(Box::leak(own.into_boxed_str()));
    let gate = start(
        &aad,
        &upstream,
        &[
            contoso,
            TenantSpec::new("fabrikam", "fabrikam-key-123", FABRIKAM_DB),
        ],
    )
    .await;
    let cases = [
        (
            TenantSpec::new("contoso", "contoso-key-123", CONTOSO_DB),
            "-contoso-own-app",
        ),
        (
            TenantSpec::new("fabrikam", "fabrikam-key-123", FABRIKAM_DB),
            "-kqlgate-app",
        ),
    ];
    for (tenant, token_suffix) in cases {
        assert_eq!(query_as(&gate, &tenant).await.status(), 200);
        let seen = upstream.requests().pop().unwrap();
        let authorization = seen.headers["authorization"].to_str().unwrap().to_owned();
        assert!(
            authorization.ends_with(token_suffix),
            "{}: {authorization}",
            tenant.id
        );
    }
}

async fn query_as(gate: &Kqlgate, tenant: &TenantSpec) -> reqwest::Response {
    query(gate, tenant, r#"{"csl":"print 1"}"#).await
}
