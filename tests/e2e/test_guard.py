"""The tenant-isolation guard (src/kql) against the real engine.

1. Would-have-leaked: each refused form the engine can answer is first sent
   straight to the engine as contoso (db = contoso's GUID) to show it really
   returns fabrikam's data, then through kqlgate as contoso: 403 Forbidden naming
   the construct and its line:column. Forms the engine cannot answer are still
   sent through kqlgate (403), and the engine's failure is pinned so that a newer
   engine that answers one moves it to the first list.
2. Refused text never reaches the cluster (tenant `gzipped`, behind the recording shim).
3. Legitimate queries and viewer commands still work, through the legacy client
   (/v1/rest/query, /v1/rest/mgmt) and the SDK (/v2/rest/query, /v1/rest/mgmt).
4. Roles: viewer vs admin (`northwind`) on /v1/rest/mgmt.
5. restrict_statement = true (tenant `restricted`, cluster `restricted`, behind the shim).

The engine's own errors look like kqlgate's at first glance (it also says
"Forbidden" for constructs it does not support), so kqlgate's refusals are told
apart by their envelope: kqlgate's `@context` carries a clientRequestId and
serviceAlias "kqlgate"; the engine's is {"service": "duckdb-kql"}.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

import pytest
import requests
from azure.kusto.data import ClientRequestProperties
from azure.kusto.data.exceptions import KustoApiError, KustoServiceError

import sample_data
from conftest import ENTITY_GROUP, OTHER_CLUSTER, assert_envelope, primary_rows
from test_legacy_client import legacy
from test_sdk import sdk_client

C = sample_data.DATASETS["contoso"].guid
F = sample_data.DATASETS["fabrikam"].guid
NW = sample_data.DATASETS["northwind"].guid
R = sample_data.DATASETS["restricted"].guid

OUTSIDE = "names a database outside this tenant"
NOT_LITERAL = ("takes only a literal name of this tenant's database "
               "(not a variable, parameter or expression)")
CLUSTER = "reaches another cluster, which kqlgate does not allow"
NOT_ALLOWED = "is not allowed through kqlgate (it reaches beyond this tenant's database)"
NOT_SETTABLE = "is set by kqlgate for every request; a query may not change it"
ADMIN = "requires the admin role"


def position(text: str, needle: str) -> str:
    """1-based line:column of the first `needle` in `text` (columns in characters)."""
    offset = text.index(needle)
    before = text[:offset]
    return f"{before.count(chr(10)) + 1}:{offset - (before.rfind(chr(10)) + 1) + 1}"


@dataclass(frozen=True)
class Form:
    id: str
    csl: str
    message: str  # the whole expected @message, without " at L:C"
    at: str  # the text where the refusal points (its first occurrence), for L:C
    endpoint: str = "/v1/rest/query"
    evidence: str = "fabrikam"  # what the engine's answer shows of fabrikam's data
    parameters: dict | None = None


def _q(id, csl, message, at, **kw) -> Form:
    return Form(id, csl, message, at, **kw)


# --- Forms the engine answers with fabrikam's data -------------------------

LEAKS = [
    _q("plain", f'database("{F}").StormEvents | project Reporter, State',
       f'database("{F}") {OUTSIDE}', "database("),
    _q("single-quoted", f"database('{F}').StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("verbatim", f"database(@'{F}').StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("verbatim-double", f'database(@"{F}").StormEvents | project Reporter',
       f'database("{F}") {OUTSIDE}', "database("),
    _q("concatenated", f"database('2222' \"{F[4:]}\").StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("upper-case", f"DATABASE('{F}').StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "DATABASE("),
    _q("spaced", f"database ( '{F}' ) .StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database"),
    _q("comment-inside", f"database(// hidden\n'{F}').StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("second-line", f'StormEvents\n| union database("{F}").StormEvents\n| project Reporter',
       f'database("{F}") {OUTSIDE}', "database("),
    _q("union", f'union StormEvents, database("{F}").StormEvents | project Reporter',
       f'database("{F}") {OUTSIDE}', "database("),
    _q("join", f"StormEvents | take 1 | extend k = 1 | join kind=inner "
               f"(database('{F}').StormEvents | extend k = 1) on k | project Reporter1",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("let-bound-table", f"let t = database('{F}').StormEvents; t | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("cluster", f"cluster('{OTHER_CLUSTER}').database('{F}').StormEvents | project Reporter",
       f"cluster(…) {CLUSTER}", "cluster("),
    # The tenant's own GUID on another cluster is someone else's database.
    _q("cluster-own-guid", f"cluster('{OTHER_CLUSTER}').database('{C}').StormEvents | project Reporter",
       f"cluster(…) {CLUSTER}", "cluster("),
    _q("stored-entity-group", f"macro-expand {ENTITY_GROUP} as X (X.StormEvents | project Reporter)",
       f"macro-expand {ENTITY_GROUP} uses a stored entity group, which can name other databases",
       "macro-expand"),
    # A `let` of the group's name that binds no entity group: kqlgate takes any
    # let-bound name as a let-bound group, but the engine expands the STORED group.
    _q("let-shadowed-group-scalar", f"let {ENTITY_GROUP} = 1; "
                                    f"macro-expand {ENTITY_GROUP} as X (X.StormEvents | project Reporter)",
       f"macro-expand {ENTITY_GROUP} uses a stored entity group, which can name other databases",
       "macro-expand"),
    _q("let-shadowed-group-table", f"let {ENTITY_GROUP} = StormEvents; "
                                   f"macro-expand {ENTITY_GROUP} as X (X.StormEvents | project Reporter)",
       f"macro-expand {ENTITY_GROUP} uses a stored entity group, which can name other databases",
       "macro-expand"),
    _q("let-entity-group", f"let g = entity_group [database('{F}')]; "
                           "macro-expand g as X (X.StormEvents | project Reporter)",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("inline-entity-group", f"macro-expand entity_group [database('{F}')] as X (X.StormEvents | project Reporter)",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("set-readonly", f"set request_readonly = false; database('{F}').StormEvents | project Reporter",
       f"set request_readonly {NOT_SETTABLE}", "set"),
    _q("show-databases", ".show databases", f".show databases {NOT_ALLOWED}", ".show",
       endpoint="/v1/rest/mgmt", evidence=F),
    _q("show-databases-on-query", ".show databases", f".show databases {NOT_ALLOWED}", ".show", evidence=F),
    _q("show-databases-entities", ".show databases entities",
       f".show databases entities {NOT_ALLOWED}", ".show", endpoint="/v1/rest/mgmt", evidence=F),
    _q("show-entity-groups", ".show entity_groups", f".show entity_groups {NOT_ALLOWED}", ".show",
       endpoint="/v1/rest/mgmt", evidence=F),
    _q("show-tables-pipe", f".show tables | join kind=inner (database('{F}').StormEvents "
                           "| extend TableName = 'StormEvents') on TableName | project Reporter",
       f'database("{F}") {OUTSIDE}', "database(", endpoint="/v1/rest/mgmt"),
]

# --- Forms the engine cannot answer (it errors); kqlgate must refuse them anyway

UNDEMONSTRABLE = [
    _q("hex-string", f"database(h'{F}').StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("hex-string-double", f'database(H"{F}").StormEvents | project Reporter',
       f'database("{F}") {OUTSIDE}', "database("),
    _q("x-escapes", "database('\\x32\\x32" + F[2:] + "').StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("u-escapes", 'database("\\u0032\\u0032' + F[2:] + '").StormEvents | project Reporter',
       f'database("{F}") {OUTSIDE}', "database("),
    _q("multiline-string", f"database(```{F}```).StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("bracketed-name", f"['database'](\"{F}\").StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "['database']"),
    _q("alias-of-other-tenant", 'database("Fabrikam").StormEvents | project Reporter',
       f'database("Fabrikam") {OUTSIDE}', "database("),
    _q("let-variable", f'let d = "{F}"; database(d).StormEvents | project Reporter',
       f"database(…) {NOT_LITERAL}", "database("),
    _q("function-parameter", "let f = (d:string) { database(d).StormEvents }; "
                             f'f("{F}") | project Reporter',
       f"database(…) {NOT_LITERAL}", "database("),
    _q("query-parameter", "declare query_parameters(d:string); database(d).StormEvents | project Reporter",
       f"database(…) {NOT_LITERAL}", "database(", parameters={"d": F}),
    _q("expression", "database(strcat('2222', '" + F[4:] + "')).StormEvents | project Reporter",
       f"database(…) {NOT_LITERAL}", "database("),
    _q("alias-database", f"alias database x = cluster('{OTHER_CLUSTER}').database('{F}'); "
                         "database('x').StormEvents | project Reporter",
       "alias database is not allowed: it names another database or cluster", "alias"),
    _q("own-restrict", f"restrict access to (database('{F}').*); database('{F}').StormEvents",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("second-statement", f"print 1; database('{F}').StormEvents | project Reporter",
       f'database("{F}") {OUTSIDE}', "database("),
    _q("set-remote-entities", f"set request_remote_entities_disabled = false; "
                              f"database('{F}').StormEvents | project Reporter",
       f"set request_remote_entities_disabled {NOT_SETTABLE}", "set"),
    _q("externaldata", "externaldata (x:string) [@'https://example.com/data.csv']",
       "externaldata reads external storage, which kqlgate does not allow", "externaldata"),
    _q("http-request", "evaluate http_request('http://127.0.0.1:1/')",
       "evaluate http_request calls a service outside the cluster, which kqlgate does not allow",
       "http_request"),
    _q("entity-group-function", f"entity_group('{ENTITY_GROUP}')",
       "entity_group(…) names a stored entity group, which can reach other databases", "entity_group"),
    _q("show-database-schema", f".show database ['{F}'] schema", f'database "{F}" {OUTSIDE}', "['",
       endpoint="/v1/rest/mgmt"),
    _q("show-database-schema-json", f".show database ['{F}'] schema as json", f'database "{F}" {OUTSIDE}', "['",
       endpoint="/v1/rest/mgmt"),
    _q("show-table-of-other-db", f".show table ['{F}'].StormEvents schema as json",
       f'database "{F}" {OUTSIDE}', "['", endpoint="/v1/rest/mgmt"),
    # Would copy fabrikam's rows into contoso's database; the e2e engine runs without --allow-write.
    _q("set-or-append", f".set-or-append Stolen <| database('{F}').StormEvents",
       f".set-or-append Stolen < {NOT_ALLOWED}", ".set", endpoint="/v1/rest/mgmt"),
]


def _ids(forms):
    return [f.id for f in forms]


def _body(form: Form, db: str, csl: str | None = None) -> dict:
    body = {"db": db, "csl": form.csl if csl is None else csl}
    if form.parameters is not None:
        body["properties"] = {"Parameters": form.parameters}
    return body


def post_engine(engine, form: Form) -> requests.Response:
    return requests.post(engine.url + form.endpoint, json=_body(form, C), timeout=60)


def assert_refused(resp: requests.Response, form: Form, csl: str | None = None) -> dict:
    """kqlgate's own 403 (not the engine's), naming the construct and where it is."""
    err = assert_envelope(resp, 403, "Forbidden")
    assert err["@context"].get("serviceAlias") == "kqlgate", err
    expected = f"{form.message} at {position(csl or form.csl, form.at)}"
    assert err["@message"] == expected, f"\n got: {err['@message']!r}\nwant: {expected!r}"
    assert re.search(r" at \d+:\d+$", err["@message"]), err["@message"]
    return err


def assert_engine_error(resp: requests.Response, fragment: str) -> dict:
    """The engine's own error, passed through by kqlgate unchanged (not a kqlgate refusal)."""
    assert resp.status_code == 400, f"expected the engine's 400, got {resp.status_code}: {resp.text[:1500]}"
    err = resp.json()["error"]
    assert err["@context"] == {"service": "duckdb-kql"}, f"not the engine's error: {err}"
    assert fragment in err["@message"], f"@message lacks {fragment!r}: {err['@message']!r}"
    return err


