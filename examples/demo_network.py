"""The distributed marketing walkthrough: a head office (SIEGE) offers four packages to its
stores (LYON, PARIS, MARSEILLE) — one per collaboration type — and each goes its way:

- PKG-SOLDES (simple, manual approval): the stores order, the head office approves or rejects;
  its emailing reaches only the customers of the stores approved.
- PKG-CATALOGUE (by_form, automatic approval): every store is registered at publishing, fills
  in its form (or unsubscribes); the catalogue e-mail is personalised with [[ORDER.FIELD]].
- PKG-PORTES-OUVERTES (by_campaign): the approved order gives LYON its own child operation,
  which LYON runs.
- PKG-FIDELITE (by_target_approval): a `local_approval` step sends each store its list of
  customers; the stores remove some and approve (on the command line or by returning the
  spreadsheet); the next run e-mails only what was approved.

Runs the same `campflow` commands a user would type (`--as LOGIN` names who acts), in this one
process so that Prefect's temporary server starts once. Publishing a package can be done once, so
the walkthrough runs on a database of its own: a fresh `campflow_network_demo` database in the
embedded PostgreSQL under `.campflow/` (created again at each run), or the empty database
CAMPFLOW_DATABASE_URL names.

The network's specs are dated for a walk on 2026-12-01 (packages open, the loyalty lists due in
January); the walkthrough applies a copy whose dates are moved by as many days as today is past
that, so that it always walks through the same moment of the campaign.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from email import policy
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
NETWORK = HERE / "network"
DATABASE = "campflow_network_demo"
FIDELITE = "FIDELITE-2027"
CHILD = "PORTES-OUVERTES-2027-LYON"
WRITTEN_FOR = dt.date(2026, 12, 1)  # the day the network's specs are dated for
SPEC_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})(?=T\d{2}:\d{2}|\b)")


class OrderOf(NamedTuple):
    """The id of an entity's latest order of a package, looked up when its step runs."""

    package: str
    entity: str


class Specs(NamedTuple):
    """The network's specs, dated for today (see `dated_specs`)."""


class LatestFile(NamedTuple):
    """The newest output file matching a pattern under the output folder."""

    pattern: str


class ListedParties(NamedTuple):
    """The first `count` party codes of an entity's list in FIDELITE-2027/A1 (each its own argument);
    with `contact`, also PARTY/CONTACT for the second contact of the next party that has two."""

    entity: str
    count: int
    contact: bool = False


Arg = str | OrderOf | LatestFile | ListedParties | Specs
Step = tuple[str, list[Arg] | Callable[[], None], bool]
# runs `campflow ARGS`: (exit code, standard output); shown=False captures the output for a lookup
Campflow = Callable[[list[str], bool], tuple[int, str]]


def in_process(args: list[str], shown: bool) -> tuple[int, str]:
    """`campflow ARGS` as the console script runs it; shown=False captures the output (and a
    failure is an error, as a lookup must succeed)."""
    from campflow.cli import main

    saved, sys.argv = sys.argv, ["campflow", *args]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured) if not shown else contextlib.nullcontext():
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    if not shown and code != 0:
        raise RuntimeError(f"`campflow {' '.join(args)}` failed with exit code {code}")
    return code, captured.getvalue()


def dated_specs(folder: Path, today: dt.date | None = None) -> Path:
    """A copy of the network's specs in `folder`, every date moved by the days between
    WRITTEN_FOR and today; returns the copy's path."""
    shift = dt.timedelta(days=((today or dt.date.today()) - WRITTEN_FOR).days)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(NETWORK, folder)
    for spec in folder.glob("*.yaml"):
        text = spec.read_text(encoding="utf-8")
        spec.write_text(SPEC_DATE.sub(lambda m: (dt.date.fromisoformat(m[1]) + shift).isoformat(), text),
                        encoding="utf-8")
    return folder


