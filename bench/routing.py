"""Benchmark campflow's routing against the floor of three hand-written INSERT … SELECT.

    .venv/bin/python bench/routing.py [--sizes 10000,100000,1000000] [--keep] [--skip-prefect]
                                      [--explain auto|always|never]
                                      [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`campflow_bench_routing_<pid>`), migrates it and applies one spec
(`apply_path`): a custom field `secteur`, a questionnaire Q1 (CATALOGUE: oui / non / plus tard), an
operation BENCH whose phoning step S1 has three routes

* to S2: `C1 or (C2 and not C3)`, C1 = answer Q1.CATALOGUE equals oui, C2 = party_kind [prospect],
  C3 = field party.city equals Lyon;
* to S3: answer Q1.CATALOGUE in [non, plus tard] and field PCFIDX.SECTEUR equals BTP;
* to S4: when_status [failed] and party_kind [client];

(plus S2b, S3b, S4b, the floor's copies of S2–S4), and an operation PF20 of 20 `other` steps chained
by default routes. For each size N, the tables are emptied and filled set-based (generate_series):
N parties (about 35 % clients, cities with some NULL and some `LYON`, `fields.secteur` often BTP,
sometimes missing), all N targeted by BENCH and in S1 (80 % ok_continue, 12 % failed, the rest
to_process / not_processed_continue), and a party-level answer to CATALOGUE for 2/3 of them. Then:

* campflow: `flows.run_operation.process_step("BENCH", "S1", route_only=True)` (one INSERT … SELECT
  per route, compiled from the spec), its reported counts checked against the rows it wrote;
* the floor: the same three routings as plain SQL text with hand-written joins to
  answer/question/questionnaire/party (LEFT JOIN on the party-level answer, which the data
  guarantees is the only one), `ORDER BY party_id`, `ON CONFLICT DO NOTHING`, into S2b/S3b/S4b;
* that both sent exactly the same parties to each target (count + md5 of the sorted ids).

Each measurement runs in a fresh process forked by multiprocessing's fork server (helpers and
method as in bench/import_targets.py), twice: untraced for the wall time and the peak RSS growth,
then under tracemalloc for the peak of Python allocations. Before every measurement the routed
rows are deleted and the database vacuumed/analysed and checkpointed, and one untimed run of each
side first warms the caches, so campflow and the floor start from the same state. The traced
campflow run also times its statements by part (route inserts, status counts…): the breakdown.
At the largest size, --explain prints EXPLAIN (ANALYZE, BUFFERS) of campflow's three route
statements (captured from a rolled-back dry run) and of the floor's, each from the same reset
state (auto: only when campflow misses the ratio goal there).

Unless --skip-prefect, the Prefect overhead: PF20 over 1,000 targets, the `run_operation` flow
run twice under `prefect.testing.utilities.prefect_test_harness()` (S1's parties are set
ok_continue between the runs, so the second one routes them to S2); the flow's wall time, the
time spent in `process_step` (patched with a timer in that process) and the rest, per step.

The database is dropped at the end unless --keep. Exit status: 0 when every check passed.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_targets import DEFAULT_ADMIN_URL, MB, Bench  # noqa: E402  (bench/ is no package)

DEFAULT_SIZES = "10000,100000,1000000"
GOAL_RATIO = 0.67  # floor seconds / campflow seconds: campflow within 1.5x of the floor
PREFECT_STEPS, PREFECT_TARGETS = 20, 1000
ROUTED = ("S2", "S3", "S4")  # campflow's targets; the floor writes to the same codes + "b"
FLOOR_OF = {code: f"{code}b" for code in ROUTED}

SPEC_YAML = """\
kind: FieldDictionary
code: BENCH
custom_fields:
  party:
    secteur: {label: Secteur d'activité}
---
kind: Questionnaire
code: Q1
label: Prise de contact
questions:
  - {code: CATALOGUE, label: "Souhaitez-vous notre catalogue ?", type: choice,
     choices: [oui, non, plus tard], required: true}
---
kind: Operation
code: BENCH
label: Benchmark du routage
party_kinds: [prospect, client]
steps:
  - code: S1
    label: Appel
    kind: phoning
    questionnaire: Q1
    next:
      - to: S2
        conditions:
          C1: {answer: Q1.CATALOGUE, op: equals, value: oui}
          C2: {party_kind: [prospect]}
          C3: {field: party.city, op: equals, value: Lyon}
        formula: "C1 or (C2 and not C3)"
      - to: S3
        conditions:
          C1: {answer: Q1.CATALOGUE, op: in, value: [non, plus tard]}
          C2: {field: PCFIDX.SECTEUR, op: equals, value: BTP}
      - to: S4
        when_status: [failed]
        conditions:
          C1: {party_kind: [client]}
  - {code: S2, label: Catalogue, kind: other, next: []}
  - {code: S3, label: Relance BTP, kind: other, next: []}
  - {code: S4, label: Clients en échec, kind: other, next: []}
  - {code: S2b, label: Catalogue (floor), kind: other, next: []}
  - {code: S3b, label: Relance BTP (floor), kind: other, next: []}
  - {code: S4b, label: Clients en échec (floor), kind: other, next: []}
---
kind: Operation
code: PF20
label: Vingt étapes enchaînées
party_kinds: [prospect, client]
steps:
""" + "".join(f"  - {{code: S{i}, label: Étape {i}, kind: other}}\n"
              for i in range(1, PREFECT_STEPS + 1))

# hand-written routing: the floor (psycopg named parameters)
FLOOR_ANSWER = """
    left join (answer a
               join question q on q.id = a.question_id and q.code = 'CATALOGUE'
               join questionnaire qn on qn.id = q.questionnaire_id and qn.code = 'Q1')
           on a.operation_id = %(op)s and a.party_id = st.party_id and a.contact_id is null"""
FLOOR_SQL = {
    "S2": f"""
        insert into step_target (step_id, party_id, operation_id)
        select %(target)s, st.party_id, %(op)s
        from step_target st join party p on p.id = st.party_id {FLOOR_ANSWER}
        where st.step_id = %(source)s and st.status = 'ok_continue'
          and (lower(a.value) = 'oui'
               or (p.kind = 'prospect' and lower(p.city) is distinct from 'lyon'))
        order by st.party_id
        on conflict do nothing""",
    "S3": f"""
        insert into step_target (step_id, party_id, operation_id)
        select %(target)s, st.party_id, %(op)s
        from step_target st join party p on p.id = st.party_id {FLOOR_ANSWER}
        where st.step_id = %(source)s and st.status = 'ok_continue'
          and lower(a.value) in ('non', 'plus tard') and lower(p.fields ->> 'secteur') = 'btp'
        order by st.party_id
        on conflict do nothing""",
    "S4": """
        insert into step_target (step_id, party_id, operation_id)
        select %(target)s, st.party_id, %(op)s
        from step_target st join party p on p.id = st.party_id
        where st.step_id = %(source)s and st.status = 'failed' and p.kind = 'client'
        order by st.party_id
        on conflict do nothing""",
}

# the data, set-based; h(k) is a deterministic pseudo-random integer >= 0 per party and attribute k
H = "(hashint8(i::bigint * 8 + {k}) & 2147483647)"
LOAD_PARTIES = f"""
    insert into party (code, kind, name, city, postal_code, fields)
    select 'B' || lpad(i::text, 8, '0'),
           case when {H.format(k=0)} %% 100 < 35 then 'client' else 'prospect' end,
           'Société ' || i,
           case when {H.format(k=1)} %% 100 < 5 then null
                else (array['Paris', 'Lyon', 'Marseille', 'Toulouse', 'Nantes', 'Lyon', 'Lille',
                            'Bordeaux', 'LYON', 'Rennes', 'Grenoble', 'Dijon'])[1 + {H.format(k=2)} %% 12] end,
           lpad(({H.format(k=3)} %% 95000 + 1000)::text, 5, '0'),
           case when {H.format(k=4)} %% 100 < 10 then '{{}}'::jsonb
                else jsonb_build_object('secteur', (array['BTP', 'BTP', 'btp', 'INDUSTRIE', 'NEGOCE',
                     'SERVICES', 'SANTE', 'TRANSPORT', ''])[1 + {H.format(k=5)} %% 9]) end
    from generate_series(1, %(n)s) i"""
LOAD_TARGETS = """
    insert into operation_target (operation_id, party_id, source)
    select %(op)s, id, 'bench' from party order by id"""
LOAD_S1 = f"""
    insert into step_target (step_id, party_id, operation_id, status, processed_at)
    select %(step)s, i, %(op)s, s.status, case when s.status = 'to_process' then null else now() end
    from generate_series(1, %(n)s) i,
         lateral (select case when {H.format(k=6)} %% 100 < 80 then 'ok_continue'
                              when {H.format(k=6)} %% 100 < 92 then 'failed'
                              when {H.format(k=6)} %% 100 < 96 then 'not_processed_continue'
                              else 'to_process' end as status) s
    order by i"""
LOAD_ANSWERS = f"""
    insert into answer (operation_id, step_id, party_id, question_id, value)
    select %(op)s, %(step)s, i,
           (select q.id from question q join questionnaire qn on qn.id = q.questionnaire_id
            where qn.code = 'Q1' and q.code = 'CATALOGUE'),
           case when {H.format(k=7)} %% 100 < 40 then 'oui'
                when {H.format(k=7)} %% 100 < 75 then 'non' else 'plus tard' end
    from generate_series(1, %(n)s) i
    where {H.format(k=8)} %% 3 <> 0"""
WIPE = ("truncate party, contact, answer, event, operation_target, operation_target_contact, "
        "step_target, step_target_contact restart identity cascade")


# ------------------------------------------------------------------------------ child side


SQL_PARTS = (  # statement prefix (lower case, blanks collapsed) -> part of process_step it belongs to
    ("with added as (insert into step_target ", "route inserts"),
    ("insert into step_target_contact", "route contact inserts"),
    ("select step_target.status, count(*)", "status counts"),
    ("update step_target", "sync_contacts"),
)


def _campflow(breakdown: bool) -> dict[str, Any]:
    """process_step(route_only=True); with `breakdown`, the time of its statements by part."""
    from flows.run_operation import process_step

    parts: dict[str, list[float]] = {}
    if breakdown:
        from sqlalchemy import event

        from campflow.store import db
        started: list[float] = []

        def before(*_: Any) -> None:
            started.append(time.perf_counter())

        def after(conn, cursor, statement, parameters, context, executemany) -> None:
            seconds = time.perf_counter() - started.pop()
            text = " ".join(statement.lower().split())
            part = next((name for prefix, name in SQL_PARTS if text.startswith(prefix)), "other SQL")
            total = parts.setdefault(part, [0, 0.0])
            total[0] += 1
            total[1] += seconds

        event.listen(db.engine(), "before_cursor_execute", before)
        event.listen(db.engine(), "after_cursor_execute", after)
    report = process_step("BENCH", "S1", route_only=True)
    return {"state": report.state, "routed": {r["target"]: r["routed"] for r in report.routes},
            "sql_parts": {k: {"statements": v[0], "seconds": round(v[1], 4)} for k, v in parts.items()}}


def _floor(conn: psycopg.Connection, task: dict[str, Any]) -> dict[str, Any]:
    routed = {}
    with conn.transaction(), conn.cursor() as cursor:
        for code, statement in FLOOR_SQL.items():
            cursor.execute(statement, {"op": task["op"], "source": task["ids"]["S1"],
                                       "target": task["ids"][FLOOR_OF[code]]})
            routed[FLOOR_OF[code]] = cursor.rowcount
    return {"state": "Completed", "routed": routed}


def measure(task: dict[str, Any]) -> dict[str, Any]:
    """One routing in this (fresh) process: wall time, RSS growth, optional tracemalloc peak."""
    os.environ["CAMPFLOW_DATABASE_URL"] = task["url"]
    from sqlalchemy import text

    # load the code before the baseline (prefect comes with flows.run_operation)
    import campflow.specs.apply  # noqa: F401
    import campflow.store.operations  # noqa: F401
    import flows.run_operation  # noqa: F401
    import tasks.kinds  # noqa: F401
    from campflow.store import db

    db.reset_caches()
    with db.session() as session:  # connect, load the dialect: not the routing's memory
        session.execute(text("select 1"))
    conn = psycopg.connect(task["conninfo"])
    conn.execute("select 1")
    conn.commit()
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if task["trace"]:
        tracemalloc.start()
    start = time.perf_counter()
    outcome = _campflow(task["trace"]) if task["kind"] == "campflow" else _floor(conn, task)
    seconds = time.perf_counter() - start
    if outcome.get("sql_parts"):
        sql_seconds = sum(p["seconds"] for p in outcome["sql_parts"].values())
        outcome["sql_parts"]["python (traced)"] = {"statements": 0,
                                                   "seconds": round(seconds - sql_seconds, 4)}
    py_peak = tracemalloc.get_traced_memory()[1] if task["trace"] else None
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    conn.close()
    return {**outcome, "seconds": seconds, "py_peak": py_peak, "rss_before": rss_before,
            "rss_growth": max(0, rss_after - rss_before), "rss_peak": rss_after}


def capture_campflow_sql(task: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The route statements campflow sends, from a dry run (rolled back)."""
    os.environ["CAMPFLOW_DATABASE_URL"] = task["url"]
    from sqlalchemy import event

    from campflow.store import db
    from flows.run_operation import process_step

    db.reset_caches()
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "INSERT INTO step_target " in statement:
            seen.append((statement, dict(parameters or {})))

    event.listen(db.engine(), "before_cursor_execute", record)
    process_step("BENCH", "S1", route_only=True, dry_run=True)
    return seen


def prefect_overhead(task: dict[str, Any]) -> dict[str, Any]:
    """PF20 run twice by the run_operation flow under a Prefect test harness."""
    os.environ["CAMPFLOW_DATABASE_URL"] = task["url"]
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from campflow.store import db
    db.reset_caches()
    from prefect.testing.utilities import prefect_test_harness

    import flows.run_operation as run_module

    original = run_module.process_step
    lock = threading.Lock()
    spent: list[tuple[str, float]] = []

    def timed_process_step(operation: str, step_code: str, **kwargs: Any):
        start = time.perf_counter()
        try:
            return original(operation, step_code, **kwargs)
        finally:
            with lock:
                spent.append((step_code, time.perf_counter() - start))

    run_module.process_step = timed_process_step
    runs = []
    start = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        harness = time.perf_counter() - start
        for number in (1, 2):
            if number == 2:  # S1's parties are done: the second run routes them on to S2
                with psycopg.connect(task["conninfo"]) as conn:
                    conn.execute("""update step_target st set status = 'ok_continue', processed_at = now()
                                    from step s join operation o on o.id = s.operation_id
                                    where st.step_id = s.id and o.code = 'PF20' and s.code = 'S1'""")
            spent.clear()
            start = time.perf_counter()
            reports = run_module.run_operation("PF20")
            wall = time.perf_counter() - start
            work = sum(seconds for _, seconds in spent)
            runs.append({
                "run": number, "steps": len(reports), "process_step_calls": len(spent),
                "wall_seconds": round(wall, 3), "work_seconds": round(work, 3),
                "overhead_seconds": round(wall - work, 3),
                "overhead_per_step_ms": round((wall - work) / max(1, len(reports)) * 1000, 1),
                "work_per_step_ms": round(work / max(1, len(spent)) * 1000, 1),
                "entered": sum(r["entered"] for r in reports),
                "routed": sum(x["routed"] for r in reports for x in r["routes"]),
                "states": sorted({r["state"] for r in reports}),
            })
    run_module.process_step = original
    return {"harness_startup_seconds": round(harness, 2), "runs": runs}


def in_child(function, task: dict[str, Any]) -> Any:
    """Run `function(task)` in a new process forked by the fork server (see import_targets)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
        return pool.submit(function, task).result()


# ------------------------------------------------------------------------------ parent side


class RoutingBench(Bench):
    def query(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple]:
        with psycopg.connect(self.conninfo) as conn:
            return conn.execute(statement, params).fetchall()

    def run_sql(self, statement: str, params: dict[str, Any]) -> int:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(statement, params).rowcount

    def step_ids(self, operation: str) -> dict[str, int]:
        return dict(self.query("select s.code, s.id from step s join operation o on o.id = s.operation_id "
                               "where o.code = %(op)s", {"op": operation}))

    def operation_id(self, operation: str) -> int:
        return self.query("select id from operation where code = %(op)s", {"op": operation})[0][0]


def load(bench: RoutingBench, n: int, op: int, ids: dict[str, int]) -> dict[str, int]:
    bench.execute(WIPE)
    timings = {}
    for name, statement, params in (
            ("parties", LOAD_PARTIES, {"n": n}),
            ("targets", LOAD_TARGETS, {"op": op}),
            ("S1", LOAD_S1, {"n": n, "op": op, "step": ids["S1"]}),
            ("answers", LOAD_ANSWERS, {"n": n, "op": op, "step": ids["S1"]})):
        start = time.perf_counter()
        rows = bench.run_sql(statement, params)
        timings[name] = rows
        print(f"  loaded {rows:>10,} {name:<8} in {time.perf_counter() - start:6.2f} s", flush=True)
    return timings


def fingerprint(bench: RoutingBench, ids: dict[str, int]) -> dict[str, tuple[int, str]]:
    """Per routed step: how many parties, and an md5 of their sorted ids."""
    rows = bench.query("""
        select s.code, count(st.party_id),
               md5(coalesce(string_agg(st.party_id::text, ',' order by st.party_id), ''))
        from step s left join step_target st on st.step_id = s.id
        where s.id = any(%(ids)s) group by s.code""",
                       {"ids": [ids[c] for c in (*ROUTED, *FLOOR_OF.values())]})
    return {code: (count, digest) for code, count, digest in rows}


def reset(bench: RoutingBench, ids: dict[str, int]) -> None:
    routed = [ids[c] for c in (*ROUTED, *FLOOR_OF.values())]
    with psycopg.connect(bench.conninfo, autocommit=True) as conn:
        conn.execute("delete from step_target where step_id = any(%(ids)s)", {"ids": routed})
        conn.execute("delete from step_target_contact where step_id = any(%(ids)s)", {"ids": routed})
    bench.settle()


def run_floor_here(bench: RoutingBench, op: int, ids: dict[str, int]) -> None:
    with psycopg.connect(bench.conninfo) as conn:
        _floor(conn, {"op": op, "ids": ids})


def explain(bench: RoutingBench, op: int, ids: dict[str, int], task: dict[str, Any]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of campflow's three route statements and of the floor's, each in a
    rolled-back transaction from the same (reset) state."""
    captured = in_child(capture_campflow_sql, task)
    plans = {}
    with psycopg.connect(bench.conninfo) as conn:
        for (statement, params), code in zip(captured, ROUTED):
            reset(bench, ids)
            plans[f"campflow {code}"] = "\n".join(r[0] for r in conn.execute(
                "explain (analyze, buffers) " + statement, params).fetchall())
            conn.rollback()
        for code, statement in FLOOR_SQL.items():
            reset(bench, ids)
            plans[f"floor {FLOOR_OF[code]}"] = "\n".join(r[0] for r in conn.execute(
                "explain (analyze, buffers) " + statement,
                {"op": op, "source": ids["S1"], "target": ids[FLOOR_OF[code]]}).fetchall())
            conn.rollback()
    reset(bench, ids)
    return plans


def summary(r: dict[str, Any], n: int, floor: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"parties": n, "seconds": round(r["seconds"], 3), "parties_per_s": round(n / r["seconds"]),
           "py_peak_mb": round(r["py_peak"] / MB, 2), "rss_growth_mb": round(r["rss_growth"] / MB, 1),
           "rss_before_mb": round(r["rss_before"] / MB, 1),
           "traced_seconds": round(r["traced_seconds"], 3)}
    if floor is not None:
        out["ratio"] = round(floor["seconds"] / r["seconds"], 3)
    return out


def print_size(n: int, result: dict[str, Any]) -> None:
    head = (f"{'':<30}{'parties':>11}{'seconds':>10}{'parties/s':>12}{'ratio':>8}"
            f"{'py peak MB':>12}{'RSS growth MB':>15}")
    print()
    print(f"N = {n:,}")
    print(head)
    print("-" * len(head))
    for key, label in (("campflow", "campflow process_step (route)"), ("floor", "floor (3 x INSERT…SELECT)")):
        r = result[key]
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "1"
        print(f"{label:<30}{r['parties']:>11,}{r['seconds']:>10.3f}{r['parties_per_s']:>12,}{ratio:>8}"
              f"{r['py_peak_mb']:>12.2f}{r['rss_growth_mb']:>15.1f}")
    parts = "; ".join(f"{name} {p['seconds']:.3f} s" + (f" ({p['statements']})" if p["statements"] else "")
                      for name, p in result["campflow_breakdown"].items())
    print(f"campflow's time by part (traced run, statements in parentheses): {parts}")
    routed = ", ".join(f"{code} {count:,}" for code, count in result["routed"].items())
    print(f"routed: {routed}; same parties as the floor: {'yes' if result['identical'] else 'NO'}; "
          f"ratio goal >= {GOAL_RATIO}: {'met' if result['campflow']['ratio'] >= GOAL_RATIO else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="party counts, comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL,
                        help="an admin URL of the server (the database is created beside it)")
    parser.add_argument("--skip-prefect", action="store_true", help="skip the Prefect overhead part")
    parser.add_argument("--explain", choices=("auto", "always", "never"), default="auto",
                        help="EXPLAIN ANALYZE campflow's and the floor's statements at the largest "
                             "size (auto: when campflow misses the ratio goal there)")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes: integers separated by commas; got {args.sizes!r}")
    if not sizes or sizes[0] < 100:
        parser.error("--sizes must be at least 100 each")

    bench = RoutingBench(args.database_url, f"campflow_bench_routing_{os.getpid()}")
    bench.admin(sql.SQL("create database {}").format(sql.Identifier(bench.name)))
    print(f"database {bench.name}; sizes {', '.join(f'{n:,}' for n in sizes)}; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPU(s)", flush=True)
    from campflow.store import db
    failures: list[str] = []
    results: dict[int, dict[str, Any]] = {}
    plans: dict[str, str] = {}
    prefect: dict[str, Any] | None = None
    try:
        bench.migrate_and_use()
        from campflow.specs.apply import apply_path

        with tempfile.TemporaryDirectory(prefix="campflow_bench_") as tmp:
            spec = Path(tmp) / "bench.yaml"
            spec.write_text(SPEC_YAML, encoding="utf-8")
            with db.session() as session:
                applied = apply_path(session, spec)
        print("applied: " + ", ".join(f"{a.kind} {a.code} {a.outcome}" for a in applied), flush=True)
        db.reset_caches()
        op, ids = bench.operation_id("BENCH"), bench.step_ids("BENCH")
        task = {"url": bench.url, "conninfo": bench.conninfo, "op": op, "ids": ids}

        for n in sizes:
            print(f"\nN = {n:,}", flush=True)
            load(bench, n, op, ids)
            bench.settle()
            # untimed: warm the caches (and the access paths of each side), then the same state
            in_child(measure, {**task, "kind": "campflow", "trace": False})
            reset(bench, ids)
            run_floor_here(bench, op, ids)
            reset(bench, ids)
            raw: dict[str, dict[str, Any]] = {}
            prints: dict[str, dict[str, tuple[int, str]]] = {}
            for trace in (False, True):
                for kind in ("campflow", "floor"):
                    outcome = in_child(measure, {**task, "kind": kind, "trace": trace})
                    label = f"{kind}{' traced' if trace else ''}"
                    prints[label] = fingerprint(bench, ids)
                    reset(bench, ids)
                    print(f"  {label:<16} {outcome['seconds']:8.3f} s  routed "
                          + ", ".join(f"{c} {k:,}" for c, k in outcome["routed"].items()), flush=True)
                    if outcome["state"] != "Completed":
                        failures.append(f"N={n} {label}: state {outcome['state']}")
                    for code, count in outcome["routed"].items():
                        written = prints[label][code][0]
                        if count != written:
                            failures.append(f"N={n} {label}: reported {count:,} routed to {code}, "
                                            f"wrote {written:,}")
                    if trace:
                        if kind == "campflow":
                            raw[kind]["sql_parts"] = outcome["sql_parts"]
                        raw[kind]["py_peak"] = outcome["py_peak"]
                        raw[kind]["traced_seconds"] = outcome["seconds"]
                    else:
                        raw[kind] = outcome
            identical = True
            for label, fp in prints.items():
                for code, floor_code in FLOOR_OF.items():
                    mine = fp[floor_code] if label.startswith("floor") else fp[code]
                    reference = prints["floor"][floor_code]
                    if mine != reference:
                        identical = False
                        failures.append(f"N={n} {label}: {code} got {mine[0]:,} parties, the floor "
                                        f"{reference[0]:,} (or other ones)")
            routed = {code: prints["campflow"][code][0] for code in ROUTED}
            if not all(routed.values()):
                failures.append(f"N={n}: a route chose nobody: {routed}")
            floor = summary(raw["floor"], n)
            results[n] = {"campflow": summary(raw["campflow"], n, raw["floor"]), "floor": floor,
                          "routed": routed, "identical": identical,
                          "campflow_breakdown": raw["campflow"]["sql_parts"]}
            print_size(n, results[n])

        largest = sizes[-1]
        if args.explain == "always" or (args.explain == "auto"
                                        and results[largest]["campflow"]["ratio"] < GOAL_RATIO):
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) at N = {largest:,}", flush=True)
            plans = explain(bench, op, ids, task)
            for label, plan in plans.items():
                print(f"\n--- {label}\n{plan}")

        if not args.skip_prefect:
            print(f"\nPrefect: {PREFECT_STEPS} steps over {PREFECT_TARGETS:,} targets", flush=True)
            bench.execute(WIPE)
            pf_op = bench.operation_id("PF20")
            bench.run_sql(LOAD_PARTIES, {"n": PREFECT_TARGETS})
            bench.run_sql(LOAD_TARGETS, {"op": pf_op})
            bench.settle()
            prefect = in_child(prefect_overhead, task)
            for run in prefect["runs"]:
                if run["process_step_calls"] != PREFECT_STEPS or "Failed" in run["states"]:
                    failures.append(f"Prefect run {run['run']}: {run['process_step_calls']} steps, "
                                    f"states {run['states']}")
            if prefect["runs"][0]["entered"] != PREFECT_TARGETS or \
                    prefect["runs"][1]["routed"] != PREFECT_TARGETS:
                failures.append(f"Prefect runs: entered {prefect['runs'][0]['entered']}, "
                                f"then routed {prefect['runs'][1]['routed']}")
    finally:
        db.reset_caches()
        if args.keep:
            print(f"kept database {bench.name}: {bench.url}")
        else:
            bench.admin(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(bench.name)))

    print("\n=== routing: campflow vs the floor (ratio = floor seconds / campflow seconds, "
          f"goal >= {GOAL_RATIO})")
    for n in sizes:
        if n in results:
            print_size(n, results[n])
    growth = None
    if len(results) > 1:
        small, big = results[sizes[0]], results[sizes[-1]]
        growth = {
            "parties": [sizes[0], sizes[-1]], "size_ratio": round(sizes[-1] / sizes[0], 1),
            "campflow_time_ratio": round(big["campflow"]["seconds"] / small["campflow"]["seconds"], 1),
            "floor_time_ratio": round(big["floor"]["seconds"] / small["floor"]["seconds"], 1),
            "campflow_py_peak_mb": [small["campflow"]["py_peak_mb"], big["campflow"]["py_peak_mb"]],
            "campflow_rss_growth_mb": [small["campflow"]["rss_growth_mb"], big["campflow"]["rss_growth_mb"]],
            "floor_py_peak_mb": [small["floor"]["py_peak_mb"], big["floor"]["py_peak_mb"]],
            "floor_rss_growth_mb": [small["floor"]["rss_growth_mb"], big["floor"]["rss_growth_mb"]],
        }
        print(f"\ngrowth {sizes[0]:,} -> {sizes[-1]:,} parties (x{growth['size_ratio']:g}): "
              f"campflow time x{growth['campflow_time_ratio']:g}, floor time x{growth['floor_time_ratio']:g}; "
              f"campflow py peak {growth['campflow_py_peak_mb'][0]:.2f} -> {growth['campflow_py_peak_mb'][1]:.2f} MB, "
              f"RSS growth {growth['campflow_rss_growth_mb'][0]:.1f} -> {growth['campflow_rss_growth_mb'][1]:.1f} MB")
    if prefect:
        print(f"\n=== Prefect overhead: run_operation over {PREFECT_STEPS} steps, {PREFECT_TARGETS:,} targets "
              f"(harness start {prefect['harness_startup_seconds']:.1f} s)")
        head = (f"{'run':<5}{'wall s':>9}{'process_step s':>16}{'overhead s':>12}"
                f"{'overhead/step ms':>18}{'work/step ms':>14}{'entered':>9}{'routed':>8}")
        print(head)
        print("-" * len(head))
        for r in prefect["runs"]:
            print(f"{r['run']:<5}{r['wall_seconds']:>9.2f}{r['work_seconds']:>16.2f}{r['overhead_seconds']:>12.2f}"
                  f"{r['overhead_per_step_ms']:>18.1f}{r['work_per_step_ms']:>14.1f}{r['entered']:>9,}"
                  f"{r['routed']:>8,}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(json.dumps({
        "benchmark": "bench/routing.py", "sizes": sizes, "python": platform.python_version(),
        "cpus": os.cpu_count(), "goal_ratio": GOAL_RATIO,
        "results": {str(n): r for n, r in results.items()}, "growth": growth,
        "prefect": prefect, "explained": sorted(plans), "verified": not failures}, ensure_ascii=False))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