def _values(resp: requests.Response) -> list[str]:
    return [str(v) for row in primary_rows(resp) for v in row.values()]


# ---------------------------------------------------------------------------
# 1. Would have leaked
# ---------------------------------------------------------------------------


def test_engine_is_the_one_the_forms_expect(engine):
    """The leak tests need an engine that answers contoso from its own database."""
    resp = requests.post(engine.url + "/v1/rest/query", json={"db": C, "csl": "StormEvents | distinct Reporter"},
                         timeout=60)
    assert resp.status_code == 200, resp.text
    assert _values(resp) == ["contoso"]


@pytest.mark.parametrize("form", LEAKS, ids=_ids(LEAKS))
def test_would_have_leaked(engine, gateway, form):
    direct = post_engine(engine, form)
    assert direct.status_code == 200, f"engine no longer answers {form.csl!r}: {direct.text[:800]}"
    assert any(form.evidence in v for v in _values(direct)), \
        f"engine answered {form.csl!r} without fabrikam's data: {primary_rows(direct)}"

    resp = gateway.post(form.endpoint, _body(form, C))
    err = assert_refused(resp, form)
    assert "fabrikam" not in resp.text and "MAINE" not in resp.text, err


@pytest.mark.parametrize("form", [f for f in LEAKS if f.endpoint == "/v1/rest/query"],
                         ids=_ids([f for f in LEAKS if f.endpoint == "/v1/rest/query"]))
