"""Load on the portal: concurrent sessions browsing packages and lists and placing orders.

    .venv/bin/python bench/portal.py [--sessions 50] [--seconds 60] [--think 1.0] [--ramp 10]
                                     [--workers 2] [--stores 50] [--parties 100]
                                     [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`campflow_bench_portal_<pid>`), migrates it and applies a network of
`--stores` local stores under a head office, a by_form package offered to all of them, and an
operation BENCH whose `local_approval` step A1 splits `--parties` parties per store (two
contacts each) by city; `campflow run BENCH` sends each store its list. Each store gets an
account (`store01`…), with its password set.

The portal runs as `campflow portal --workers N` (uvicorn), beside a background Prefect server
(the notifications channel is loaded from it, as in use). `--sessions` clients (asyncio + httpx,
in this process) log in as stores over the first `--ramp` seconds, then each loops for
`--seconds`, reading each page for `--think` seconds (0.5× to 1.5×) before the next click:
the packages page, the package with its order form, an order placed (or, when the store has
one, its page and then a cancellation, so the next loop orders again), its lists, a page of its
list, a search in it. The floor, measured first in the same run with as many clients and no
pause, is the login page: a rendered template and a session cookie, no query. Reported:
requests, errors, p50/p95/p99 latency per page and for all browsing (logging in, an argon2 hash
by design, on its own line), and that p95 against the floor's. The goal is
p95 < 200 ms with 0 errors on two cores (the load generator shares them with the server and
PostgreSQL). Exit status: 0 when no request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ADMIN_URL = os.environ.get("CAMPFLOW_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench password 1"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ORDER_ID = re.compile(r"/orders/(\d+)")


def network_yaml(stores: int) -> str:
    docs = ["kind: Entity\ncode: HQ\nlabel: Siège\ntype: central\noperators: [marketing]\n"]
    docs += [f"kind: Entity\ncode: S{n:02}\nlabel: Magasin {n:02}\nparent: HQ\nemails: [s{n:02}@stores.test]\n"
             for n in range(1, stores + 1)]
    rules = "\n".join(f"  - {{value: Ville{n:02}, entity: S{n:02}}}" for n in range(1, stores + 1))
    docs.append(f"kind: Distribution\ncode: STORES\nlabel: Stores by city\nfield: VILLE\nrules:\n{rules}\n")
    docs.append("kind: Operation\ncode: REF\nlabel: Catalogue de référence\n")
    audience = ", ".join(f"S{n:02}" for n in range(1, stores + 1))
    docs.append(f"""kind: Package
code: PKG-BENCH
label: Catalogue personnalisé
operation: REF
owner: HQ
collaboration: by_form
timezone: Europe/Paris
visible_from: 2020-01-01T00:00
visible_until: 2099-12-31T00:00
registration_deadline: 2099-06-30T18:00
audience: [{audience}]
description: Un catalogue à votre nom.
form:
  - {{code: MAGASIN, label: Nom du magasin, required: true}}
  - {{code: REMISE, label: Remise, type: choice, choices: ["10 %", "15 %"], required: true}}
  - {{code: NB, label: Exemplaires, type: number}}
""")
    docs.append("""kind: Operation
code: BENCH
label: Fidélité
timezone: Europe/Paris
party_kinds: [prospect, client]
steps:
  - code: A1
    label: Validation par les magasins
    kind: local_approval
    local_approval: {distribution: STORES, deadline: 2099-01-10T18:00}