def resolve(arg: Arg, campflow: Campflow, specs: Path) -> list[str]:
    def looked_up(*args: str) -> list[dict]:
        code, out = campflow(list(args), False)
        if code != 0:
            raise RuntimeError(f"`campflow {' '.join(args)}` failed with exit code {code}")
        return json.loads(out)

    if isinstance(arg, Specs):
        return [str(specs)]
    if isinstance(arg, OrderOf):
        orders = looked_up("orders", "list", "--package", arg.package, "--as", "marketing", "--json")
        return [str(max(o["id"] for o in orders if o["entity"] == arg.entity))]
    if isinstance(arg, ListedParties):
        rows = looked_up("approvals", "show", FIDELITE, "A1", "--entity", arg.entity, "--as", "marketing", "--json")
        chosen = [row["party"] for row in rows[:arg.count]]
        if arg.contact:
            party = next(row for row in rows[arg.count:] if len(row["contacts"]) > 1)
            chosen.append(f"{party['party']}/{party['contacts'][1]['code']}")
        return chosen
    if isinstance(arg, LatestFile):
        return [str(latest(arg.pattern))]
    return [arg]


def output_root() -> Path:
    return Path(os.environ.get("CAMPFLOW_OUTPUT_DIR", "out")).resolve()


class Notifications:
    """The notification e-mails written (as .eml files) since the walkthrough started."""

    def __init__(self) -> None:
        self.since = time.time()
        self.seen: set[Path] = set()

    def folder(self) -> Path:
        return output_root() / "notifications"

    def new(self) -> list[Path]:
        found = [p for p in sorted(self.folder().glob("*.eml"))
                 if p not in self.seen and p.stat().st_mtime >= self.since - 1]
        self.seen.update(found)
        return found

    def show(self) -> None:
        """Print the notifications written since the last look: to whom, what."""
        found = self.new()
        print(f"{len(found)} new in {self.folder()} (no `notifications` channel saved: written as .eml files)")
        for path in found:
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            attached = [part.get_filename() for part in message.iter_attachments()]
            extra = f"  [attached: {', '.join(attached)}]" if attached else ""
            print(f"  to {message['To']}: {message['Subject']}{extra}")


NOTIFICATIONS = Notifications()


def latest(pattern: str) -> Path:
    found = sorted(output_root().glob(pattern))
    if not found:
        raise FileNotFoundError(f"nothing matches {output_root() / pattern}")
    return found[-1]


def paris_returns_its_list() -> None:
    """PARIS opens the list it received (a row per contact), writes "no" in KEEP on every row of
    one customer and on the second contact of another, and sends it back."""
    import openpyxl

    sent = latest(f"{FIDELITE}/*/*/{FIDELITE}-A1-PARIS.xlsx")
    returned = sent.with_name(f"{FIDELITE}-A1-PARIS-retour.xlsx")
    book = openpyxl.load_workbook(sent)
    sheet = book.active
    header = next(i for i, row in enumerate(sheet.iter_rows(values_only=True), start=1) if row[0] == "TIERS")
    rows = list(sheet.iter_rows(min_row=header + 1))
    first = rows[0][0].value
    second_contacts = [row for row, before in zip(rows[1:], rows) if row[0].value == before[0].value != first]
    for row in [r for r in rows if r[0].value == first] + second_contacts[:1]:
        row[-1].value = "no"
    contact = second_contacts[0]
    book.save(returned)
    print(f"(as PARIS would in its spreadsheet program) {sent.name}: KEEP set to no on every row of {first} and "
          f"on {contact[0].value}'s contact {contact[2].value}; saved as {returned}")


def personalised_subjects() -> None:
    """The catalogue e-mails: one subject per store, from its order's form values."""
    folder = latest("CATALOGUE-PRINTEMPS-2027/*/*/messages")
    subjects: dict[str, int] = {}
    for path in folder.glob("*.eml"):
        subject = email.message_from_bytes(path.read_bytes(), policy=policy.default)["Subject"]
        subjects[subject] = subjects.get(subject, 0) + 1
    print(f"{sum(subjects.values())} e-mails in {folder}:")
    for subject, count in sorted(subjects.items()):
        print(f"  {count:3} × {subject}")