def test_would_have_leaked_v2(gateway, form):
    assert_refused(gateway.post("/v2/rest/query", _body(form, "Samples")), form)


@pytest.mark.parametrize("form", UNDEMONSTRABLE, ids=_ids(UNDEMONSTRABLE))
def test_refused_though_engine_cannot_demonstrate(engine, gateway, form):
    # The engine cannot show this leak (it does not support the construct, or the
    # write is off); if it ever answers with fabrikam's data, move the form to LEAKS.
    direct = post_engine(engine, form)
    assert direct.status_code != 200 or not any("fabrikam" in v or F in v for v in _values(direct)), \
        f"the engine now demonstrates this leak; move {form.id} to LEAKS: {direct.text[:500]}"
    assert_refused(gateway.post(form.endpoint, _body(form, C)), form)


def test_sdk_sees_the_refusal(gateway):
    client = sdk_client(gateway.url, "contoso", gateway.keys["contoso"])
    try:
        with pytest.raises(KustoApiError) as info:
            client.execute_query("Samples", f'StormEvents\n| union database("{F}").StormEvents')
        api = info.value.get_api_error()
        assert api.code == "Forbidden", api
        assert f'database("{F}") {OUTSIDE} at 2:9' in str(info.value), str(info.value)
        with pytest.raises(KustoApiError) as info:
            client.execute_mgmt("Samples", ".show databases")
        assert f".show databases {NOT_ALLOWED} at 1:1" in str(info.value), str(info.value)
    finally:
        client.close()


