"""Benchmark the channel step kinds, each against its floor measured in the same run.

    .venv/bin/python bench/channels.py [--emails 20000] [--rows 100000] [--documents 2000]
                                       [--memory 100000] [--concurrency 2] [--keep]
                                       [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`campflow_bench_channels_<pid>`), migrates it, writes the step
templates into a temporary folder and applies one operation BENCH with three entry steps:

* MAIL, `emailing` to each party's DIRECTION contact: subject and HTML body personalised with
  three fields, a text alternative, a 20 kB PDF attachment;
* EXPORT, `spreadsheet_export` of eight columns (party and contact fields);
* DOC, `document_mailing` of a Word letter with six merge fields.

Parties (one DIRECTION contact each, accented names) are generated set-based. Then:

* e-mails: campflow's emailing kind (`tasks.kinds.emailing.send_step`: query, rendering, outbox,
  SMTP on `--concurrency` pooled connections) sending to a local SMTP sink (a minimal asyncio SMTP
  server in its own process that accepts everything: aiosmtpd, used by the tests, tops out
  near 350 messages/s here and would measure itself), against the floor: a plain `smtplib` loop on one connection
  sending the very same messages, rendered beforehand (campflow wrote them as `.eml` files
  through a file channel; the floor reads them into memory before its clock starts);
* export: the spreadsheet_export kind (query, workbook, statuses) against a bare openpyxl
  write-only loop writing the same rows, fetched beforehand;
* documents: the document_mailing kind (query, merge, one `.docx` with a section per party)
  against docx-mailmerge2 alone (`MailMerge.merge_templates` of the same values, fetched
  beforehand, with section breaks, then `write`);
* memory: the emailing kind sending `--memory` messages to the sink: growth of the peak RSS
  and tracemalloc's peak of Python allocations (a second run, traced).

Each measurement runs in a fresh process forked by the fork server (see import_targets.py).
Between runs the step's parties are put back `to_process` and the outbox emptied. Ratios are
floor seconds / campflow seconds for the same work (1 = as fast as the floor). The database
is dropped at the end unless --keep. Exit status: 0 when every count checked out.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import smtplib
import socket
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_targets import DEFAULT_ADMIN_URL, MB, Bench  # noqa: E402  (bench/ is no package)

GOALS = {"emails": 0.7, "export": 0.8, "documents": 0.8}
GOAL_MESSAGES_PER_S = 1000
EXPORT_COLUMNS = ["PCFIDX.TIERS", "PCFIDX.NOM", "PCFIDX.VILLE", "PCFIDX.CP", "PCFIDX.EMAIL",
                  "T2.PRENOM", "T2.NOM", "T2.FONCTION"]
FLOOR_EXPORT_SQL = """
    select p.code, p.name, p.city, p.postal_code, p.email, c.first_name, c.last_name, c.function
    from step_target st join party p on p.id = st.party_id
    left join lateral (select * from contact c where c.party_id = p.id order by c.code limit 1) c on true
    where st.step_id = %(step)s and st.status = 'to_process' order by p.code"""
DOC_FIELDS = {"Societe": "party.name", "Adresse": "party.address", "CP": "party.postal_code",
              "Ville": "party.city", "Prenom": "contact.first_name", "Nom": "contact.last_name"}
FLOOR_DOC_SQL = """
    select p.name, p.address, p.postal_code, p.city, c.first_name, c.last_name
    from step_target st join party p on p.id = st.party_id
    left join lateral (select * from contact c where c.party_id = p.id order by c.code limit 1) c on true
    where st.step_id = %(step)s and st.status = 'to_process' order by p.code limit %(limit)s"""

SPEC = """\
kind: Operation
code: BENCH
label: Banc d'essai des canaux
party_kinds: [prospect, client]
steps:
  - code: MAIL
    label: Invitation
    kind: emailing
    next: []
    email:
      subject: "Invitation au salon — [[PCFIDX.NOM]]"
      body: invitation.html
      text_body: invitation.txt
      attachments: [plan.pdf]
      contacts: {functions: [DIRECTION]}
  - code: EXPORT
    label: Export
    kind: spreadsheet_export
    next: []
    columns: [%(columns)s]
  - code: DOC
    label: Courrier
    kind: document_mailing
    next: []
    document:
      template: lettre.docx
      fields: {%(fields)s}