STEPS: list[Step] = [
    ("Create or upgrade the schema", ["db", "upgrade"], True),
    ("Apply the reference data (the field dictionary of the parties file)",
     ["apply", str(HERE / "specs" / "reference.yaml")], True),
    ("Apply the network: SIEGE and its three stores, the distribution of customers by city, "
     "the four reference operations and their packages", ["apply", Specs()], True),
    ("Load the parties", ["parties", "import", str(DATA / "parties.csv"), "--quiet"], True),
    ("Load their contacts", ["contacts", "import", str(DATA / "contacts.csv"), "--quiet"], True),
    ("The network: who operates each entity (--as LOGIN), who reviews orders, where notifications go",
     ["entities", "list"], True),

    # ---- publishing
    ("The head office's packages, drafts for now", ["packages", "list", "--as", "marketing"], True),
    ("Publish the simple package: its audience is mailed the description, the brief and how to order",
     ["packages", "publish", "PKG-SOLDES", "--as", "marketing"], True),
    ("Publish the by_form package: automatic approval registers every store at once",
     ["packages", "publish", "PKG-CATALOGUE", "--as", "marketing"], True),
    ("Publish the by_campaign package", ["packages", "publish", "PKG-PORTES-OUVERTES", "--as", "marketing"], True),
    ("Publish the by_target_approval package: no audience, each store gets its list when the operation runs",
     ["packages", "publish", "PKG-FIDELITE", "--as", "marketing"], True),
    ("The notifications written", NOTIFICATIONS.show, True),
    ("What LYON sees", ["packages", "list", "--as", "lyon"], True),
    ("LYON reads the catalogue package and its form", ["packages", "show", "PKG-CATALOGUE", "--as", "lyon"], True),

    # ---- by_form, automatic
    ("The catalogue's orders, created approved at publishing",
     ["orders", "list", "--package", "PKG-CATALOGUE", "--as", "marketing"], True),
    ("LYON fills in its catalogue form",
     ["orders", "edit", OrderOf("PKG-CATALOGUE", "LYON"), "--as", "lyon", "--value", "MAGASIN=Lyon Bellecour",
      "--value", "REMISE=15 %", "--value", "HORAIRES=9h-19h du lundi au samedi"], True),
    ("PARIS fills in its own",
     ["orders", "edit", OrderOf("PKG-CATALOGUE", "PARIS"), "--as", "paris", "--value", "MAGASIN=Paris Opéra",
      "--value", "REMISE=10 %", "--value", "HORAIRES=10h-20h"], True),
    ("A store may not touch another's order: PARIS editing LYON's is refused",
     ["orders", "edit", OrderOf("PKG-CATALOGUE", "LYON"), "--as", "paris", "--value", "REMISE=20 %"], False),
    ("MARSEILLE unsubscribes (automatic approval: no one to ask)",
     ["orders", "cancel", OrderOf("PKG-CATALOGUE", "MARSEILLE"), "--as", "marseille",
      "--comment", "Pas de catalogue cette année"], True),

    # ---- simple, manual
    ("LYON orders the winter sales announcement", ["orders", "create", "PKG-SOLDES", "--as", "lyon"], True),
    ("PARIS too", ["orders", "create", "PKG-SOLDES", "--as", "paris"], True),
    ("MARSEILLE too", ["orders", "create", "PKG-SOLDES", "--as", "marseille"], True),
    ("The orders waiting for the head office", ["orders", "list", "--status", "pending", "--as", "marketing"], True),
    ("Approve LYON's", ["orders", "approve", OrderOf("PKG-SOLDES", "LYON"), "--as", "marketing",
                        "--comment", "Bonnes soldes !"], True),
    ("Approve PARIS's", ["orders", "approve", OrderOf("PKG-SOLDES", "PARIS"), "--as", "marketing"], True),
    ("Reject MARSEILLE's, saying why (the comment is mailed back)",
     ["orders", "reject", OrderOf("PKG-SOLDES", "MARSEILLE"), "--as", "marketing",
      "--comment", "Budget de janvier épuisé pour Marseille"], True),

    # ---- by_campaign
    ("PARIS orders the open days without their date: refused, the field named",
     ["orders", "create", "PKG-PORTES-OUVERTES", "--as", "paris", "--value", "MAGASIN=Paris Opéra"], False),
    ("LYON orders them with the form filled in",
     ["orders", "create", "PKG-PORTES-OUVERTES", "--as", "lyon", "--value", "MAGASIN=Lyon Bellecour",
      "--value", "DATE=2027-04-10"], True),
    ("The head office approves: LYON gets its child operation, targeted with its customers",
     ["orders", "approve", OrderOf("PKG-PORTES-OUVERTES", "LYON"), "--as", "marketing"], True),
    ("The history of that order", ["orders", "show", OrderOf("PKG-PORTES-OUVERTES", "LYON"), "--as", "lyon"], True),
    ("The child operations of the reference operation",
     ["ops", "children", "PORTES-OUVERTES-2027", "--as", "marketing"], True),
    ("PARIS may not run LYON's operation", ["run", CHILD, "--as", "paris"], False),
    ("LYON runs it: invitations personalised with its order, then its guest list",
     ["run", CHILD, "--as", "lyon"], True),
    ("The notifications written", NOTIFICATIONS.show, True),

    # ---- the head office's operations
    ("Target the winter sales at every customer (kind CLI)",
     ["targets", "add", "SOLDES-HIVER-2027", "--where", "kind = CLI"], True),
    ("Run them: only the customers of LYON and PARIS (approved) are e-mailed, not MARSEILLE's (rejected) "
     "nor those no store has", ["run", "SOLDES-HIVER-2027", "--as", "marketing"], True),
    ("Target the spring catalogue at customers and prospects",
     ["targets", "add", "CATALOGUE-PRINTEMPS-2027", "--where", "kind in (CLI, PRO)"], True),
    ("Run it: LYON's and PARIS's parties (PARIS keeps its 30 first), not MARSEILLE's (unsubscribed)",
     ["run", "CATALOGUE-PRINTEMPS-2027", "--as", "marketing"], True),
    ("Each store's catalogue e-mail says its name, discount and hours", personalised_subjects, True),

    # ---- by_target_approval
    ("Target the loyalty programme", ["targets", "add", FIDELITE, "--where", "kind in (CLI, PRO)"], True),
    ("Run it: A1 splits the target by city and sends each store its list (PARIS its 30 first, MARSEILLE half "
     "of its own); the others are excluded, and nothing goes further until a store approves",
     ["run", FIDELITE, "--as", "marketing"], True),
    ("The notifications written", NOTIFICATIONS.show, True),
    ("The lists, as the head office sees them", ["approvals", "list", FIDELITE, "--as", "marketing"], True),
    ("LYON reads its list", ["approvals", "show", FIDELITE, "A1", "--as", "lyon"], True),
    ("LYON removes two customers, and one contact (PARTY/CONTACT) of a customer it keeps",
     ["approvals", "remove", FIDELITE, "A1", ListedParties("LYON", 2, contact=True), "--as", "lyon"], True),
    ("LYON approves what is left", ["approvals", "approve", FIDELITE, "A1", "--as", "lyon"], True),
    ("PARIS answers in the spreadsheet it received", paris_returns_its_list, True),
    ("The returned spreadsheet is read back: its removals applied and the list approved in one go",
     ["approvals", "import", FIDELITE, "A1", LatestFile(f"{FIDELITE}/*/*/{FIDELITE}-A1-PARIS-retour.xlsx"),
      "--as", "paris"], True),
    ("MARSEILLE has not answered: its list waits until the deadline, then is dropped",
     ["approvals", "list", FIDELITE, "--as", "marketing"], True),
    ("Run again: the approved customers move on and are e-mailed; R1 mails each store a report",
     ["run", FIDELITE, "--as", "marketing"], True),
    ("Where every party of the loyalty programme stands", ["ops", "show", FIDELITE], True),
    ("The notifications written", NOTIFICATIONS.show, True),
]