# ---------------------------------------------------------------------------
# 2. Refused text never reaches the cluster
# ---------------------------------------------------------------------------

SHIM_FORMS = LEAKS + UNDEMONSTRABLE


@pytest.mark.parametrize("form", SHIM_FORMS, ids=_ids(SHIM_FORMS))
def test_refused_text_never_reaches_upstream(gateway, form):
    marker = f"m{uuid.uuid4().hex}"
    csl = f"{form.csl}\n// {marker}"
    resp = gateway.post(form.endpoint, _body(form, "", csl), tenant="gzipped")
    assert_refused(resp, form, csl)
    assert gateway.shim.find(marker) == [], f"refused text reached upstream: {gateway.shim.find(marker)}"
    # The recording works: an allowed text with the same marker is recorded, once.
    ok = gateway.post("/v1/rest/query", {"db": "", "csl": f'print m = "{marker}"'}, tenant="gzipped")
    assert ok.status_code == 200, ok.text
    seen = gateway.shim.find(marker)
    assert len(seen) == 1 and json.loads(seen[0].body)["csl"] == f'print m = "{marker}"', seen


# ---------------------------------------------------------------------------
# 3. Legitimate queries still work, unchanged
# ---------------------------------------------------------------------------

LEGIT = [
    ("summarize", "StormEvents | summarize n = count() by Reporter", [{"Reporter": "contoso", "n": 6}]),
    ("summarize-where", "StormEvents | summarize n = count() by State | where n > 1", [{"State": "FLORIDA", "n": 2}]),
    ("join", "StormEvents | summarize n = count() by State | join kind=inner "
             "(StormEvents | summarize d = sum(DamageProperty) by State) on State "
             "| project State, n, d | where State == 'TEXAS'", [{"State": "TEXAS", "n": 1, "d": 250000}]),
    ("union", "union StormEvents, (StormEvents | where State == 'TEXAS') | summarize n = count() by Reporter",
     [{"Reporter": "contoso", "n": 7}]),
    ("let", "let threshold = 10000; StormEvents | where DamageProperty > threshold | project State",
     [{"State": "KANSAS"}, {"State": "OHIO"}, {"State": "TEXAS"}]),
    ("materialize", "let m = materialize(StormEvents | summarize n = count() by State); "
                    "m | join kind=inner (m) on State | summarize k = count()", [{"k": 5}]),
    ("render", "StormEvents | summarize n = count() by EventType | where n > 1 | render columnchart",
     [{"EventType": "Tornado", "n": 2}]),
    ("let-function", "let f = (s:string) { strcat('x-', s) }; StormEvents | where State == 'OHIO' "
                     "| project v = f(State)", [{"v": "x-OHIO"}]),
    ("stored-function", "TexasEvents() | project Reporter, State", [{"Reporter": "contoso", "State": "TEXAS"}]),
    ("stored-function-arg", "EventsIn('OHIO') | project Reporter, EventType",
     [{"Reporter": "contoso", "EventType": "Flood"}]),
    ("set-allowed-option", "set query_now = datetime(2020-01-01); StormEvents | summarize n = count() by Reporter",
     [{"Reporter": "contoso", "n": 6}]),
    ("string-mentions-database", f"StormEvents | where State != 'database(\"{F}\").StormEvents' "
                                 "| summarize n = count() by Reporter", [{"Reporter": "contoso", "n": 6}]),
    ("print-mentions-database", f"print s = 'database(\"{F}\").StormEvents'",
     [{"s": f'database("{F}").StormEvents'}]),
    ("comment-mentions-database", f"StormEvents // database(\"{F}\").StormEvents\n"
                                  "| summarize n = count() by Reporter", [{"Reporter": "contoso", "n": 6}]),
    ("comment-mentions-cluster", f"// cluster(\"{OTHER_CLUSTER}\").database(\"{F}\").StormEvents\n"
                                 "StormEvents | summarize n = count() by Reporter", [{"Reporter": "contoso", "n": 6}]),
    ("own-guid", f'database("{C}").StormEvents | summarize n = count() by Reporter',
     [{"Reporter": "contoso", "n": 6}]),
    ("alias", 'database("Samples").StormEvents | summarize n = count() by Reporter',
     [{"Reporter": "contoso", "n": 6}]),
    ("alias-lower-verbatim", "database(@'samples').StormEvents | summarize n = count() by Reporter",
     [{"Reporter": "contoso", "n": 6}]),
    ("alias-concatenated", "database('Sam' 'ples').StormEvents | summarize n = count() by Reporter",
     [{"Reporter": "contoso", "n": 6}]),
    ("union-alias", "union StormEvents, database('Samples').StormEvents | summarize n = count() by Reporter",
     [{"Reporter": "contoso", "n": 12}]),
]

