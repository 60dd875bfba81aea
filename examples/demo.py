"""The demo: apply the example specs, load the example data set, target the trade show and run
it (invitations written as .eml files, call sheet), then run a prospecting operation end to end
(export, call sheet answers, routing, the catalogue letter merged, its address labels).

Runs the same `campflow` commands a user would type, on the embedded PostgreSQL under
`.campflow/` unless CAMPFLOW_DATABASE_URL names a database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
OPERATION = "SALON-ERP-2026"
PROSPECTING = "PROSPECTION-LYON-2026"

STEPS: list[tuple[str, list[str], bool]] = [
    ("Create or upgrade the schema", ["db", "upgrade"], True),
    ("Apply the specs (reference data, questionnaires, operations)", ["apply", str(HERE / "specs")], True),
    ("Load the parties", ["parties", "import", str(DATA / "parties.csv"), "--quiet"], True),
    ("Load their contacts", ["contacts", "import", str(DATA / "contacts.csv"), "--quiet"], True),
    ("A target file with bad rows is refused as a whole, every bad row named",
     ["targets", "import", OPERATION, str(DATA / "targets-bad.csv"), "--quiet"], False),
    ("Target the trade show from the CRM export (header on row 3)",
     ["targets", "import", OPERATION, str(DATA / "targets.xlsx"), "--quiet"], True),
    ("Add the Lyon prospects with a condition",
     ["targets", "add", OPERATION, "--where", "CP matches '69*' and FICHE = PRO"], True),
    ("The operation tree", ["ops", "tree"], True),
    ("The operation", ["ops", "show", OPERATION], True),
    ("Its first targets", ["targets", "list", OPERATION, "--sort", "city", "--limit", "15"], True),
    ("Run the trade show: S1 e-mails the invitations (no SMTP channel saved, so they are written as "
     ".eml files), S2 writes the operators' call sheet", ["run", OPERATION], True),
    ("The channels: none saved, so e-mails go to .eml files", ["channels", "list"], True),
    ("Prospecting the Lyon area: target it", ["targets", "add", PROSPECTING, "--where", "CP matches '69*'"], True),
    ("Run it: the call list is exported, the parties wait for the operators' calls",
     ["run", PROSPECTING], True),
    ("The operators' call sheet comes back: answers, statuses, callbacks",
     ["answers", "import", PROSPECTING, "APPEL", str(DATA / "callsheet-answers.xlsx"), "--quiet"], True),
    ("Run again: the answers route parties to the catalogue letter (merged into one Word document) "
     "and its address labels, and to the follow-up call",
     ["run", PROSPECTING], True),
    ("Who is where now", ["targets", "list", PROSPECTING, "--step", "CATALOGUE", "--limit", "10"], True),
]


def run(args: list[str]) -> int:
    print(f"\n$ campflow {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "campflow", *args], check=False).returncode


def show_outputs() -> None:
    """Where the steps wrote their files."""
    root = Path(os.environ.get("CAMPFLOW_OUTPUT_DIR", "out")).resolve()
    print(f"\n## The outputs, under {root}")
    for pattern, what in ((f"{OPERATION}/*/*/messages", "invitation e-mails (.eml) of S1"),
                          (f"{OPERATION}/*/*/*-S2-*.xlsx", "call sheet of S2"),
                          (f"{PROSPECTING}/*/*/*-LISTE.xlsx", "call list exported by LISTE"),
                          (f"{PROSPECTING}/*/*/*-CATALOGUE.docx", "catalogue letter, a section per party"),
                          (f"{PROSPECTING}/*/*/*-ETIQUETTES.docx", "address labels (Avery L7160)")):
        found = sorted(root.glob(pattern))
        if found:
            latest = found[-1]
            count = f" ({len(list(latest.iterdir()))} files)" if latest.is_dir() else ""
            print(f"  {what}: {latest}{count}")


def show_prefect_ui() -> None:
    """Where the demo's flow runs, their step task runs and artifacts can be opened."""
    from campflow.orchestration import local_server
    api = os.environ.get("PREFECT_API_URL")
    found = None if api else local_server.running()
    ui = api.removesuffix("/").removesuffix("/api") if api else found.ui if found else None
    if ui is None:  # CAMPFLOW_PREFECT_SERVER=ephemeral: the runs went with the command's own server
        return
    print(f"\n## The Prefect UI: {ui}/runs")
    print("  the run-operation flow runs of SALON-ERP-2026 and PROSPECTION-LYON-2026, a task run per step "
          "(S1 emailing, APPEL phoning…) and their artifacts (counts per status, routes taken)")
    if found:
        print(f"  a local server, its state in {local_server.state_file().parent / 'prefect.db'}; "
              "`campflow stop` stops it and the embedded PostgreSQL")


def main() -> int:
    os.environ.setdefault("COLUMNS", "120")
    where = os.environ.get("CAMPFLOW_DATABASE_URL") or f"embedded PostgreSQL in {Path('.campflow').resolve()}"
    print(f"campflow demo on {where}")
    for title, args, must_succeed in STEPS:
        print(f"\n## {title}")
        code = run(args)
        if must_succeed and code != 0:
            print(f"demo failed at: campflow {' '.join(args)}", file=sys.stderr)
            return code
        if not must_succeed and code == 0:
            print("expected this file to be refused", file=sys.stderr)
            return 1
    show_outputs()
    show_prefect_ui()
    import portal_demo  # the network's packages and lists, and demo accounts for the portal

    if portal_demo.main() != 0:
        print("demo failed while preparing the portal", file=sys.stderr)
        return 1
    print("\nDone. Try: make portal, campflow ops show PROSPECTION-LYON-2026, campflow run SALON-ERP-2026 --dry-run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