def walk(specs: Path, campflow: Campflow = in_process) -> int:
    """Run every step in order (the network's specs read from `specs`); 1 (and which step) when
    one does not end as it should."""
    for title, action, must_succeed in STEPS:
        print(f"\n## {title}", flush=True)
        if callable(action):
            action()
            continue
        args = [word for arg in action for word in resolve(arg, campflow, specs)]
        print(f"\n$ campflow {' '.join(args)}", flush=True)
        code, _ = campflow(args, True)
        if must_succeed and code != 0:
            print(f"walkthrough failed at: {title}", file=sys.stderr)
            return 1
        if not must_succeed and code == 0:
            print(f"expected this to be refused: {title}", file=sys.stderr)
            return 1
    return 0


def database() -> str:
    """The walkthrough's database: CAMPFLOW_DATABASE_URL as it is, else a fresh one in the
    embedded PostgreSQL (set in the environment for the commands)."""
    url = os.environ.get("CAMPFLOW_DATABASE_URL")
    if url:
        return url
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from campflow.store import db
    server = db.embedded_url()
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'drop database if exists "{DATABASE}" with (force)'))
        conn.execute(text(f'create database "{DATABASE}"'))
    admin.dispose()
    url = make_url(server).set(database=DATABASE).render_as_string(hide_password=False)
    os.environ["CAMPFLOW_DATABASE_URL"] = url
    return url


