"""Benchmark the party and target imports against the floor of a plain COPY.

    .venv/bin/python bench/import_targets.py [--rows 1000000] [--keep]
                                             [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`campflow_bench_<pid>`), migrates it, writes two CSV files in a
temporary directory (N parties as a Divalto export `FICHE;TIERS;NOM;EMAIL;VILLE;CP;SECTEUR;STAT(2)`,
and a target file `FICHE;TIERS` naming all of them in a shuffled order), applies an operation
BENCH targeting prospects and clients, then measures:

* `campflow.store.imports.import_parties` of the N parties (and of N/10, to show memory does not grow
  with the file);
* `campflow.store.targeting.import_targets` of the N targets into BENCH;
* the floor of each file: the same CSV read with the csv module and written with psycopg 3's
  `COPY … FROM STDIN` (`write_row`) into a bare table of text columns, no index.

Each measurement runs in a fresh process (forked by multiprocessing's fork server, so that its
ru_maxrss is its own), twice: once without tracing for the wall
time and the growth of the peak RSS (ru_maxrss after − before the call), once under tracemalloc
for the peak of Python allocations (tracemalloc slows allocation-heavy code, so its wall time is
only reported in the JSON as `traced_seconds`). Between runs the tables are emptied, and before
each run the database is vacuumed/analysed and checkpointed, so every run starts from the same
state. The database is dropped at the end unless --keep.

Exit status: 0 when the imports left N parties and N targets of BENCH, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PARTY_HEADER = ["FICHE", "TIERS", "NOM", "EMAIL", "VILLE", "CP", "SECTEUR", "STAT(2)"]
TARGET_HEADER = ["FICHE", "TIERS"]
FLOORS = {  # floor table -> its text columns, one per CSV column
    "floor_party": ["fiche", "tiers", "nom", "email", "ville", "cp", "secteur", "stat_2"],
    "floor_target": ["fiche", "tiers"],
}
OPERATION_YAML = """\
kind: Operation
code: BENCH
label: Benchmark des imports
party_kinds: [prospect, client]
steps:
  - {code: S1, label: Export, kind: other}
