"""Straight to the engine, no kqlgate: what the proxy has to protect against."""
from conftest import primary_rows, states


def test_engine_serves_each_tenant_database(engine):
    for tenant in ("contoso", "fabrikam"):
        resp = engine.post("/v1/rest/query", engine.guid(tenant), "StormEvents | project State, Reporter")
        assert resp.status_code == 200, resp.text
        rows = primary_rows(resp)
        assert {r["State"] for r in rows} == states(tenant)
        assert {r["Reporter"] for r in rows} == {tenant}


def test_engine_answers_cross_database_reference(engine):
    """Baseline for the cross-database guard: from contoso's database, the engine
    happily answers `database("<fabrikam guid>").StormEvents`. Only kqlgate can
    stop that; this test pins the engine behaviour the guard exists for."""
    fabrikam = engine.guid("fabrikam")
    resp = engine.post(
        "/v1/rest/query", engine.guid("contoso"),
        f'database("{fabrikam}").StormEvents | project State, Reporter',
    )
    assert resp.status_code == 200, resp.text
    rows = primary_rows(resp)
    assert {r["Reporter"] for r in rows} == {"fabrikam"}
    assert {r["State"] for r in rows} == states("fabrikam")


def test_engine_answers_missing_db_from_main_database(engine):
    """Why kqlgate must always fill in `db`: without one the engine answers from
    its main database (contoso's), whoever asked."""
    resp = engine.post("/v1/rest/query", None, "StormEvents | distinct Reporter")
    assert resp.status_code == 200, resp.text
    assert [r["Reporter"] for r in primary_rows(resp)] == ["contoso"]
