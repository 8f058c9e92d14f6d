"""AAD through kqlgate: Bearer callers validated against a test IdP, kqlgate's own cluster token.

The IdP is tests/idp/server.mjs (oauth2-mock-server): it issues client-credentials tokens with
AAD's claims (aud from the scope, tid, appid, oid) and counts token requests per client.
Fixtures (conftest.py): `idp` and `idp_es` (both trusted; ES256 keys at the second),
`idp_other` (untrusted: unrelated keys and issuer), and `aad_gateway`: a kqlgate with [aad]
whose cluster identity (client-secret at `idp`) reaches the recording shim in front of the real
engine, so a test sees what Authorization went upstream (read from the shim's records, matched
by x-ms-client-request-id or a marker in the query). The refresh and outage tests start kqlgates
(and, for the outage, an IdP) of their own.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid

import jwt
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.kusto.data import ClientRequestProperties, KustoClient, KustoConnectionStringBuilder
from azure.kusto.data._cloud_settings import CloudSettings

from conftest import (
    AAD_AUDIENCE,
    AAD_TENANT,
    CLUSTER_CLIENT_ID,
    CONTOSO_APP_ID,
    CONTOSO_USER_OID,
    FABRIKAM_TENANT_ID,
    FABRIKAM_UPSTREAM_CLIENT_ID,
    FABRIKAM_USER_OID,
    aad_identity_toml,
    assert_envelope,
    basic,
    free_port,
    launch_kqlgate,
    new_key,
    primary_rows,
    start_idp,
    states,
)
import sample_data
from upstream_shim import Recorded

KUSTO_CLIENT_APP_ID = "db662dc1-0cfe-4e1c-a843-19a68e65be58"
FIRST_PARTY_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"


def default_scope(cluster_url: str) -> str:
    """kqlgate's default scope for a cluster: the origin of its URL (scheme, host, port) + /.default."""
    return cluster_url.rstrip("/") + "/.default"