"""
MB = 1024 * 1024

# ------------------------------------------------------------------------------ data

NAME_HEADS = ["Atelier", "Ets", "Groupe", "Société", "Maison", "Comptoir", "Garage", "Cabinet",
              "Transports", "Menuiserie", "Boulangerie", "Imprimerie", "Laboratoires", "Entreprise",
              "Fonderie", "Distribution", "Bâtiment", "Agence", "Clinique", "Domaine"]
NAME_TAILS = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
              "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
              "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier",
              "du Rhône", "de l'Ouest", "des Alpes", "du Centre", "Atlantique", "Méditerranée"]
LEGAL_FORMS = ["SARL", "SAS", "SA", "EURL", "SASU", "SCOP", ""]
CITIES = [("Paris", "75011"), ("Lyon", "69003"), ("Marseille", "13008"), ("Toulouse", "31000"),
          ("Nantes", "44000"), ("Strasbourg", "67000"), ("Lille", "59000"), ("Bordeaux", "33000"),
          ("Rennes", "35000"), ("Besançon", "25000"), ("Orléans", "45000"), ("Nîmes", "30000"),
          ("Saint-Étienne", "42000"), ("Clermont-Ferrand", "63000"), ("Grenoble", "38000"),
          ("Dijon", "21000"), ("Angers", "49000"), ("Le Mans", "72000"),
          ("Aix-en-Provence", "13100"), ("Brest", "29200"), ("Tours", "37000"),
          ("Limoges", "87000"), ("Amiens", "80000"), ("Metz", "57000"), ("Perpignan", "66000"),
          ("Caen", "14000"), ("Rouen", "76000"), ("Nancy", "54000"), ("Mulhouse", "68100"),
          ("Pau", "64000"), ("Annecy", "74000"), ("La Rochelle", "17000")]
SECTORS = ["INDUSTRIE", "BTP", "NEGOCE", "SERVICES", "AGROALIM", "TRANSPORT", "SANTE",
           "DISTRIBUTION", "", ""]
STATS = ["A", "B", "C", "D", ""]
ASCII = str.maketrans("àâäçéèêëîïôöùûüÉ", "aaaceeeeiioouuuE")


def is_client(i: int) -> bool:
    """About a third of the parties are clients, the rest prospects; a pure function of i."""
    return (i * 2654435761) % 4294967296 % 100 < 35


def party_code(i: int, width: int) -> str:
    return f"{'C' if is_client(i) else 'P'}{i:0{width}d}"


def write_parties(path: Path, n: int, width: int, seed: int = 42) -> None:
    """N parties, written row by row (nothing of size N is kept in memory)."""
    rnd = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(PARTY_HEADER)
        for i in range(1, n + 1):
            tail = rnd.choice(NAME_TAILS)
            name = f"{rnd.choice(NAME_HEADS)} {tail} {rnd.choice(LEGAL_FORMS)}".strip()
            slug = "".join(c for c in tail.lower().translate(ASCII) if c.isalnum())
            email = "" if rnd.random() < 0.12 else f"contact{i}@{slug}-{rnd.randrange(100)}.fr"
            city, postal_code = rnd.choice(CITIES)
            writer.writerow(["CLI" if is_client(i) else "PRO", party_code(i, width), name, email,
                             city, postal_code, rnd.choice(SECTORS), rnd.choice(STATS)])


def write_targets(path: Path, n: int, width: int) -> None:
    """All N parties, in a shuffled order: j -> (a*j + c) mod n with gcd(a, n) = 1."""
    a = max(1, int(n * 0.6180339887)) | 1
    while math.gcd(a, n) != 1:
        a += 2
    c = n // 3
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(TARGET_HEADER)
        for j in range(n):
            i = (a * j + c) % n + 1
            writer.writerow(["CLI" if is_client(i) else "PRO", party_code(i, width)])


# ------------------------------------------------------------------------------ child side


def _run_import(kind: str, path: Path, floor_table: str | None, conninfo: str) -> dict[str, Any]:
    from campflow.store import db
    if kind == "parties":
        from campflow.store.imports import import_parties

        with db.session() as session:
            result = import_parties(session, path, show_progress=False)
        return {"rows": result.rows, "created": result.created, "updated": result.updated,
                "rejected": result.rejected}
    if kind == "targets":
        from campflow.store.targeting import import_targets

        with db.session() as session:
            result = import_targets(session, "BENCH", path, show_progress=False)
        return {"rows": result.rows, "created": result.parties_added, "already": result.already,
                "rejected": result.rejected}
    # the floor: csv module -> psycopg COPY, nothing else
    assert floor_table is not None
    columns = sql.SQL(", ").join(map(sql.Identifier, FLOORS[floor_table]))
    rows = 0
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        with cursor.copy(sql.SQL("copy {} ({}) from stdin").format(
                sql.Identifier(floor_table), columns)) as copy, \
                path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file, delimiter=";")
            next(reader)
            for row in reader:
                copy.write_row(row)
                rows += 1
    return {"rows": rows, "created": rows}


def measure(task: dict[str, Any]) -> dict[str, Any]:
    """Run one import in this (fresh) process; wall time, RSS growth, optional tracemalloc peak."""
    os.environ["CAMPFLOW_DATABASE_URL"] = task["url"]
    from sqlalchemy import text

    import campflow.store.imports  # noqa: F401  (load the code before the baseline)
    import campflow.store.targeting  # noqa: F401
    from campflow.store import db

    db.reset_caches()
    with db.session() as session:  # connect, load the dialect: not the import's memory
        session.execute(text("select 1"))
    with psycopg.connect(task["conninfo"]) as conn:
        conn.execute("select 1")
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if task["trace"]:
        tracemalloc.start()
    start = time.perf_counter()
    outcome = _run_import(task["kind"], Path(task["path"]), task.get("floor"), task["conninfo"])
    seconds = time.perf_counter() - start
    py_peak = tracemalloc.get_traced_memory()[1] if task["trace"] else None
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {**outcome, "seconds": seconds, "py_peak": py_peak, "rss_before": rss_before,
            "rss_growth": max(0, rss_after - rss_before), "rss_peak": rss_after}


def in_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run `measure` in a new process. Not "spawn": a process exec'd by this one starts with
    ru_maxrss = this process's peak RSS (Linux keeps the high-water mark across exec), which
    would hide any growth; a process forked by the (small) fork server starts from its own."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
        return pool.submit(measure, task).result()


# ------------------------------------------------------------------------------ parent side


class Bench:
    def __init__(self, admin_url: str, name: str) -> None:
        admin = make_url(admin_url).set(drivername="postgresql")
        self.admin_conninfo = admin.render_as_string(hide_password=False)
        self.conninfo = admin.set(database=name).render_as_string(hide_password=False)
        self.url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False)
        self.name = name

    def migrate_and_use(self) -> None:
        """Bring the benchmark database to the latest schema and point campflow at it."""
        from campflow.store import db
        db.upgrade(url=self.url)
        os.environ["CAMPFLOW_DATABASE_URL"] = self.url
        db.reset_caches()

    def admin(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(statement)

    def execute(self, *statements: str | sql.Composable) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def scalar(self, query: str) -> Any:
        with psycopg.connect(self.conninfo) as conn:
            return conn.execute(query).fetchone()[0]

    def settle(self) -> None:
        """The same starting state for every run: statistics up to date, dirty pages written."""
        self.execute("vacuum analyze", "checkpoint")

    def run(self, kind: str, path: Path, reset: str | None, floor: str | None = None
            ) -> dict[str, Any]:
        """An untraced run (time, RSS), the reset, then a traced run (tracemalloc peak)."""
        task = {"kind": kind, "path": str(path), "floor": floor, "url": self.url,
                "conninfo": self.conninfo}
        self.settle()
        plain = in_child({**task, "trace": False})
        if reset:
            self.execute(reset)
        self.settle()
        traced = in_child({**task, "trace": True})
        print(f"  {kind:<8} {path.name:<20} {plain['rows']:>10,} rows  {plain['seconds']:8.2f} s "
              f"(traced {traced['seconds']:.2f} s)", flush=True)
        return {**plain, "py_peak": traced["py_peak"], "traced_seconds": traced["seconds"],
                "traced_rss_growth": traced["rss_growth"], "traced_created": traced["created"]}


def summary(r: dict[str, Any], floor: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"rows": r["rows"], "seconds": round(r["seconds"], 3),
           "rows_per_s": round(r["rows"] / r["seconds"]),
           "py_peak_mb": round(r["py_peak"] / MB, 1), "rss_growth_mb": round(r["rss_growth"] / MB, 1),
           "rss_before_mb": round(r["rss_before"] / MB, 1),
           "traced_seconds": round(r["traced_seconds"], 3)}
    if floor is not None:
        out["ratio"] = round((r["rows"] / r["seconds"]) / (floor["rows"] / floor["seconds"]), 3)
    return out


def print_table(results: dict[str, dict[str, Any]], n: int) -> None:
    labels = {"parties": "parties import", "parties_floor": "parties floor (COPY)",
              "targets": "targets import", "targets_floor": "targets floor (COPY)"}
    head = (f"{'':<22}{'rows':>11}{'seconds':>10}{'rows/s':>10}{'ratio':>8}"
            f"{'py peak MB':>12}{'RSS growth MB':>15}")
    print()
    print(head)
    print("-" * len(head))
    for key, label in labels.items():
        r = results[key]
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "1"
        print(f"{label:<22}{r['rows']:>11,}{r['seconds']:>10.2f}{r['rows_per_s']:>10,}{ratio:>8}"
              f"{r['py_peak_mb']:>12.1f}{r['rss_growth_mb']:>15.1f}")
    small, big = results["parties_small"], results["parties"]
    print()
    print(f"memory at N/10 vs N (parties import, {small['rows']:,} vs {big['rows']:,} rows): "
          f"py peak {small['py_peak_mb']:.1f} vs {big['py_peak_mb']:.1f} MB, "
          f"RSS growth {small['rss_growth_mb']:.1f} vs {big['rss_growth_mb']:.1f} MB "
          f"({small['seconds']:.2f} s vs {big['seconds']:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="parties and targets (N)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL,
                        help="an admin URL of the server (the database is created beside it)")
    args = parser.parse_args(argv)
    n = args.rows
    if n < 10:
        parser.error("--rows must be at least 10")

    bench = Bench(args.database_url, f"campflow_bench_{os.getpid()}")
    bench.admin(sql.SQL("create database {}").format(sql.Identifier(bench.name)))
    print(f"database {bench.name}; {n:,} rows; Python {platform.python_version()}, "
          f"{os.cpu_count()} CPU(s)", flush=True)
    from campflow.store import db
    failures: list[str] = []
    try:
        bench.migrate_and_use()
        with tempfile.TemporaryDirectory(prefix="campflow_bench_") as tmp:
            tmpdir = Path(tmp)
            width = max(7, len(str(n)))
            parties, small = tmpdir / "parties.csv", tmpdir / "parties_small.csv"
            targets, spec = tmpdir / "targets.csv", tmpdir / "bench.yaml"
            start = time.perf_counter()
            write_parties(parties, n, width)
            write_parties(small, n // 10, width, seed=7)
            write_targets(targets, n, width)
            spec.write_text(OPERATION_YAML, encoding="utf-8")
            print(f"files written in {time.perf_counter() - start:.1f} s: parties "
                  f"{parties.stat().st_size / MB:.1f} MB, targets {targets.stat().st_size / MB:.1f} MB",
                  flush=True)

            from campflow.specs.apply import apply_path

            with db.session() as session:
                applied = apply_path(session, spec)
            print("applied: " + ", ".join(f"{a.kind} {a.code} {a.outcome}" for a in applied))
            db.reset_caches()
            for table, columns in FLOORS.items():
                bench.execute(sql.SQL("create table {} ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)))

            wipe_parties = "truncate party restart identity cascade"
            raw: dict[str, dict[str, Any]] = {}
            raw["parties_floor"] = bench.run("floor", parties, "truncate floor_party", "floor_party")
            raw["parties_small"] = bench.run("parties", small, wipe_parties)
            bench.execute(wipe_parties)
            raw["parties"] = bench.run("parties", parties, wipe_parties)
            raw["targets"] = bench.run("targets", targets,
                                       "truncate operation_target, operation_target_contact")
            raw["targets_floor"] = bench.run("floor", targets, "truncate floor_target", "floor_target")

            party_count = bench.scalar("select count(*) from party")
            target_count = bench.scalar(
                "select count(*) from operation_target t join operation o on o.id = t.operation_id "
                "where o.code = 'BENCH'")
        for label, got in (("party rows", party_count), ("operation_target rows of BENCH", target_count),
                           ("parties created (traced run)", raw["parties"]["traced_created"]),
                           ("targets added (traced run)", raw["targets"]["traced_created"]),
                           ("parties created (N/10, traced run)", raw["parties_small"]["traced_created"])):
            expected = n // 10 if "N/10" in label else n
            if got != expected:
                failures.append(f"{label}: {got:,}, expected {expected:,}")
    finally:
        db.reset_caches()
        if args.keep:
            print(f"kept database {bench.name}: {bench.url}")
        else:
            bench.admin(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(bench.name)))

    results = {
        "parties": summary(raw["parties"], raw["parties_floor"]),
        "parties_floor": summary(raw["parties_floor"]),
        "targets": summary(raw["targets"], raw["targets_floor"]),
        "targets_floor": summary(raw["targets_floor"]),
        "parties_small": summary(raw["parties_small"]),
    }
    print_table(results, n)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(json.dumps({
        "benchmark": "bench/import_targets.py", "rows": n, "python": platform.python_version(),
        "cpus": os.cpu_count(), **results,
        "memory_n10_vs_n": {
            "rows": [results["parties_small"]["rows"], results["parties"]["rows"]],
            "py_peak_mb": [results["parties_small"]["py_peak_mb"], results["parties"]["py_peak_mb"]],
            "rss_growth_mb": [results["parties_small"]["rss_growth_mb"],
                              results["parties"]["rss_growth_mb"]]},
        "verified": not failures}, ensure_ascii=False))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