""")
    return "---\n".join(docs)


FILL = [
    """insert into party (code, kind, name, city, email)
       select 'P' || lpad(i::text, 6, '0'), case when mod(i, 2) = 0 then 'client' else 'prospect' end,
              'Société ' || i, 'Ville' || lpad((1 + mod(i, %(stores)s))::text, 2, '0'), 'p' || i || '@example.com'
       from generate_series(1, %(parties)s * %(stores)s) i""",
    """insert into contact (party_id, code, last_name, first_name, function, email)
       select p.id, 'C' || k, 'Nom' || k, 'Prénom', case k when 1 then 'DIRECTION' else 'ACHATS' end,
              'c' || k || '.' || p.code || '@example.com'
       from party p, generate_series(1, 2) k""",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def campflow(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "campflow", *args], env=env, cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"campflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def prepare(env: dict[str, str], stores: int, parties: int, conninfo: str, folder: Path) -> None:
    spec = folder / "network.yaml"
    spec.write_text(network_yaml(stores), encoding="utf-8")
    campflow(env, "db", "upgrade")
    campflow(env, "apply", str(spec))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in FILL:
            conn.execute(statement, {"stores": stores, "parties": parties})
        conn.execute("vacuum analyze")
    campflow(env, "packages", "publish", "PKG-BENCH", "--as", "marketing")
    campflow(env, "targets", "add", "BENCH", "--where", "kind in (CLI, PRO)")
    campflow(env, "run", "BENCH", "--as", "marketing")
    from campflow.store import accounts, db

    os.environ["CAMPFLOW_DATABASE_URL"] = env["CAMPFLOW_DATABASE_URL"]
    db.reset_caches()
    with db.session() as session:
        for n in range(1, stores + 1):
            account = accounts.create(session, f"store{n:02}", f"store{n:02}@stores.test", ["local_operator"],
                                      entity=f"S{n:02}")
            accounts.set_password(session, account, PASSWORD)
    db.reset_caches()


class Recorder:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, page: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.times.setdefault(page, []).append(seconds)
        if not ok:
            self.errors[page] = self.errors.get(page, 0) + 1
            if len(self.samples) < 5:
                self.samples.append(f"{page}: {detail}")


async def timed(client: httpx.AsyncClient, recorder: Recorder, page: str, method: str, url: str,
                expect: tuple[int, ...] = (200,), **kwargs) -> httpx.Response | None:
    start = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        recorder.add(page, time.perf_counter() - start, False, repr(exc))
        return None
    ok = response.status_code in expect
    recorder.add(page, time.perf_counter() - start, ok, f"{response.status_code} {response.text[:200]}")
    return response


def token(response: httpx.Response | None) -> str:
    found = CSRF.search(response.text) if response is not None else None
    return found.group(1) if found else ""


async def floor_session(base: str, until: float, recorder: Recorder) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while time.monotonic() < until:
            await timed(client, recorder, "login page (floor)", "GET", "/login")


async def store_session(base: str, login: str, until: float, recorder: Recorder, think: float,
                        ramp: float) -> None:
    pause = random.Random(login)
    await asyncio.sleep(pause.uniform(0, ramp))  # people arrive over the first seconds, not all at once
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        page = await timed(client, recorder, "login page", "GET", "/login")
        signed = await timed(client, recorder, "login (POST)", "POST", "/login", expect=(303,),
                             data={"login": login, "password": PASSWORD, "next": "/", "csrf_token": token(page)})
        if signed is None or signed.status_code != 303:
            return
        order: str | None = None
        n = 0

        async def reads() -> None:  # a person reads the page before the next click
            if think:
                await asyncio.sleep(pause.uniform(0.5 * think, 1.5 * think))

        while time.monotonic() < until:
            n += 1
            await timed(client, recorder, "packages", "GET", "/packages")
            await reads()
            package = await timed(client, recorder, "package + form", "GET", "/packages/PKG-BENCH")
            await reads()
            if order is None:
                placed = await timed(client, recorder, "order (POST)", "POST", "/packages/PKG-BENCH/order",
                                     expect=(303,), data={"csrf_token": token(package), "v_MAGASIN": f"Magasin {login}",
                                                          "v_REMISE": "15 %", "v_NB": str(n)})
                found = ORDER_ID.search(placed.headers.get("location", "")) if placed is not None else None
                order = found.group(1) if found else None
            else:
                shown = await timed(client, recorder, "order page", "GET", f"/orders/{order}")
                await timed(client, recorder, "cancel (POST)", "POST", f"/orders/{order}/cancel", expect=(303,),
                            data={"csrf_token": token(shown), "comment": "bench"})
                order = None
            await timed(client, recorder, "lists", "GET", "/lists")
            await reads()
            await timed(client, recorder, "list page", "GET", f"/lists/BENCH/A1?page={1 + n % 2}")
            await reads()
            await timed(client, recorder, "list search", "GET", f"/lists/BENCH/A1?q=Soci%C3%A9t%C3%A9+{n % 9 + 1}")


def stop_servers(env: dict[str, str]) -> None:
    """Stop the background Prefect server under the bench's CAMPFLOW_HOME (before that folder goes)."""
    subprocess.run([sys.executable, "-m", "campflow", "stop"], env=env, cwd=ROOT, capture_output=True, check=False)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(name: str, recorder: Recorder, seconds: float) -> tuple[float, int, int]:
    """The table; the p95 of browsing (logging in is argon2 by design, reported on its own line)."""
    every = [t for page, times in recorder.times.items() if not page.startswith("login") or "floor" in page
             for t in times]
    errors = sum(recorder.errors.values())
    print(f"\n{name}: {len(every)} requests in {seconds:.0f} s ({len(every) / seconds:.0f}/s), {errors} errors")
    print(f"{'page':<22}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for page, times in recorder.times.items():
        print(f"{page:<22}{len(times):>9}{recorder.errors.get(page, 0):>8}{statistics.median(times) * 1000:>9.0f}"
              f"{percentile(times, 0.95) * 1000:>9.0f}{percentile(times, 0.99) * 1000:>9.0f}")
    print(f"{'all but logging in':<22}{len(every):>9}{errors:>8}{statistics.median(every) * 1000:>9.0f}"
          f"{percentile(every, 0.95) * 1000:>9.0f}{percentile(every, 0.99) * 1000:>9.0f}")
    for sample in recorder.samples:
        print(f"  error: {sample}")
    return percentile(every, 0.95), len(every), errors


async def load(base: str, sessions: int, seconds: float, stores: int, think: float,
               ramp: float) -> tuple[Recorder, Recorder]:
    floor = Recorder()
    until = time.monotonic() + min(15.0, seconds)
    await asyncio.gather(*(floor_session(base, until, floor) for _ in range(sessions)))
    portal = Recorder()
    until = time.monotonic() + seconds
    await asyncio.gather(*(store_session(base, f"store{1 + i % stores:02}", until, portal, think, ramp)
                           for i in range(sessions)))
    return floor, portal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50, help="concurrent browser sessions")
    parser.add_argument("--seconds", type=float, default=60, help="how long the load lasts")
    parser.add_argument("--stores", type=int, default=50, help="local stores, one account each")
    parser.add_argument("--think", type=float, default=1.0,
                        help="seconds a person reads a page before the next click (0.5× to 1.5× of it; 0: none)")
    parser.add_argument("--ramp", type=float, default=10, help="seconds over which the sessions log in")
    parser.add_argument("--workers", type=int, default=2, help="processes serving the portal")
    parser.add_argument("--parties", type=int, default=100, help="parties per store's list (two contacts each)")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL,
                        help="an admin URL of the server (the database is created beside it)")
    args = parser.parse_args(argv)
    if args.sessions > args.stores:
        parser.error("--sessions cannot exceed --stores: a store has one live order at a time")
    admin = make_url(args.database_url).set(drivername="postgresql")
    name = f"campflow_bench_portal_{os.getpid()}"
    admin_conninfo = admin.render_as_string(hide_password=False)
    conninfo = admin.set(database=name).render_as_string(hide_password=False)
    url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    port = free_port()
    portal = None
    tmp = tempfile.mkdtemp(prefix="campflow_bench_portal_")  # removed last: the Prefect server's home is in it
    env = {**os.environ, "CAMPFLOW_DATABASE_URL": url, "CAMPFLOW_OUTPUT_DIR": str(Path(tmp) / "out"),
           # a background Prefect server, as in use: the portal loads the notifications channel from it
           "CAMPFLOW_PREFECT_SERVER": "local", "CAMPFLOW_SECRET_KEY": "bench-" + "k" * 40,
           # every session logs in from this one address: lift the per-address limit of public posts
           "CAMPFLOW_PORTAL_PUBLIC_RATE": "100000",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "CAMPFLOW_HOME": str(Path(tmp) / "home")}
    try:
        log = open(Path(tmp) / "portal.log", "w")  # noqa: SIM115 - closed with the folder
        started = time.perf_counter()
        prepare(env, args.stores, args.parties, conninfo, Path(tmp))
        print(f"prepared {args.stores} stores, {args.stores * args.parties} parties in "
              f"{time.perf_counter() - started:.0f} s")
        portal = subprocess.Popen([sys.executable, "-m", "campflow", "portal", "--port", str(port),
                                   "--workers", str(args.workers)], env=env,
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if portal.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the portal did not start: {(Path(tmp) / 'portal.log').read_text()}")
            time.sleep(0.3)
        floor, measured = asyncio.run(load(base, args.sessions, args.seconds, args.stores, args.think,
                                           args.ramp))
        floor_p95, _, floor_errors = report(f"floor: the login page, {args.sessions} sessions", floor,
                                            min(15.0, args.seconds))
        p95, _, errors = report(f"portal: {args.sessions} store sessions", measured, args.seconds)
        if errors:
            print("the portal's log:", (Path(tmp) / "portal.log").read_text()[-3000:])
        print(f"\np95 {p95 * 1000:.0f} ms (goal < 200 ms), floor p95 {floor_p95 * 1000:.0f} ms: "
              f"ratio floor/portal {floor_p95 / p95:.2f}; {errors + floor_errors} errors")
    finally:
        if portal is not None:
            portal.terminate()
            portal.wait(20)
        stop_servers(env)
        shutil.rmtree(tmp, ignore_errors=True)
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    return 0 if errors + floor_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