LEGIT_COMMANDS = [
    ("show-tables", ".show tables | project TableName, DatabaseName",
     [{"TableName": "StormEvents", "DatabaseName": C}]),
    ("show-tables-filtered", ".show tables | where TableName == 'StormEvents' | project TableName",
     [{"TableName": "StormEvents"}]),
    ("show-functions", ".show functions | project Name", [{"Name": "EventsIn"}, {"Name": "TexasEvents"}]),
    ("show-materialized-views", ".show materialized-views", []),
]


def _sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.mark.parametrize("csl,expected", [c[1:] for c in LEGIT], ids=[c[0] for c in LEGIT])
def test_legit_query_legacy_client(gateway, csl, expected):
    res, rows = legacy(gateway, "contoso", gateway.keys["contoso"], "Samples", csl)
    assert res.returncode == 0, f"{csl!r}: {res.stderr}"
    assert _sorted(rows) == _sorted(expected), rows


@pytest.mark.parametrize("csl,expected", [c[1:] for c in LEGIT], ids=[c[0] for c in LEGIT])
def test_legit_query_sdk(gateway, csl, expected):
    client = sdk_client(gateway.url, "contoso", gateway.keys["contoso"])
    try:
        result = client.execute_query(C, csl)
        rows = [row.to_dict() for row in result.primary_results[0]]
    finally:
        client.close()
    assert _sorted(rows) == _sorted(expected), rows