def already_published(url: str) -> list[str]:
    """The walkthrough's packages already published in that database (it can run once per database)."""
    from sqlalchemy import create_engine, text

    from campflow.store.db import normalise_url

    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            if conn.execute(text("select to_regclass('package')")).scalar() is None:
                return []
            return list(conn.execute(text("select code from package where published_at is not null "
                                          "and code like 'PKG-%' order by code")).scalars())
    finally:
        engine.dispose()


def show_outputs(own_database: str | None) -> None:
    root = output_root()
    print(f"\n## The outputs, under {root}")
    print(f"  notifications (.eml): {NOTIFICATIONS.folder()} ({len(NOTIFICATIONS.seen)} written by this walkthrough)")
    for pattern, what in ((f"{CHILD}/*/*/messages", f"{CHILD}: LYON's invitations"),
                          (f"{CHILD}/*/*/*-X1.xlsx", f"{CHILD}: LYON's guest list"),
                          ("SOLDES-HIVER-2027/*/*/messages", "winter sales e-mails"),
                          ("CATALOGUE-PRINTEMPS-2027/*/*/messages", "catalogue e-mails, personalised per store"),
                          (f"{FIDELITE}/*/*/{FIDELITE}-A1-*.xlsx", "lists sent to the stores (and PARIS's returned one)"),
                          (f"{FIDELITE}/*/*/messages", "loyalty programme e-mails (approved customers only)"),
                          (f"{FIDELITE}/*/*/*-R1-*-report.xlsx", "reports to the stores")):
        found = sorted(root.glob(pattern))
        if not found:
            continue
        latest_one = found[-1]
        if latest_one.is_dir():
            print(f"  {what}: {latest_one} ({len(list(latest_one.iterdir()))} files)")
        else:
            print(f"  {what}: {latest_one.parent}/ ({', '.join(p.name for p in found if p.parent == latest_one.parent)})")
    if own_database:
        print(f"\nThe walkthrough's data is in the database {DATABASE} of the embedded PostgreSQL; to look around:")
        print(f"  export CAMPFLOW_DATABASE_URL='{own_database}'")
        print("  campflow orders list --as marketing; campflow approvals show FIDELITE-2027 A1 --as paris")


def main() -> int:
    os.environ.setdefault("COLUMNS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    given = bool(os.environ.get("CAMPFLOW_DATABASE_URL"))
    url = database()
    print(f"campflow network walkthrough on {'CAMPFLOW_DATABASE_URL' if given else 'a fresh database'} "
          f"({url.rsplit('/', 1)[-1].split('?')[0]})")
    published = already_published(url)
    if published:
        print(f"packages {', '.join(published)} are already published in this database, and a package is published "
              "once: point CAMPFLOW_DATABASE_URL at an empty database, or unset it to let the walkthrough make its "
              "own in the embedded PostgreSQL", file=sys.stderr)
        return 1
    specs = dated_specs(output_root() / "network-specs")
    moved = (dt.date.today() - WRITTEN_FOR).days
    print(f"the network's specs, dated for {WRITTEN_FOR}, are applied from {specs} with their dates moved by "
          f"{moved} days")
    if walk(specs) != 0:
        return 1
    show_outputs(None if given else url)
    print("\nDone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
