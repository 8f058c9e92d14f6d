"""The legacy Basic-auth client (/work/shared/examples/legacy_client.py) and raw HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import requests

from conftest import LEGACY_CLIENT, assert_envelope, basic, primary_rows, states

QUERY = "StormEvents | project State, Reporter"


def legacy(gateway, tenant: str, key: str, db: str, csl: str = QUERY, endpoint: str | None = None):
    assert LEGACY_CLIENT.is_file(), f"legacy client missing at {LEGACY_CLIENT} (set KQLGATE_LEGACY_CLIENT)"
    env = {**os.environ, "KQLGATE_URL": gateway.url, "KQLGATE_TENANT": tenant, "KQLGATE_KEY": key, "KQLGATE_DB": db}
    args = [sys.executable, str(LEGACY_CLIENT), csl] + ([endpoint] if endpoint else [])
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()] if res.returncode == 0 else []
    return res, rows


def assert_tenant_rows(res, rows, tenant):
    assert res.returncode == 0, f"exit {res.returncode}; stderr: {res.stderr}"
    assert rows, f"no rows; stdout {res.stdout!r}"
    assert {r["Reporter"] for r in rows} == {tenant}, rows
    assert {r["State"] for r in rows} == states(tenant), rows


def test_contoso_gets_its_rows(gateway):
    res, rows = legacy(gateway, "contoso", gateway.keys["contoso"], gateway.guids["contoso"])
    assert_tenant_rows(res, rows, "contoso")


@pytest.mark.parametrize("tenant,db", [
    ("contoso", "Samples"),
    ("contoso", "samples"),  # aliases are case-insensitive
    ("contoso", "SAMPLES"),
    ("fabrikam", "Fabrikam"),
    ("fabrikam", "fabrikam"),
])
def test_alias_selects_own_database(gateway, tenant, db):
    res, rows = legacy(gateway, tenant, gateway.keys[tenant], db)
    assert_tenant_rows(res, rows, tenant)


@pytest.mark.parametrize("tenant", ["contoso", "fabrikam"])
def test_guid_selects_own_database(gateway, tenant):
    res, rows = legacy(gateway, tenant, gateway.keys[tenant], gateway.guids[tenant])
    assert_tenant_rows(res, rows, tenant)


@pytest.mark.parametrize("tenant", ["contoso", "fabrikam"])
def test_empty_db_means_own_database(gateway, tenant):
    # fabrikam is the telling case: forwarded without a db, the engine would
    # answer from its main database, which is contoso's.
    res, rows = legacy(gateway, tenant, gateway.keys[tenant], "")
    assert_tenant_rows(res, rows, tenant)


def test_second_key_with_python_argon2_hash_works(gateway):
    """contoso's second hash was made by argon2-cffi (as config/demo.toml's are)."""
    res, rows = legacy(gateway, "contoso", gateway.extra_keys["contoso"], "")
    assert_tenant_rows(res, rows, "contoso")


@pytest.mark.parametrize("endpoint,csl", [
    ("/v2/rest/query", QUERY),
    ("/v1/rest/mgmt", ".show tables"),
])
def test_other_endpoints(gateway, endpoint, csl):
    res, rows = legacy(gateway, "contoso", gateway.keys["contoso"], "Samples", csl, endpoint)
    assert res.returncode == 0, res.stderr
    if endpoint == "/v1/rest/mgmt":
        assert "StormEvents" in {r["TableName"] for r in rows}, rows
        assert {r["DatabaseName"] for r in rows} == {gateway.guids["contoso"]}, rows
    else:
        assert {r["Reporter"] for r in rows} == {"contoso"}, rows


def test_wrong_key_is_401(gateway):
    res, rows = legacy(gateway, "contoso", gateway.keys["contoso"] + "x", "")
    assert res.returncode == 1, res.stdout
    assert res.stderr.startswith("401"), res.stderr
    assert "Unauthorized" in res.stderr, res.stderr


def test_other_tenants_key_is_401(gateway):
    res, _ = legacy(gateway, "contoso", gateway.keys["fabrikam"], "")
    assert res.returncode == 1 and res.stderr.startswith("401"), res.stderr


def test_unknown_tenant_is_401(gateway):
    res, _ = legacy(gateway, "nosuchtenant", gateway.keys["contoso"], "")
    assert res.returncode == 1, res.stdout
    assert res.stderr.startswith("401"), res.stderr


@pytest.mark.parametrize("db", [
    "22222222-2222-2222-2222-222222222222",  # fabrikam's GUID
    "Fabrikam",  # fabrikam's alias
    "NotADatabase",
    "11111111-1111-1111-1111-11111111111",  # one digit short of contoso's
])
def test_foreign_database_is_403(gateway, db):
    res, _ = legacy(gateway, "contoso", gateway.keys["contoso"], db)
    assert res.returncode == 1, f"exit 0 for db={db!r}: {res.stdout}"
    assert res.stderr.startswith("403"), res.stderr
    assert "is not accessible to tenant" in res.stderr, res.stderr
    assert "MAINE" not in res.stderr


# ---------------------------------------------------------------------------
# Raw HTTP
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"db": ""},
    {"db": "", "csl": ""},
    {"db": "", "csl": 42},
    {"db": "", "csl": None},
    {"db": "", "csl": ["StormEvents"]},
])
def test_missing_or_bad_csl_is_400(gateway, body):
    resp = gateway.post("/v1/rest/query", body)
    err = assert_envelope(resp, 400, "BadRequest")
    assert "csl" in err["@message"], err


def test_403_envelope_and_request_id_echo(gateway):
    request_id = f"e2e.test;{uuid.uuid4()}"
    resp = gateway.post("/v2/rest/query", {"db": gateway.guids["fabrikam"], "csl": "StormEvents"},
                        headers={"x-ms-client-request-id": request_id})
    err = assert_envelope(resp, 403, "Forbidden", message_contains="is not accessible to tenant")
    assert resp.headers.get("x-ms-client-request-id") == request_id, dict(resp.headers)
    assert err["@context"]["clientRequestId"] == request_id, err
    assert err["@permanent"] is True, err


def test_400_echoes_request_id(gateway):
    request_id = f"e2e.test;{uuid.uuid4()}"
    resp = gateway.post("/v1/rest/query", {"db": ""}, headers={"x-ms-client-request-id": request_id})
    err = assert_envelope(resp, 400, "BadRequest")
    assert resp.headers.get("x-ms-client-request-id") == request_id, dict(resp.headers)
    assert err["@context"]["clientRequestId"] == request_id, err


def _without_volatile(body: dict) -> dict:
    err = dict(body["error"])
    err.pop("@context", None)
    return err


def test_401_same_for_unknown_tenant_and_wrong_key(gateway):
    request = {"db": "", "csl": "print 1"}
    wrong_key = gateway.post("/v1/rest/query", request, key="definitely-not-the-key")
    unknown = gateway.post("/v1/rest/query", request, tenant="ghost", key="definitely-not-the-key")
    no_auth = requests.post(gateway.url + "/v1/rest/query", json=request, timeout=30)
    for resp in (wrong_key, unknown, no_auth):
        assert_envelope(resp, 401, "Unauthorized")
        assert resp.headers.get("WWW-Authenticate") == 'Basic realm="kqlgate"', dict(resp.headers)
    assert _without_volatile(wrong_key.json()) == _without_volatile(unknown.json())


def test_bearer_header_is_not_basic_auth(gateway):
    resp = requests.post(gateway.url + "/v1/rest/query", json={"db": "", "csl": "print 1"},
                         headers={"Authorization": "Bearer " + gateway.keys["contoso"]}, timeout=30)
    assert_envelope(resp, 401, "Unauthorized")


def test_health_endpoints_need_no_credentials(gateway):
    for path in ("/healthz", "/readyz"):
        resp = requests.get(gateway.url + path, timeout=10)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)


def test_throttled_tenant_gets_429_with_retry_after(gateway):
    request = {"db": "", "csl": "StormEvents | project State, Reporter"}
    first = gateway.post("/v1/rest/query", request, tenant="throttled-http")
    assert first.status_code == 200, first.text
    assert {r["Reporter"] for r in primary_rows(first)} == {"throttled-http"}
    second = gateway.post("/v1/rest/query", request, tenant="throttled-http")
    assert_envelope(second, 429, "TooManyRequests")
    retry_after = second.headers.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, f"Retry-After {retry_after!r}"
    assert second.json()["error"]["@permanent"] is False, second.text
    # Another tenant is unaffected.
    assert gateway.post("/v1/rest/query", request, tenant="fabrikam").status_code == 200


def test_body_over_limit_is_413(gateway):
    from conftest import MAX_BODY_BYTES

    csl = "print 1 // " + "x" * (MAX_BODY_BYTES + 1024)
    try:
        resp = gateway.post("/v1/rest/query", {"db": "", "csl": csl})
    except requests.ConnectionError as exc:  # a 413 must be readable, not a reset
        pytest.fail(f"connection error instead of a 413 response: {exc}")
    assert_envelope(resp, 413, "PayloadTooLarge")