@pytest.mark.parametrize("endpoint", ["/v1/rest/mgmt", "/v1/rest/query"])
@pytest.mark.parametrize("csl,expected", [c[1:] for c in LEGIT_COMMANDS], ids=[c[0] for c in LEGIT_COMMANDS])
def test_viewer_command_legacy_client(gateway, csl, expected, endpoint):
    res, rows = legacy(gateway, "contoso", gateway.keys["contoso"], "Samples", csl, endpoint)
    assert res.returncode == 0, f"{csl!r} on {endpoint}: {res.stderr}"
    assert _sorted(rows) == _sorted(expected), rows


@pytest.mark.parametrize("csl,expected", [c[1:] for c in LEGIT_COMMANDS], ids=[c[0] for c in LEGIT_COMMANDS])
def test_viewer_command_sdk(gateway, csl, expected):
    client = sdk_client(gateway.url, "contoso", gateway.keys["contoso"])
    try:
        rows = [row.to_dict() for row in client.execute_mgmt("Samples", csl).primary_results[0]]
    finally:
        client.close()
    assert _sorted(rows) == _sorted(expected), rows


@pytest.mark.parametrize("csl", [".show table StormEvents schema as json", ".show database Samples schema"])
def test_viewer_schema_commands_are_forwarded(gateway, csl):
    """The engine does not implement these; kqlgate lets them through (the alias
    rewritten to the GUID), and the engine's own error comes back."""
    expected = csl.replace("Samples", f'["{C}"]')
    err = assert_engine_error(gateway.post("/v1/rest/mgmt", {"db": "Samples", "csl": csl}), "unsupported KQL construct")
    assert expected in err["@message"], err["@message"]
    client = sdk_client(gateway.url, "contoso", gateway.keys["contoso"])
    try:
        with pytest.raises(KustoServiceError) as info:
            client.execute_mgmt(C, csl)
        assert "unsupported KQL construct" in str(info.value), str(info.value)
    finally:
        client.close()


def test_alias_rewrite_is_what_makes_it_work(engine, gateway):
    """Straight to the engine, `database("Samples")` is no database at all; through
    kqlgate it is contoso's, because kqlgate forwarded the GUID."""
    csl = 'database("Samples").StormEvents | project Reporter, State'
    direct = engine.post("/v1/rest/query", C, csl)
    assert direct.status_code == 400 and "Samples" in direct.text, direct.text[:500]
    resp = gateway.post("/v1/rest/query", {"db": "", "csl": csl})
    assert resp.status_code == 200, resp.text
    rows = primary_rows(resp)
    assert {r["Reporter"] for r in rows} == {"contoso"}
    assert {r["State"] for r in rows} == {row[1] for row in sample_data.DATASETS["contoso"].rows}


def test_own_guid_forwarded_unchanged(gateway):
    """The forwarded text (seen by the shim): the tenant's own GUID passes unchanged,
    and nothing else in the text (a comment naming another database) is touched."""
    own = gateway.guids["gzipped"]
    marker = f"m{uuid.uuid4().hex}"
    csl = f"database('{own}').StormEvents // {marker} database(\"{F}\")\n| count"
    resp = gateway.post("/v1/rest/query", {"db": "", "csl": csl}, tenant="gzipped")
    assert resp.status_code == 200, resp.text
    assert primary_rows(resp) == [{"Count": 2}]
    seen = gateway.shim.find(marker)
    assert len(seen) == 1 and json.loads(seen[0].body)["csl"] == csl, seen


