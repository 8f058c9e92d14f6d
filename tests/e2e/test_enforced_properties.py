"""A tenant on the default `enforce_request_properties = true`, through the recording shim to
the real engine and with the official SDK: what kqlgate forces, and what the engine does with it."""
from __future__ import annotations

import json
import uuid

import requests
from azure.kusto.data import ClientRequestProperties, KustoClient, KustoConnectionStringBuilder

FORCED_TRUE = (
    "request_remote_entities_disabled",
    "request_callout_disabled",
    "request_external_data_disabled",
    "request_external_table_disabled",
    "request_sandboxed_execution_disabled",
    "request_impersonation_disabled",
    "request_readonly",
)


def _options_seen(gateway, marker: str) -> dict:
    seen = gateway.shim.find(marker)
    assert len(seen) == 1, seen
    properties = json.loads(seen[0].body)["properties"]
    if isinstance(properties, str):  # the SDK sends a string holding JSON, and keeps that form
        properties = json.loads(properties)
    return properties["Options"]


def test_forced_options_reach_the_cluster_and_the_engine_refuses_two(gateway):
    marker = f"m{uuid.uuid4().hex}"
    body = {
        "db": gateway.guids["enforced"],
        "csl": f'print marker = "{marker}"',
        "properties": {"Options": {"request_callout_disabled": False, "request_readonly": False,
                                   "servertimeout": "00:01:00"}},
    }
    resp = gateway.post("/v2/rest/query", body, tenant="enforced")
    options = _options_seen(gateway, marker)
    for name in FORCED_TRUE:
        assert options[name] is True, (name, options)
    assert options["query_language"] == "kql"
    assert options["request_user"] == "enforced"
    assert options["request_app_name"] == options["request_description"] == "kqlgate;tenant=enforced"
    assert options["servertimeout"] == "00:01:00", "options kqlgate does not own pass through"
    # Recorded behaviour of the local engine (duckdb-kql 1.1.2): it honours most of the forced
    # switches as no-ops but refuses the two it cannot honour, naming them — a real cluster
    # takes all of them. The refusal is the engine's, passed through untouched.
    assert resp.status_code == 400, resp.text
    refused = resp.text
    assert "request_remote_entities_disabled" in refused and "request_impersonation_disabled" in refused, refused


def test_the_sdks_string_properties_are_forced_too(gateway):
    client = KustoClient(KustoConnectionStringBuilder.with_no_authentication(gateway.url))
    client._session.auth = requests.auth.HTTPBasicAuth("enforced", gateway.keys["enforced"])
    marker = f"m{uuid.uuid4().hex}"
    properties = ClientRequestProperties()
    properties.set_option("request_sandboxed_execution_disabled", False)
    result = client.execute_query(gateway.guids["enforced"], f'print marker = "{marker}"', properties)
    seen = gateway.shim.find(marker)
    assert len(seen) == 1, seen
    raw = json.loads(seen[0].body)["properties"]
    assert isinstance(raw, str), "the SDK's string form is kept"
    options = json.loads(raw)["Options"]
    for name in FORCED_TRUE:
        assert options[name] is True, (name, options)
    # Recorded behaviour of the local engine: it reads request options only from an object, so
    # the Python SDK's string form reaches it unread and the query runs (a real cluster reads
    # both forms).
    assert result.primary_results[0][0]["marker"] == marker