def claims_of(token: str) -> dict:
    """A JWT's payload, unverified."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def records(shim, request_id_prefix: str) -> list[Recorded]:
    with shim._lock:
        return [r for r in shim._records if r.headers.get("x-ms-client-request-id", "").startswith(request_id_prefix)]


def all_records(shim) -> list[Recorded]:
    with shim._lock:
        return list(shim._records)


def verified_upstream_claims(idp, shim, authorization: str, verify_exp: bool = True) -> dict:
    """The upstream Authorization must be a Bearer token the IdP signed for the shim's resource.
    verify_exp=False: `exp` is returned, not enforced (the caller compares it with send times)."""
    assert authorization.startswith("Bearer "), authorization[:20]
    token = authorization[len("Bearer "):]
    key = jwt.PyJWKClient(idp.url + "/jwks").get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=shim.url, issuer=idp.url,
                      options={"verify_exp": verify_exp})


def marker_query(gw, token: str | None, marker: str, headers: dict | None = None) -> requests.Response:
    return gw.post("/v1/rest/query", {"db": "", "csl": f'print m = "{marker}"'}, token, headers=headers)


def reporters(resp: requests.Response) -> set[str]:
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:1000]}"
    return {row["Reporter"] for row in primary_rows(resp)}


# ---------------------------------------------------------------------------
# The SDK with a caller token
# ---------------------------------------------------------------------------


def test_sdk_with_application_token_gets_contoso_rows_and_upstream_gets_kqlgates_token(aad_gateway, idp):
    caller = idp.token(CONTOSO_APP_ID)
    assert claims_of(caller)["aud"] == AAD_AUDIENCE and claims_of(caller)["appid"] == CONTOSO_APP_ID
    client = KustoClient(KustoConnectionStringBuilder.with_aad_application_token_authentication(aad_gateway.url, caller))
    run = f"e2e.aad;{uuid.uuid4()}"

    def crp(kind: str) -> ClientRequestProperties:
        props = ClientRequestProperties()
        props.client_request_id = f"{run};{kind}"
        return props

    try:
        result = client.execute_query("Samples", "StormEvents | project State, Reporter", crp("query"))
        rows = list(result.primary_results[0])
        assert {r["Reporter"] for r in rows} == {"contoso"}
        assert {r["State"] for r in rows} == states("contoso")

        mgmt = client.execute_mgmt(aad_gateway.guids["contoso"], ".show tables", crp("mgmt"))
        tables = list(mgmt.primary_results[0])
        assert "StormEvents" in {r["TableName"] for r in tables}, tables
        assert {r["DatabaseName"] for r in tables} == {aad_gateway.guids["contoso"]}

        stream = client.execute_streaming_query("Samples", "StormEvents | project State, Reporter | order by State asc",
                                                properties=crp("stream"))
        got = [(row["State"], row["Reporter"]) for table in stream.iter_primary_results() for row in table]
        assert got == sorted((row[1], "contoso") for row in sample_data.DATASETS["contoso"].rows), got
    finally:
        client.close()

    seen = records(aad_gateway.shim, run)
    kinds = sorted(r.headers["x-ms-client-request-id"].rsplit(";", 1)[1] for r in seen)
    assert kinds == ["mgmt", "query", "stream"], [(r.path, r.headers.get("x-ms-client-request-id")) for r in seen]
    for rec in seen:
        authorization = rec.headers.get("authorization", "")
        assert caller not in authorization
        upstream = verified_upstream_claims(idp, aad_gateway.shim, authorization)
        assert upstream["appid"] == CLUSTER_CLIENT_ID, upstream
        assert upstream["tid"] == AAD_TENANT, upstream
        assert upstream["appid"] != claims_of(caller)["appid"]
    # The caller's token went nowhere upstream: no header, no body of any recorded request.
    for rec in all_records(aad_gateway.shim):
        assert caller not in json.dumps(rec.headers) and caller.encode() not in rec.body, rec.path
    # kqlgate asked for its token as configured: its tenant's endpoint, the default scope, a secret.
    asked = idp.stats()["last_token_request"][CLUSTER_CLIENT_ID]
    assert asked == {"tenant": AAD_TENANT, "grant_type": "client_credentials", "scope": default_scope(aad_gateway.shim.url),
                     "form_keys": ["client_id", "client_secret", "grant_type", "scope"]}, asked


# ---------------------------------------------------------------------------
# Which tenant a token maps to
# ---------------------------------------------------------------------------

UNMAPPED_APP = "a0000000-0000-4000-8000-0000000000aa"
UNMAPPED_OID = "b0000000-0000-4000-8000-0000000000bb"
UNMAPPED_TID = "d0000000-0000-4000-8000-0000000000dd"

PRINCIPAL_CASES = {
    # case: (client_id, extra form fields, expected tenant)
    "appid": (CONTOSO_APP_ID, {"oid": UNMAPPED_OID, "tid": UNMAPPED_TID}, "contoso"),
    "azp-without-appid": (UNMAPPED_APP, {"oid": UNMAPPED_OID, "tid": UNMAPPED_TID,
                                         "claims": json.dumps({"appid": None, "azp": CONTOSO_APP_ID})}, "contoso"),
    "oid": (UNMAPPED_APP, {"oid": CONTOSO_USER_OID, "tid": UNMAPPED_TID}, "contoso"),
    "tid": (UNMAPPED_APP, {"oid": UNMAPPED_OID, "tid": FABRIKAM_TENANT_ID}, "fabrikam"),
    "oid-beats-tid": (UNMAPPED_APP, {"oid": CONTOSO_USER_OID, "tid": FABRIKAM_TENANT_ID}, "contoso"),
    "oid-beats-appid": (CONTOSO_APP_ID, {"oid": FABRIKAM_USER_OID, "tid": UNMAPPED_TID}, "fabrikam"),
    "appid-beats-tid": (CONTOSO_APP_ID, {"oid": UNMAPPED_OID, "tid": FABRIKAM_TENANT_ID}, "contoso"),
    "expired-within-leeway": (CONTOSO_APP_ID, {"expires_in": -10}, "contoso"),
}


@pytest.mark.parametrize("case", list(PRINCIPAL_CASES))
def test_principal_maps_to_tenant(aad_gateway, idp, case):
    client_id, form, tenant = PRINCIPAL_CASES[case]
    token = idp.token(client_id, **form)
    resp = aad_gateway.post("/v1/rest/query", {"db": "", "csl": "StormEvents | project Reporter"}, token)
    assert reporters(resp) == {tenant}, claims_of(token)


def test_es256_token_from_the_second_trusted_idp(aad_gateway, idp_es):
    token = idp_es.token(CONTOSO_APP_ID)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert claims_of(token)["iss"] == idp_es.url
    resp = aad_gateway.post("/v1/rest/query", {"db": "", "csl": "StormEvents | project Reporter"}, token)
    assert reporters(resp) == {"contoso"}


def test_fabrikam_reaches_the_cluster_with_its_own_identity(aad_gateway, idp):
    token = idp.token(UNMAPPED_APP, tid=FABRIKAM_TENANT_ID)
    run = f"e2e.aad;{uuid.uuid4()}"
    resp = aad_gateway.post("/v2/rest/query", {"db": "", "csl": "StormEvents | project Reporter"}, token,
                            headers={"x-ms-client-request-id": run})
    assert reporters(resp) == {"fabrikam"}
    (rec,) = records(aad_gateway.shim, run)
    upstream = verified_upstream_claims(idp, aad_gateway.shim, rec.headers["authorization"])
    assert upstream["appid"] == FABRIKAM_UPSTREAM_CLIENT_ID, upstream
    # The IdP checks that client's secret: kqlgate read it from client_secret_file.
    asked = idp.stats()["last_token_request"][FABRIKAM_UPSTREAM_CLIENT_ID]
    assert asked["tenant"] == AAD_TENANT and "client_secret" in asked["form_keys"], asked


# ---------------------------------------------------------------------------
# /v1/rest/auth/metadata and the SDK's own sign-in
# ---------------------------------------------------------------------------


def test_auth_metadata(aad_gateway, idp):
    resp = requests.get(aad_gateway.url + "/v1/rest/auth/metadata", timeout=10)  # no Authorization
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"
    assert resp.json() == {"AzureAD": {
        "LoginEndpoint": idp.url,
        "LoginMfaRequired": False,
        "KustoClientAppId": KUSTO_CLIENT_APP_ID,
        "KustoClientRedirectUri": "http://localhost",
        "KustoServiceResourceId": AAD_AUDIENCE,
        "FirstPartyAuthorityUrl": f"{idp.url}/{FIRST_PARTY_TENANT}",
    }}, resp.text
    info = CloudSettings.get_cloud_info_for_cluster(aad_gateway.url)
    assert (info.login_endpoint, info.kusto_service_resource_id) == (idp.url, AAD_AUDIENCE)


def test_sdk_signs_in_with_what_the_metadata_says(aad_gateway, idp):
    """`with_azure_token_credential`: the SDK reads /v1/rest/auth/metadata, hands its
    LoginEndpoint to the credential factory and asks for <KustoServiceResourceId>/.default."""
    seen: dict = {}

    class IdpCredential:
        def __init__(self, login_endpoint: str):
            seen["login_endpoint"] = login_endpoint
            self.login_endpoint = login_endpoint

        def get_token(self, *scopes, **kwargs) -> AccessToken:
            seen["scopes"] = scopes
            resp = requests.post(f"{self.login_endpoint}/{AAD_TENANT}/oauth2/v2.0/token", timeout=10, data={
                "grant_type": "client_credentials", "client_id": CONTOSO_APP_ID,
                "client_secret": "contoso-app-secret", "scope": scopes[0]})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            return AccessToken(body["access_token"], int(time.time()) + body["expires_in"])

        def close(self):
            pass

    client = KustoClient(KustoConnectionStringBuilder.with_azure_token_credential(
        aad_gateway.url, credential_from_login_endpoint=IdpCredential))
    try:
        result = client.execute_query("Samples", "StormEvents | project Reporter")
        assert {r["Reporter"] for r in result.primary_results[0]} == {"contoso"}
    finally:
        client.close()
    assert seen == {"login_endpoint": idp.url, "scopes": (AAD_AUDIENCE + "/.default",)}, seen


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


def _alg_none(idp) -> str:
    good = idp.token(CONTOSO_APP_ID)
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    return f"{b64url({**header, 'alg': 'none'})}.{good.split('.')[1]}."


def _hs256(idp) -> str:
    """HS256 keyed with the IdP's public key (PEM), the classic algorithm-confusion forgery."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    good = idp.token(CONTOSO_APP_ID)
    public = jwt.PyJWKClient(idp.url + "/jwks").get_signing_key_from_jwt(good).key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {**jwt.get_unverified_header(good), "alg": "HS256"}
    signing_input = f"{b64url(header)}.{good.split('.')[1]}"
    sig = base64.urlsafe_b64encode(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=")
    return f"{signing_input}.{sig.decode()}"


def _tampered(idp) -> str:
    """A contoso token whose payload now names fabrikam's user: the signature no longer fits."""
    good = idp.token(CONTOSO_APP_ID)
    head, _, sig = good.split(".")
    return f"{head}.{b64url({**claims_of(good), 'oid': FABRIKAM_USER_OID})}.{sig}"


REFUSED = {
    "other-audience": lambda idps: idps['idp'].token(CONTOSO_APP_ID, scope="api://someone-else/.default"),
    "no-audience": lambda idps: idps['idp'].token(CONTOSO_APP_ID, claims=json.dumps({"aud": None})),
    "expired": lambda idps: idps['idp'].token(CONTOSO_APP_ID, expires_in=-600),
    "not-yet-valid": lambda idps: idps['idp'].token(CONTOSO_APP_ID, claims=json.dumps({"nbf": int(time.time()) + 600})),
    "other-issuer-claim": lambda idps: idps['idp'].token(CONTOSO_APP_ID, claims=json.dumps({"iss": "https://sts.example/x/"})),
    "unmapped-principal": lambda idps: idps['idp'].token(UNMAPPED_APP, oid=UNMAPPED_OID, tid=UNMAPPED_TID),
    "untrusted-idp": lambda idps: idps['other'].token(CONTOSO_APP_ID, oid=CONTOSO_USER_OID),
    # idp_es is trusted, but its keys sign for its own issuer, not for idp's.
    "trusted-key-other-issuer": lambda idps: idps['es'].token(CONTOSO_APP_ID,
                                                               claims=json.dumps({"iss": idps['idp'].url})),
    "tampered-payload": lambda idps: _tampered(idps['idp']),
    "alg-none": lambda idps: _alg_none(idps['idp']),
    "hs256-with-public-key": lambda idps: _hs256(idps['idp']),
    "not-a-jwt": lambda idps: "not-a-jwt",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_token_is_401(aad_gateway, idp, idp_other, idp_es, case):
    token = REFUSED[case]({"idp": idp, "other": idp_other, "es": idp_es})
    marker = f"m{uuid.uuid4().hex}"
    resp = marker_query(aad_gateway, token, marker)
    assert_envelope(resp, 401, "Unauthorized")
    assert aad_gateway.shim.find(marker) == [], "a refused request reached the cluster"


def test_accepted_token_is_control_for_refusals(aad_gateway, idp):
    """The refusals above are refusals of the token alone: the same request with a good one passes."""
    marker = f"m{uuid.uuid4().hex}"
    resp = marker_query(aad_gateway, idp.token(CONTOSO_APP_ID), marker)
    assert resp.status_code == 200, resp.text
    assert len(aad_gateway.shim.find(marker)) == 1


def test_basic_to_a_tenant_without_keys_is_401(aad_gateway):
    resp = requests.post(aad_gateway.url + "/v1/rest/query", json={"db": "", "csl": "print 1"},
                         headers={"Authorization": basic("contoso", "any-key-at-all")}, timeout=30)
    assert_envelope(resp, 401, "Unauthorized")


def test_bearer_to_kqlgate_without_aad_is_401(gateway, idp):
    token = idp.token(CONTOSO_APP_ID)
    resp = requests.post(gateway.url + "/v1/rest/query", json={"db": "", "csl": "print 1"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert_envelope(resp, 401, "Unauthorized")
    metadata = requests.get(gateway.url + "/v1/rest/auth/metadata", timeout=10)
    assert metadata.status_code == 404, metadata.text


# ---------------------------------------------------------------------------
# kqlgate's own token: refresh ahead of expiry, and an IdP outage
# ---------------------------------------------------------------------------


def _client_secret_gateway(kqlgate_bin, engine, cluster_url: str, idp, lifetime: int, work, name: str):
    """A kqlgate with one Basic-auth tenant (contoso) on a client-secret cluster identity of its
    own at `idp`, registered there (secret and token lifetime) before kqlgate asks for a token.
    Returns (kqlgate, Basic auth for contoso, client_id, secret)."""
    client_id = f"{name}-{uuid.uuid4()}"
    secret = "secret-" + uuid.uuid4().hex
    idp.admin(clients={client_id: secret}, client_lifetimes={client_id: lifetime})
    key, phc = new_key(kqlgate_bin)
    port = free_port()
    lines = [
        "[server]", f'listen = "127.0.0.1:{port}"', "",
        "[clusters.main]", f'url = "{cluster_url}"',
        *aad_identity_toml(idp.url, client_id, secret_env="KQLGATE_E2E_SECRET"),
        "timeout_seconds = 60", "enforce_request_properties = false", "",
        "[[tenants]]", 'id = "contoso"', f'key_hashes = ["{phc}"]', 'cluster = "main"',
        f'database = "{engine.guid("contoso")}"', "",
    ]
    gw = launch_kqlgate(kqlgate_bin, work, name, "\n".join(lines), port, {**os.environ, "KQLGATE_E2E_SECRET": secret})
    return gw, requests.auth.HTTPBasicAuth("contoso", key), client_id, secret


def _print_query(gw, auth, marker: str = "ok") -> requests.Response:
    return requests.post(gw.url + "/v1/rest/query", json={"db": "", "csl": f'print m = "{marker}"'}, auth=auth,
                         timeout=30)


REFRESH_LIFETIME = 4  # seconds
REFRESH_DURATION = 20.0
REFRESH_WORKERS = 4


def test_cluster_token_refreshed_ahead_of_expiry(kqlgate_bin, engine, shim, idp, tmp_path):
    gw, auth, client_id, secret = _client_secret_gateway(kqlgate_bin, engine, shim.url, idp, REFRESH_LIFETIME,
                                                         tmp_path, "kqlgate-refresh")
    try:
        warm = _print_query(gw, auth)
        assert warm.status_code == 200, warm.text
        run = f"r{uuid.uuid4().hex}"
        sent: dict[str, float] = {}
        failures: list[str] = []
        lock = threading.Lock()
        before = idp.token_requests(client_id)
        started = time.monotonic()

        def worker(n: int):
            session = requests.Session()
            session.auth = auth
            i = 0
            while time.monotonic() - started < REFRESH_DURATION:
                marker = f"{run}x{n}x{i}"
                i += 1
                at = time.time()
                try:
                    resp = session.post(gw.url + "/v1/rest/query", json={"db": "", "csl": f'print m = "{marker}"'},
                                        timeout=30)
                    ok = resp.status_code == 200 and primary_rows(resp) == [{"m": marker}]
                    detail = f"{resp.status_code} {resp.text[:300]}"
                except requests.RequestException as exc:
                    ok, detail = False, repr(exc)
                with lock:
                    sent[marker] = at
                    if not ok:
                        failures.append(f"{marker} at {at:.2f}: {detail}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(REFRESH_WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        fetched = idp.token_requests(client_id) - before

        assert failures == [], f"{len(failures)} of {len(sent)} requests failed: {failures[:5]}"
        expiries = elapsed / REFRESH_LIFETIME
        print(f"\nAAD refresh: {len(sent)} requests in {elapsed:.1f}s with a {REFRESH_LIFETIME}s token: "
              f"{fetched} token requests for kqlgate's client ({fetched / expiries:.2f} per expiry, "
              f"{fetched / elapsed * 3600:.0f}/hour extrapolated)")
        assert expiries - 1 <= fetched <= expiries + 2, (fetched, expiries)

        # Every request reached the cluster with one of kqlgate's tokens, unexpired when the request
        # was sent (JWT exp has a 1-second granularity), and the token did rotate.
        tokens, least_left = set(), float("inf")
        upstream = [r for r in all_records(shim) if run.encode() in r.body]
        assert len(upstream) == len(sent), (len(upstream), len(sent))
        for rec in upstream:
            marker = json.loads(rec.body)["csl"].split('"')[1]
            claims = verified_upstream_claims(idp, shim, rec.headers["authorization"], verify_exp=False)
            assert claims["appid"] == client_id, claims
            least_left = min(least_left, claims["exp"] - sent[marker])
            tokens.add(rec.headers["authorization"])
        print(f"AAD refresh: {len(tokens)} distinct upstream tokens; least lifetime left at send {least_left:.2f}s")
        assert least_left > -1.0, f"a token {-least_left:.2f}s past its exp was sent upstream"
        assert len(tokens) >= fetched, (len(tokens), fetched)
        log = gw.log()
        assert secret not in log
        assert log.count("cluster token acquired") >= fetched + 1, log[-3000:]
    finally:
        gw.stop()


OUTAGE_LIFETIME = 3  # seconds


@pytest.mark.parametrize("outage", ["stopped", "erroring"])
def test_idp_outage_is_502_then_recovers(kqlgate_bin, engine, tmp_path, outage):
    """An IdP of the test's own: stopped (connection refused), or answering 503."""
    own = start_idp(tmp_path, f"idp-{outage}")
    gw = None
    try:
        gw, auth, client_id, secret = _client_secret_gateway(kqlgate_bin, engine, engine.url, own, OUTAGE_LIFETIME,
                                                             tmp_path, f"kqlgate-{outage}")
        assert _print_query(gw, auth).status_code == 200
        if outage == "stopped":
            own.stop()
        else:
            own.admin(token_endpoint="down")
        went_down = time.monotonic()
        statuses = []
        while True:
            resp = _print_query(gw, auth)
            statuses.append(resp.status_code)
            if resp.status_code != 200 or time.monotonic() - went_down > OUTAGE_LIFETIME + 10:
                break
            time.sleep(0.1)
        failed_after = time.monotonic() - went_down
        err = assert_envelope(resp, 502, "BadGateway", message_contains="the cluster credential is unavailable")
        assert set(statuses[:-1]) <= {200}, statuses
        assert failed_after <= OUTAGE_LIFETIME + 1.5, f"still 200 {failed_after:.1f}s into the outage"
        for leak in (secret, own.url, str(own.port), "temporarily_unavailable"):
            assert leak not in resp.text, f"{leak!r} in {resp.text}"
        # Failing fast: no wait on the IdP per request.
        t0 = time.monotonic()
        again = _print_query(gw, auth)
        assert again.status_code == 502 and time.monotonic() - t0 < 1.0, (again.status_code, time.monotonic() - t0)

        if outage == "stopped":
            # Same port; the new process gets the client's registration from its environment.
            own.start(env={"IDP_CLIENTS": json.dumps({client_id: secret}), "IDP_TOKEN_LIFETIME": str(OUTAGE_LIFETIME)})
        else:
            own.admin(token_endpoint="up")
        # A stopped IdP comes back as a new process, counting from 0; an erroring one keeps its count.
        asked_before = 0 if outage == "stopped" else own.token_requests(client_id)
        came_back = time.monotonic()
        while True:
            resp = _print_query(gw, auth)
            if resp.status_code == 200 or time.monotonic() - came_back > 45:
                break
            assert_envelope(resp, 502, "BadGateway", message_contains="the cluster credential is unavailable")
            time.sleep(0.2)
        recovered_after = time.monotonic() - came_back
        assert resp.status_code == 200, f"no recovery within 45s: {resp.status_code} {resp.text}"
        print(f"\nAAD outage ({outage}): 502 {failed_after:.1f}s after the IdP went away "
              f"({err['@message']!r}); recovered {recovered_after:.1f}s after it came back")
        assert own.token_requests(client_id) > asked_before  # the recovery came from this IdP
        log = gw.log()
        assert "cluster token request failed" in log, log[-3000:]
        assert secret not in log
    finally:
        if gw is not None:
            gw.stop()
        own.stop()