def test_query_parameters_pass_through(gateway):
    """declare query_parameters with properties.Parameters (object form; this engine
    does not read the string form the SDK sends, so this is raw HTTP)."""
    body = {"db": "Samples", "csl": "declare query_parameters(s:string); StormEvents | where State == s "
                                     "| project Reporter, State",
            "properties": {"Parameters": {"s": "TEXAS"}}}
    resp = gateway.post("/v1/rest/query", body)
    assert resp.status_code == 200, resp.text
    assert primary_rows(resp) == [{"Reporter": "contoso", "State": "TEXAS"}]


# ---------------------------------------------------------------------------
# 4. Roles
# ---------------------------------------------------------------------------

MANAGEMENT = [
    (".create table X (a:string)", ".create table"),
    (".alter table StormEvents policy caching hot = 5d", ".alter table"),
    (".alter-merge table StormEvents policy retention softdelete = 10d", ".alter-merge table"),
    (".drop table StormEvents", ".drop table"),
    (".create-or-alter function F() { StormEvents | take 1 }", ".create-or-alter function"),
]


@pytest.mark.parametrize("csl,construct", MANAGEMENT, ids=[m[1] for m in MANAGEMENT])
def test_viewer_may_not_manage(gateway, csl, construct):
    resp = gateway.post("/v1/rest/mgmt", {"db": "Samples", "csl": csl})
    err = assert_envelope(resp, 403, "Forbidden")
    assert err["@message"] == f"{construct} {ADMIN} at 1:1", err["@message"]
    assert err["@context"].get("serviceAlias") == "kqlgate", err


def test_viewer_may_not_manage_sdk(gateway):
    client = sdk_client(gateway.url, "contoso", gateway.keys["contoso"])
    try:
        with pytest.raises(KustoApiError) as info:
            client.execute_mgmt("Samples", ".create table X (a:string)")
        assert info.value.get_api_error().code == "Forbidden"
        assert f".create table {ADMIN} at 1:1" in str(info.value), str(info.value)
    finally:
        client.close()


@pytest.mark.parametrize("csl,construct", MANAGEMENT, ids=[m[1] for m in MANAGEMENT])
def test_admin_gets_past_the_guard(gateway, csl, construct):
    """The engine implements none of these, so an admin's command comes back with the
    engine's own error naming the command: proof kqlgate forwarded it."""
    err = assert_engine_error(gateway.post("/v1/rest/mgmt", {"db": "", "csl": csl}, tenant="northwind"),
                              "unsupported KQL construct")
    assert csl in err["@message"], err["@message"]


def test_admin_alias_in_command_is_rewritten(gateway):
    err = assert_engine_error(
        gateway.post("/v1/rest/mgmt", {"db": "", "csl": ".alter database Northwind policy caching hot = 1d"},
                     tenant="northwind"),
        "unsupported KQL construct")
    assert f'.alter database ["{NW}"] policy caching hot = 1d' in err["@message"], err["@message"]


def test_admin_commands_on_query_endpoint_are_a_viewers(gateway):
    resp = gateway.post("/v1/rest/query", {"db": "", "csl": ".create table X (a:string)"}, tenant="northwind")
    err = assert_envelope(resp, 403, "Forbidden")
    assert err["@message"] == f".create table {ADMIN} at 1:1", err["@message"]


@pytest.mark.parametrize("csl,message", [
    (".show databases", f".show databases {NOT_ALLOWED} at 1:1"),
    (f".alter database ['{F}'] policy caching hot = 1d", f'database "{F}" {OUTSIDE} at 1:17'),
    (f".create table ['{F}'].X (a:string)", f'database "{F}" {OUTSIDE} at 1:15'),
    (f".create-or-alter function G() {{ database('{F}').StormEvents }}", f'database("{F}") {OUTSIDE} at 1:33'),
    (".alter table StormEvents policy callout '[]'",
     ".alter table StormEvents policy callout may change only the caching and retention policies at 1:1"),
])
def test_admin_is_still_bounded(gateway, csl, message):
    err = assert_envelope(gateway.post("/v1/rest/mgmt", {"db": "", "csl": csl}, tenant="northwind"), 403, "Forbidden")
    assert err["@message"] == message, err["@message"]


