"""Benchmark `targets list` on a large operation against the floor of listing without contacts.

    .venv/bin/python bench/targets_list.py [--rows 100000] [--repeat 5] [--without-index]
                                           [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`campflow_bench_list_<pid>`), migrates it, applies an operation
BENCH targeting prospects, and fills it with SQL: N prospects, one contact each, all N targeted
with their contact. Then it times `campflow.store.targeting.list_targets` as `campflow targets list
BENCH` calls it (the first 100 rows and the total) and with `--sort contacts`, each the median of
--repeat runs, against a floor measured in the same run: the same first 100 parties and their
total read without counting contacts. The goals are < 0.1 s and < 1 s.

--without-index drops the indexes migration 0007 gave operation_target_contact first, to show
what they buy (each query then stops after 60 s). The database is dropped at the end.
Exit status: 0 when both goals are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
OPERATION_YAML = """\
kind: Operation
code: BENCH
label: Benchmark de la liste des cibles
party_kinds: [prospect]
steps:
  - {code: S1, label: Export, kind: other}
"""
GOALS = {"list": 0.1, "sort_contacts": 1.0}
FILL = [
    """insert into party (code, kind, name, city, postal_code)
       select 'P' || lpad(i::text, 7, '0'), 'prospect', 'Société ' || i, 'Lyon', '69003'
       from generate_series(1, %(n)s) i""",
    "insert into contact (party_id, code, last_name) select id, 'C1', 'Contact ' || id from party",
    """insert into operation_target (operation_id, party_id, source)
       select o.id, p.id, 'bench' from operation o, party p where o.code = 'BENCH'""",
    """insert into operation_target_contact (operation_id, contact_id, party_id)
       select o.id, c.id, c.party_id from operation o, contact c where o.code = 'BENCH'""",
]
FLOOR = """select p.code, p.kind, p.name, p.city, p.postal_code, p.email, ot.added_at, ot.source
           from operation_target ot join party p on p.id = ot.party_id
           where ot.operation_id = :op order by p.code limit 100"""


def timed(call, repeat: int) -> float:
    """The median wall time of `repeat` calls, after one warm-up call; inf past the 60 s timeout."""
    from sqlalchemy.exc import OperationalError

    try:
        call()
    except OperationalError:  # canceled by statement_timeout
        return float("inf")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(repeat: int) -> dict[str, float]:
    from campflow.store import db
    from campflow.store.targeting import list_targets

    def listing(sort: str):
        def call():
            with db.session() as session:
                session.execute(text("set local statement_timeout = '60s'"))
                columns, rows, total = list_targets(session, "BENCH", sort=sort)
                assert len(rows) == 100 and total > 0, (len(rows), total)
        return call

    def floor():
        with db.session() as session:
            op = session.execute(text("select id from operation where code = 'BENCH'")).scalar_one()
            session.execute(text(FLOOR), {"op": op}).all()
            session.execute(text("select count(*) from operation_target where operation_id = :op"), {"op": op})

    return {"floor": timed(floor, repeat), "list": timed(listing("code"), repeat),
            "sort_contacts": timed(listing("contacts"), repeat)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="targets, one contact each (N)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each query (median)")
    parser.add_argument("--without-index", action="store_true",
                        help="drop the indexes migration 0007 gave the target contacts first")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL,
                        help="an admin URL of the server (the database is created beside it)")
    args = parser.parse_args(argv)
    admin = make_url(args.database_url).set(drivername="postgresql")
    name = f"campflow_bench_list_{os.getpid()}"
    admin_conninfo = admin.render_as_string(hide_password=False)
    conninfo = admin.set(database=name).render_as_string(hide_password=False)
    url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    from campflow.specs.apply import apply_path
    from campflow.store import db

    try:
        db.upgrade(url=url)
        os.environ["CAMPFLOW_DATABASE_URL"] = url
        db.reset_caches()
        with tempfile.TemporaryDirectory(prefix="campflow_bench_") as tmp:
            spec = Path(tmp) / "bench.yaml"
            spec.write_text(OPERATION_YAML, encoding="utf-8")
            with db.session() as session:
                apply_path(session, spec)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for statement in FILL:
                conn.execute(statement, {"n": args.rows})
            if args.without_index:
                conn.execute("drop index ix_operation_target_contact_operation_party, "
                             "ix_operation_target_contact_party_id")
            conn.execute("vacuum analyze")
        results = measure(args.repeat)
    finally:
        db.reset_caches()
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    return report(results, args)


def report(results: dict[str, float], args: argparse.Namespace) -> int:
    floor = results["floor"]
    print(f"{args.rows:,} targets, one contact each; median of {args.repeat} runs"
          f"{' (without the index)' if args.without_index else ''}")
    print(f"  floor (first 100, no contacts)  {floor:8.4f} s")
    met = True
    for key, label in (("list", "targets list"), ("sort_contacts", "targets list --sort contacts")):
        ok = results[key] < GOALS[key]
        met &= ok
        seconds = f"{results[key]:8.4f} s  {results[key] / floor:6.1f}x the floor" if ok or results[key] < 60 \
            else "   > 60 s (canceled)       "
        print(f"  {label:<31} {seconds}  goal < {GOALS[key]} s: {'met' if ok else 'MISSED'}")
    out: dict[str, Any] = {"benchmark": "bench/targets_list.py", "rows": args.rows, "repeat": args.repeat,
                           "without_index": args.without_index, "cpus": os.cpu_count(),
                           **{k: _finite(round(v, 4)) for k, v in results.items()},
                           "ratios": {k: _finite(round(results[k] / floor, 1)) for k in GOALS}, "goals_met": met}
    print(json.dumps(out))
    return 0 if met else 1


def _finite(value: float) -> float | None:
    """JSON has no infinity: a query canceled at 60 s is null."""
    return value if value != float("inf") else None


if __name__ == "__main__":
    sys.exit(main())