"""
HTML = """<html><body><p>Bonjour [[T2.PRENOM]] [[T2.NOM]],</p>
<p>La société <b>[[PCFIDX.NOM]]</b> de [[PCFIDX.VILLE]] est invitée au Salon ERP 2026, du 10 au
12 mars, Paris Expo, Porte de Versailles. Retrouvez le plan du salon en pièce jointe.</p>
<p>Votre badge vous attend à l'accueil ; présentez ce message.</p>
<p>Cordialement,<br>L'équipe du salon</p></body></html>
"""
TEXT = """Bonjour [[T2.PRENOM]] [[T2.NOM]],

La société [[PCFIDX.NOM]] de [[PCFIDX.VILLE]] est invitée au Salon ERP 2026, du 10 au 12 mars,
Paris Expo, Porte de Versailles. Retrouvez le plan du salon en pièce jointe.

Cordialement,
L'équipe du salon
"""
FIRST = ["Élodie", "Hélène", "François", "Jérôme", "Zoé", "Anaïs", "Loïc", "Cécile", "Noël", "Agnès"]
LAST = ["Lefèvre", "Müller", "Garçon", "Dupré", "Bénard", "Rousseau", "Chevalier", "Lemaître"]
WIPE = ("truncate party, contact, event, operation_target, operation_target_contact, "
        "step_target, step_target_contact, outbox restart identity cascade")
LOAD_PARTIES = """
    insert into party (code, kind, name, email, address, postal_code, city)
    select 'B' || lpad(i::text, 8, '0'), case when i %% 3 = 0 then 'client' else 'prospect' end,
           (array['Société', 'Atelier', 'Maison', 'Comptoir'])[1 + i %% 4] || ' ' ||
           (array['Dupré', 'Lefèvre', 'Garçon', 'Müller', 'Bénard'])[1 + i %% 5] || ' ' || i,
           'contact' || i || '@example.com', i || ' rue de la République',
           lpad((i %% 95000 + 1000)::text, 5, '0'),
           (array['Paris', 'Lyon', 'Besançon', 'Nîmes', 'Orléans'])[1 + i %% 5]
    from generate_series(1, %(n)s) i"""
LOAD_CONTACTS = """
    insert into contact (party_id, code, first_name, last_name, function, email)
    select id, 'C1', (%(first)s::text[])[1 + id %% 10], (%(last)s::text[])[1 + id %% 8], 'DIRECTION',
           'direction' || id || '@example.com'
    from party order by id"""
LOAD_TARGETS = "insert into operation_target (operation_id, party_id, source) select %(op)s, id, 'bench' from party order by id"
ENTER = """
    insert into step_target (step_id, party_id, operation_id)
    select %(step)s, party_id, %(op)s from operation_target where operation_id = %(op)s
    order by party_id limit %(limit)s"""


# ------------------------------------------------------------------------------ the SMTP sink


class _Sink:
    """Just enough SMTP to take messages as fast as a client sends them: commands are answered
    line by line; in DATA the payload is scanned for its end, never split into lines."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    async def serve(self, reader: Any, writer: Any) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        buffer = b""
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    buffer = b"\r\n"  # the end mark may follow the headers' first line break
                    while buffer.find(b"\r\n.\r\n") < 0:
                        chunk = await reader.read(65536)
                        if not chunk:
                            return
                        buffer = buffer[-4:] + chunk if len(buffer) > 65536 else buffer + chunk
                    with self.counter.get_lock():
                        self.counter.value += 1
                    writer.write(b"250 OK\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:  # MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        finally:
            writer.close()


def sink_main(port: int, counter: Any, ready: Any) -> None:
    """The SMTP sink's process: accepts every message and counts them."""
    import asyncio

    async def main() -> None:
        server = await asyncio.start_server(_Sink(counter).serve, "127.0.0.1", port, limit=1 << 20)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------ child side


def _context(session: Any, step: str, output: Path) -> Any:
    from campflow.core.compiler import compile_operation, thaw
    from campflow.core.kinds import StepContext
    from campflow.specs.export import export_operation
    from campflow.store import routing

    plan = compile_operation(export_operation(session, "BENCH"))
    op_id = _operation_id(session)
    step_id = routing.step_ids(session, op_id)[step]
    settings = thaw(plan.step(step).settings) or {}
    return StepContext(op_id, "BENCH", step_id, step, plan.step(step).kind, settings, output)


def _operation_id(session: Any) -> int:
    from sqlalchemy import text

    return session.scalar(text("select id from operation where code = 'BENCH'"))


def _smtp_channel(port: int, concurrency: int) -> Any:
    from prefect_email import EmailServerCredentials

    from blocks.channels import SmtpChannel

    return SmtpChannel(credentials=EmailServerCredentials(smtp_server="127.0.0.1", smtp_port=port,
                                                          smtp_type="INSECURE"),
                       sender="Salon ERP <salon@example.com>", concurrency=concurrency)


def _campflow(task: dict[str, Any]) -> dict[str, Any]:
    from campflow.store import db
    output = Path(task["output"])
    with db.session() as session:
        if task["what"] == "emails":
            from blocks.channels import FileChannel
            from tasks.kinds.emailing import send_step

            channel = (FileChannel(folder=str(output / "eml"), sender="Salon ERP <salon@example.com>")
                       if task.get("to_files") else _smtp_channel(task["port"], task["concurrency"]))
            outcome = send_step(session, _context(session, "MAIL", output), channel)
        else:
            from campflow.core.kinds import step_kind

            step = {"export": "EXPORT", "documents": "DOC"}[task["what"]]
            ctx = _context(session, step, output)
            outcome = step_kind(ctx.kind).run(session, ctx)
    return {"items": outcome.processed, "statuses": dict(outcome.statuses), "message": outcome.message,
            "outputs": [str(p) for p in outcome.outputs]}


def _floor_prepare(task: dict[str, Any]) -> Any:
    """What the floor gets before its clock starts: messages, rows or values."""
    if task["what"] == "emails":
        files = sorted(Path(task["eml_dir"]).glob("*.eml"))
        messages = []
        for path in files:
            data = path.read_bytes()
            head = data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
            to = next(line for line in head.split("\r\n") if line.lower().startswith("to:"))
            messages.append((to[to.rfind("<") + 1:to.rfind(">")] if "<" in to else to[3:].strip(), data))
        return messages
    with psycopg.connect(task["conninfo"]) as conn:
        if task["what"] == "export":
            return conn.execute(FLOOR_EXPORT_SQL, {"step": task["step_id"]}).fetchall()
        rows = conn.execute(FLOOR_DOC_SQL, {"step": task["step_id"], "limit": task["limit"]}).fetchall()
        names = list(DOC_FIELDS)
        return [dict(zip(names, (v or "" for v in row))) for row in rows]


def _floor(task: dict[str, Any], prepared: Any) -> dict[str, Any]:
    output = Path(task["output"])
    output.mkdir(parents=True, exist_ok=True)
    if task["what"] == "emails":
        connection = smtplib.SMTP("127.0.0.1", task["port"])
        try:
            for recipient, data in prepared:
                connection.sendmail("salon@example.com", [recipient], data)
        finally:
            connection.quit()
        return {"items": len(prepared)}
    if task["what"] == "export":
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet("Export")
        sheet.append(EXPORT_COLUMNS)
        for row in prepared:
            sheet.append(list(row))
        book.save(output / "floor.xlsx")
        return {"items": len(prepared)}
    from mailmerge import MailMerge

    with MailMerge(task["template"]) as document:
        document.merge_templates(prepared, separator="nextPage_section")
        document.write(str(output / "floor.docx"))
    return {"items": len(prepared)}


def measure(task: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process: wall time, RSS growth, optional tracemalloc peak."""
    os.environ["CAMPFLOW_DATABASE_URL"] = task["url"]
    import mailmerge  # noqa: F401
    import openpyxl  # noqa: F401
    from sqlalchemy import text

    import blocks.channels  # noqa: F401  (load the code before the baseline)
    import tasks.kinds  # noqa: F401
    import tasks.kinds.emailing  # noqa: F401
    from campflow.store import db

    db.reset_caches()
    with db.session() as session:
        session.execute(text("select 1"))
    prepared = _floor_prepare(task) if task["side"] == "floor" else None
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if task["trace"]:
        tracemalloc.start()
    start = time.perf_counter()
    outcome = _campflow(task) if task["side"] == "campflow" else _floor(task, prepared)
    seconds = time.perf_counter() - start
    py_peak = tracemalloc.get_traced_memory()[1] if task["trace"] else None
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {**outcome, "seconds": seconds, "py_peak": py_peak, "rss_before": rss_before,
            "rss_growth": max(0, rss_after - rss_before)}


def in_child(task: dict[str, Any]) -> dict[str, Any]:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
        return pool.submit(measure, task).result()


# ------------------------------------------------------------------------------ parent side


class ChannelBench(Bench):
    def query(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple]:
        with psycopg.connect(self.conninfo) as conn:
            return conn.execute(statement, params).fetchall()

    def step_id(self, code: str) -> int:
        return self.query("select s.id from step s join operation o on o.id = s.operation_id "
                          "where o.code = 'BENCH' and s.code = %(c)s", {"c": code})[0][0]

    def enter(self, step: str, limit: int) -> None:
        """The step holds exactly `limit` parties, all to_process; its outbox is empty."""
        step_id = self.step_id(step)
        op = self.query("select id from operation where code = 'BENCH'")[0][0]
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("delete from outbox where step_id = %(s)s", {"s": step_id})
            conn.execute("delete from step_target_contact where step_id = %(s)s", {"s": step_id})
            conn.execute("delete from step_target where step_id = %(s)s", {"s": step_id})
            conn.execute(ENTER, {"step": step_id, "op": op, "limit": limit})
        self.settle()

    def statuses(self, step: str) -> dict[str, int]:
        return dict(self.query("select status, count(*) from step_target where step_id = %(s)s group by status",
                               {"s": self.step_id(step)}))


def write_templates(folder: Path) -> None:
    from docx import Document

    (folder / "invitation.html").write_text(HTML, encoding="utf-8")
    (folder / "invitation.txt").write_text(TEXT, encoding="utf-8")
    (folder / "plan.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(20_000))
    letter = Document()
    for line in ("«Societe»", "«Adresse»", "«CP» «Ville»", "", "Madame, Monsieur «Prenom» «Nom»,",
                 "Veuillez trouver ci-joint notre catalogue 2026."):
        paragraph = letter.add_paragraph()
        for piece in _merge_pieces(line):
            if piece.startswith("«"):
                _add_field(paragraph, piece.strip("«»"))
            else:
                paragraph.add_run(piece)
    letter.save(folder / "lettre.docx")
    fields = ", ".join(f"{k}: {v}" for k, v in DOC_FIELDS.items())
    (folder / "bench.yaml").write_text(SPEC % {"columns": ", ".join(EXPORT_COLUMNS), "fields": fields},
                                       encoding="utf-8")


def _merge_pieces(line: str) -> list[str]:
    import re

    return [p for p in re.split(r"(«[^»]+»)", line) if p]


def _add_field(paragraph: Any, name: str) -> None:
    """A simple MERGEFIELD (w:fldSimple), as Word writes it."""
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    paragraph._p.append(parse_xml(
        f'<w:fldSimple {nsdecls("w")} w:instr=" MERGEFIELD {name} \\* MERGEFORMAT ">'
        f'<w:r><w:t>«{name}»</w:t></w:r></w:fldSimple>'))


def run_pair(bench: ChannelBench, what: str, step: str, n: int, base: dict[str, Any],
             counter: Any) -> dict[str, Any]:
    """campflow then the floor on the same n parties, each from the same state."""
    bench.enter(step, n)
    mine = in_child({**base, "what": what, "side": "campflow", "trace": False,
                     "output": str(Path(base["tmp"]) / f"{what}-campflow")})
    done = bench.statuses(step)
    prepared_for_floor = {}
    if what == "emails":  # the same messages, rendered by campflow into .eml files for the floor
        bench.enter(step, n)
        eml = in_child({**base, "what": what, "side": "campflow", "trace": False, "to_files": True,
                        "output": str(Path(base["tmp"]) / "emails-files")})
        prepared_for_floor["eml_dir"] = str(Path(base["tmp"]) / "emails-files" / "eml")
        prepared_for_floor["rendered"] = eml["items"]
    bench.enter(step, n)
    floor = in_child({**base, **prepared_for_floor, "what": what, "side": "floor", "trace": False,
                      "step_id": bench.step_id(step), "limit": n,
                      "output": str(Path(base["tmp"]) / f"{what}-floor")})
    ratio = floor["seconds"] / mine["seconds"]
    result = {"n": n, "campflow_seconds": round(mine["seconds"], 3), "floor_seconds": round(floor["seconds"], 3),
              "campflow_per_s": round(n / mine["seconds"]), "floor_per_s": round(floor["items"] / floor["seconds"]),
              "ratio": round(ratio, 3), "goal": GOALS[what], "met": ratio >= GOALS[what],
              "statuses": done, "floor_items": floor["items"], "message": mine["message"],
              "campflow_rss_growth_mb": round(mine["rss_growth"] / MB, 1)}
    ok = done.get("ok_continue") == n and floor["items"] == n
    if what == "emails":
        ok = ok and counter.value >= 2 * n
        result["sink_received"] = counter.value
        result["goal_messages_per_s_met"] = n / mine["seconds"] >= GOAL_MESSAGES_PER_S
    result["checked"] = ok
    print(f"  {what:<10} n={n:>8,}  campflow {mine['seconds']:8.2f} s ({result['campflow_per_s']:>7,}/s)  "
          f"floor {floor['seconds']:8.2f} s ({result['floor_per_s']:>7,}/s)  ratio {ratio:.2f} "
          f"(goal {GOALS[what]}){'' if ok else '  COUNTS WRONG'}", flush=True)
    return result


def memory(bench: ChannelBench, n: int, base: dict[str, Any]) -> dict[str, Any]:
    """The emailing kind on n recipients: RSS growth untraced, then tracemalloc's peak."""
    out = {}
    for trace in (False, True):
        bench.enter("MAIL", n)
        r = in_child({**base, "what": "emails", "side": "campflow", "trace": trace,
                      "output": str(Path(base["tmp"]) / f"memory-{trace}")})
        key = "traced" if trace else "plain"
        out[key] = {"seconds": round(r["seconds"], 2), "rss_growth_mb": round(r["rss_growth"] / MB, 1),
                    "rss_before_mb": round(r["rss_before"] / MB, 1),
                    "py_peak_mb": round(r["py_peak"] / MB, 1) if r["py_peak"] else None}
    print(f"  memory     n={n:>8,}  RSS growth {out['plain']['rss_growth_mb']} MB "
          f"({out['plain']['seconds']} s), Python peak {out['traced']['py_peak_mb']} MB", flush=True)
    return {"n": n, **out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=20_000, help="messages of the e-mail comparison")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the export comparison")
    parser.add_argument("--documents", type=int, default=2_000, help="parties of the merge comparison")
    parser.add_argument("--memory", type=int, default=100_000, help="recipients of the memory run (0: none)")
    parser.add_argument("--concurrency", type=int, default=2, help="SMTP connections of campflow's channel")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL,
                        help="an admin URL of the server (the database is created beside it)")
    args = parser.parse_args(argv)
    n_parties = max(args.emails, args.rows, args.documents, args.memory)
    bench = ChannelBench(args.database_url, f"campflow_bench_channels_{os.getpid()}")
    bench.admin(sql.SQL("create database {}").format(sql.Identifier(bench.name)))
    port = free_port()
    context = multiprocessing.get_context("spawn")
    counter, ready = context.Value("q", 0), context.Event()
    sink = context.Process(target=sink_main, args=(port, counter, ready), daemon=True)
    sink.start()
    ready.wait(30)
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    try:
        bench.migrate_and_use()
        with tempfile.TemporaryDirectory(prefix="campflow-bench-") as tmp:
            folder = Path(tmp)
            write_templates(folder)
            from campflow.specs.apply import apply_path
            from campflow.store import db

            bench.execute(WIPE)
            with psycopg.connect(bench.conninfo, autocommit=True) as conn:
                conn.execute(LOAD_PARTIES, {"n": n_parties})
                conn.execute(LOAD_CONTACTS, {"first": FIRST, "last": LAST})
            with db.session() as session:
                apply_path(session, folder / "bench.yaml")
            op = bench.query("select id from operation where code = 'BENCH'")[0][0]
            with psycopg.connect(bench.conninfo, autocommit=True) as conn:
                conn.execute(LOAD_TARGETS, {"op": op})
            print(f"{n_parties:,} parties with a contact each; SMTP sink on 127.0.0.1:{port}", flush=True)
            base = {"url": bench.url, "conninfo": bench.conninfo, "tmp": tmp, "port": port,
                    "concurrency": args.concurrency, "template": str(folder / "lettre.docx")}
            counter.value = 0
            results["emails"] = run_pair(bench, "emails", "MAIL", args.emails, base, counter)
            results["export"] = run_pair(bench, "export", "EXPORT", args.rows, base, counter)
            results["documents"] = run_pair(bench, "documents", "DOC", args.documents, base, counter)
            if args.memory:
                results["memory"] = memory(bench, args.memory, base)
    finally:
        sink.terminate()
        sink.join(10)
        if not args.keep:
            from campflow.store import db
            db.reset_caches()
            bench.admin(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(bench.name)))
    print(json.dumps(results, indent=2, default=str))
    return 0 if all(results[k]["checked"] for k in ("emails", "export", "documents")) else 1


if __name__ == "__main__":
    sys.exit(main())