def test_admin_queries_see_own_data(gateway):
    resp = gateway.post("/v1/rest/query", {"db": "Northwind", "csl": "StormEvents | summarize n = count() by Reporter"},
                        tenant="northwind")
    assert resp.status_code == 200, resp.text
    assert primary_rows(resp) == [{"Reporter": "northwind", "n": 1}]


# ---------------------------------------------------------------------------
# 5. restrict_statement = true
# ---------------------------------------------------------------------------

RESTRICT = f'restrict access to (database("{R}").*);\n'


def _forwarded_csl(gateway, marker: str) -> str:
    seen = gateway.shim.find(marker)
    assert len(seen) == 1, seen
    return json.loads(seen[0].body)["csl"]


@pytest.mark.parametrize("endpoint", ["/v1/rest/query", "/v2/rest/query"])
def test_restrict_statement_is_prefixed_and_the_engine_rejects_it(gateway, endpoint):
    """kqlgate prefixes the query with Kusto's `restrict access to`; duckdb-kql 1.1.2
    does not implement that statement and refuses the whole query (its error, not
    kqlgate's). Against this engine a restrict_statement cluster answers no query."""
    marker = f"m{uuid.uuid4().hex}"
    csl = f'StormEvents | where Reporter != "{marker}" | count'
    resp = gateway.post(endpoint, {"db": "", "csl": csl}, tenant="restricted")
    assert_engine_error(resp, "unsupported KQL construct 'restrict'")
    assert _forwarded_csl(gateway, marker) == RESTRICT + csl


def test_alias_rewrite_as_forwarded(gateway):
    """What the cluster receives for an alias: the GUID, in a double-quoted literal,
    and the rest of the text as sent (here behind the restrict prefix)."""
    marker = f"m{uuid.uuid4().hex}"
    csl = f"database(@'RESTRICTED').StormEvents // {marker}\n| union database('Rest' \"ricted\").StormEvents"
    resp = gateway.post("/v1/rest/query", {"db": "", "csl": csl}, tenant="restricted")
    assert_engine_error(resp, "unsupported KQL construct 'restrict'")
    expected = (f'database("{R}").StormEvents // {marker}\n| union database("{R}").StormEvents')
    assert _forwarded_csl(gateway, marker) == RESTRICT + expected


def test_restrict_statement_goes_after_set(gateway):
    marker = f"m{uuid.uuid4().hex}"
    head = "set query_now = datetime(2020-01-01);\n"
    tail = f'StormEvents | where Reporter != "{marker}" | count'
    resp = gateway.post("/v1/rest/query", {"db": "", "csl": head + tail}, tenant="restricted")
    assert_engine_error(resp, "unsupported KQL construct 'restrict'")
    assert _forwarded_csl(gateway, marker) == head + RESTRICT + tail


def test_restrict_statement_not_added_to_commands(gateway):
    marker = f"m{uuid.uuid4().hex}"
    csl = f'.show tables | where TableName != "{marker}" | project TableName'
    resp = gateway.post("/v1/rest/mgmt", {"db": "", "csl": csl}, tenant="restricted")
    assert resp.status_code == 200, resp.text
    assert primary_rows(resp) == [{"TableName": "StormEvents"}]
    assert _forwarded_csl(gateway, marker) == csl


def test_restrict_statement_tenant_is_still_guarded(gateway):
    marker = f"m{uuid.uuid4().hex}"
    csl = f'database("{F}").StormEvents // {marker}'
    err = assert_envelope(gateway.post("/v1/rest/query", {"db": "", "csl": csl}, tenant="restricted"), 403, "Forbidden")
    assert err["@message"] == f'database("{F}") {OUTSIDE} at 1:1', err["@message"]
    assert gateway.shim.find(marker) == []
