"""The official Python SDK (azure-kusto-data) through kqlgate."""
from __future__ import annotations

import pytest
import requests
from azure.kusto.data import ClientRequestProperties, KustoClient, KustoConnectionStringBuilder
from azure.kusto.data.exceptions import KustoApiError, KustoThrottlingError

from conftest import states


# NOTE: the SDK never sends an empty `db`: `execute_*(None or "", ...)` falls back
# to the connection string's Initial Catalog, which defaults to "NetDefaultDB".
# So these tests always name the database (GUID or alias).


def sdk_client(url: str, tenant: str, key: str) -> KustoClient:
    """A KustoClient that authenticates to kqlgate with HTTP Basic.

    The SDK has no Basic-auth mode, and its token providers can't produce one:
    `with_token_provider` wraps the callback's string as {"token_type": "Bearer", ...}
    and `_get_header_from_dict` formats "Bearer <token>".

    So: `with_no_authentication` (plain-http URLs only). Then `_aad_helper` is None,
    `KustoClient._execute` sets no Authorization header and never fetches
    /v1/rest/auth/metadata, and every request goes through the client's own
    `requests.Session` (`client._session`, created in KustoClient.__init__ and
    also used by execute_streaming_query). requests applies `Session.auth` to each
    request that has no explicit auth, so an HTTPBasicAuth there adds
    `Authorization: Basic ...` to every call. `_session` is private but has been
    the SDK's single session for years; `set_proxy` uses it the same way.
    For HTTPS kqlgate URLs, build the kcsb with `with_token_provider` instead and
    set `client._aad_helper = None` before assigning the session auth.
    """
    client = KustoClient(KustoConnectionStringBuilder.with_no_authentication(url))
    client._session.auth = requests.auth.HTTPBasicAuth(tenant, key)
    return client


@pytest.fixture
def contoso(gateway):
    client = sdk_client(gateway.url, "contoso", gateway.keys["contoso"])
    yield client
    client.close()


def _capture(client) -> list[requests.Response]:
    seen: list[requests.Response] = []
    client._session.hooks["response"].append(lambda r, *a, **k: seen.append(r))
    return seen


@pytest.mark.parametrize("db", ["guid", "Samples", "samples"])
def test_v2_query_count(gateway, contoso, db):
    database = gateway.guids["contoso"] if db == "guid" else db
    result = contoso.execute_query(database, "StormEvents | count")
    assert result.primary_results[0][0]["Count"] == len(states_rows("contoso"))


def test_v2_query_rows_are_contoso(gateway, contoso):
    result = contoso.execute_query(gateway.guids["contoso"], "StormEvents | project State, Reporter")
    rows = list(result.primary_results[0])
    assert {r["Reporter"] for r in rows} == {"contoso"}
    assert {r["State"] for r in rows} == states("contoso")


def test_fabrikam_count_differs(gateway):
    client = sdk_client(gateway.url, "fabrikam", gateway.keys["fabrikam"])
    result = client.execute_query("Fabrikam", "StormEvents | count")
    assert result.primary_results[0][0]["Count"] == len(states_rows("fabrikam"))


def test_mgmt_show_tables(gateway, contoso):
    result = contoso.execute_mgmt(gateway.guids["contoso"], ".show tables")
    rows = list(result.primary_results[0])
    assert "StormEvents" in {r["TableName"] for r in rows}, rows
    assert {r["DatabaseName"] for r in rows} == {gateway.guids["contoso"]}


def test_streaming_query_rows(gateway, contoso):
    dataset = contoso.execute_streaming_query("Samples", "StormEvents | project State, Reporter | order by State asc")
    got = []
    for table in dataset.iter_primary_results():
        for row in table:
            got.append((row["State"], row["Reporter"]))
    assert got == sorted((row[1], "contoso") for row in states_rows("contoso")), got


def test_request_properties_string_form(gateway, contoso):
    """The SDK sends `properties` as a JSON *string*; kqlgate must accept it."""
    import datetime

    crp = ClientRequestProperties()
    crp.client_request_id = "e2e.sdk;properties"
    crp.set_option("servertimeout", datetime.timedelta(minutes=1))
    result = contoso.execute_query("Samples", "StormEvents | count", crp)
    assert result.primary_results[0][0]["Count"] == len(states_rows("contoso"))


def test_foreign_database_is_kusto_api_error(gateway, contoso):
    with pytest.raises(KustoApiError) as info:
        contoso.execute_query(gateway.guids["fabrikam"], "StormEvents | count")
    assert "is not accessible to tenant" in str(info.value), str(info.value)
    api = info.value.get_api_error()
    assert api.code == "Forbidden", api
    assert api.permanent is True, api


def test_foreign_database_streaming_is_kusto_api_error(gateway, contoso):
    with pytest.raises(KustoApiError) as info:
        contoso.execute_streaming_query("Fabrikam", "StormEvents")
    assert "is not accessible to tenant" in str(info.value), str(info.value)


def test_foreign_database_mgmt_is_kusto_api_error(gateway, contoso):
    with pytest.raises(KustoApiError) as info:
        contoso.execute_mgmt(gateway.guids["fabrikam"], ".show tables")
    assert "is not accessible to tenant" in str(info.value), str(info.value)


def test_throttled_second_request(gateway):
    client = sdk_client(gateway.url, "throttled-sdk", gateway.keys["throttled-sdk"])
    db = gateway.guids["throttled-sdk"]
    first = client.execute_query(db, "StormEvents | project Reporter")
    assert [r["Reporter"] for r in first.primary_results[0]] == ["throttled-sdk"]
    with pytest.raises(KustoThrottlingError):
        client.execute_query(db, "StormEvents | count")


def test_gzip_negotiated_and_results_correct(gateway, contoso):
    seen = _capture(contoso)
    result = contoso.execute_query("Samples", "StormEvents | project State, Reporter")
    assert {r["State"] for r in result.primary_results[0]} == states("contoso")
    assert seen, "response hook saw nothing"
    assert "gzip" in seen[-1].request.headers.get("Accept-Encoding", ""), seen[-1].request.headers


def test_gzip_from_upstream_reaches_sdk(gateway):
    """Tenant `gzipped` sits behind the always-gzip shim: kqlgate should pass the
    compressed stream through to the SDK (which accepts gzip), and the SDK decodes it."""
    client = sdk_client(gateway.url, "gzipped", gateway.keys["gzipped"])
    seen = _capture(client)
    db = gateway.guids["gzipped"]
    result = client.execute_query(db, "StormEvents | project State, Reporter")
    assert {r["State"] for r in result.primary_results[0]} == states("gzipped")
    assert seen[-1].headers.get("Content-Encoding", "").lower() == "gzip", dict(seen[-1].headers)
    stream = client.execute_streaming_query(db, "StormEvents | project State")
    got = {row["State"] for table in stream.iter_primary_results() for row in table}
    assert got == states("gzipped")
    mgmt = client.execute_mgmt(db, ".show tables")
    assert "StormEvents" in {r["TableName"] for r in mgmt.primary_results[0]}


def states_rows(tenant):
    import sample_data
    return sample_data.DATASETS[tenant].rows
