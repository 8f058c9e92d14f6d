#!/usr/bin/env python3
"""Sample tenant databases for kqlgate's end-to-end tests and its demo.

One DuckDB file per tenant, named by the tenant's database GUID, each holding a
small `StormEvents` table whose rows differ per tenant (different states, a
`Reporter` column naming the tenant), so a test can tell whose rows came back.

The local Kusto engine is `duckdb-kql serve` (PyPI duckdb-kql). It serves ONE
main database and ATTACHes the others from an init script, after which every
database answers by its attach name and `database("<guid>").Table` works
across them. The main database is the first one listed (contoso): that matters
because duckdb-kql's `.show tables` lists the *connection's current* database,
not the request's `db`.

Used by tests/e2e/conftest.py (import) and scripts/demo (CLI):

    python tests/e2e/sample_data.py OUTDIR [NAME ...]

writes OUTDIR/<guid>.duckdb for each named dataset (default: contoso fabrikam)
and OUTDIR/init.sql, then prints the `duckdb-kql serve` arguments, one per line.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dataset:
    name: str  # the tenant id that owns it
    guid: str  # the Kusto database name (what kqlgate rewrites `db` to)
    rows: tuple[tuple, ...]  # StormEvents rows


COLUMNS = (
    ("StartTime", "TIMESTAMP"),
    ("State", "VARCHAR"),
    ("EventType", "VARCHAR"),
    ("InjuriesDirect", "BIGINT"),
    ("DamageProperty", "BIGINT"),
    ("Reporter", "VARCHAR"),
)


def _rows(reporter: str, items: list[tuple[str, str, str, int, int]]) -> tuple[tuple, ...]:
    return tuple((start, state, kind, injuries, damage, reporter) for start, state, kind, injuries, damage in items)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "contoso",
            "11111111-1111-1111-1111-111111111111",
            _rows(
                "contoso",
                [
                    ("2007-01-01 08:00:00", "FLORIDA", "Hail", 0, 1500),
                    ("2007-01-03 14:30:00", "TEXAS", "Tornado", 3, 250000),
                    ("2007-02-11 02:15:00", "OHIO", "Flood", 0, 12000),
                    ("2007-03-20 19:45:00", "GEORGIA", "Thunderstorm Wind", 1, 8000),
                    ("2007-04-02 11:00:00", "KANSAS", "Tornado", 0, 60000),
                    ("2007-05-17 16:20:00", "FLORIDA", "Lightning", 2, 0),
                ],
            ),
        ),
        Dataset(
            "fabrikam",
            "22222222-2222-2222-2222-222222222222",
            _rows(
                "fabrikam",
                [
                    ("2008-01-05 06:00:00", "MAINE", "Blizzard", 0, 3000),
                    ("2008-02-14 22:10:00", "IOWA", "Drought", 0, 0),
                    ("2008-07-09 13:05:00", "OREGON", "Wildfire", 4, 900000),
                    ("2008-09-30 09:40:00", "VERMONT", "Flash Flood", 0, 45000),
                ],
            ),
        ),
        # Extra tenants for the e2e suite only (throttling, gzip shim, bearer upstream).
        Dataset("throttled-sdk", "33333333-3333-3333-3333-333333333333",
                _rows("throttled-sdk", [("2009-01-01 00:00:00", "UTAH", "Hail", 0, 1)])),
        Dataset("throttled-http", "44444444-4444-4444-4444-444444444444",
                _rows("throttled-http", [("2009-01-02 00:00:00", "IDAHO", "Hail", 0, 2)])),
        Dataset("gzipped", "55555555-5555-5555-5555-555555555555",
                _rows("gzipped", [("2009-01-03 00:00:00", "NEVADA", "Dust Storm", 0, 3),
                                  ("2009-01-04 00:00:00", "ARIZONA", "Heat", 1, 4)])),
        Dataset("bearer", "66666666-6666-6666-6666-666666666666",
                _rows("bearer", [("2009-01-05 00:00:00", "ALASKA", "Avalanche", 0, 5)])),
        # test_guard.py: an admin tenant, and a tenant on a restrict_statement cluster.
        Dataset("northwind", "77777777-7777-7777-7777-777777777777",
                _rows("northwind", [("2010-01-01 00:00:00", "MONTANA", "Cold", 0, 6)])),
        Dataset("restricted", "88888888-8888-8888-8888-888888888888",
                _rows("restricted", [("2010-01-02 00:00:00", "WYOMING", "Wind", 0, 7)])),
        # test_enforced_properties.py: a tenant on the default enforce_request_properties.
        Dataset("enforced", "99999999-9999-9999-9999-999999999999",
                _rows("enforced", [("2010-01-03 00:00:00", "IDAHO", "Hail", 0, 8)])),
    )
}

DEMO_DATASETS = ("contoso", "fabrikam")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build(outdir: str | Path, names: tuple[str, ...] | list[str] = DEMO_DATASETS) -> tuple[Path, Path]:
    """Create one DuckDB file per dataset in *outdir* (replacing old ones) and an
    init script attaching all but the first. Returns (main_db_path, init_sql_path):
    serve with `duckdb-kql serve MAIN --init INIT -p PORT`."""
    import duckdb  # installed with duckdb-kql[duckdb]

    if not names:
        raise ValueError("no datasets named")
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {sorted(DATASETS)}")
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        ds = DATASETS[name]
        path = out / f"{ds.guid}.duckdb"
        for stale in (path, path.with_name(path.name + ".wal")):
            stale.unlink(missing_ok=True)
        con = duckdb.connect(str(path))
        try:
            cols = ", ".join(f'"{c}" {t}' for c, t in COLUMNS)
            con.execute(f"CREATE TABLE StormEvents ({cols})")
            con.executemany(
                f"INSERT INTO StormEvents VALUES ({', '.join('?' for _ in COLUMNS)})",
                [list(r) for r in ds.rows],
            )
        finally:
            con.close()
        paths.append((ds, path))
    init = out / "init.sql"
    init.write_text(
        "".join(
            f'ATTACH {_sql_string(str(path))} AS "{ds.guid}" (READ_ONLY);\n' for ds, path in paths[1:]
        ),
        encoding="utf-8",
    )
    return paths[0][1], init


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    main_db, init = build(argv[1], tuple(argv[2:]) or DEMO_DATASETS)
    print(main_db)
    print("--init")
    print(init)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
