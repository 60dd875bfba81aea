"""The `import-targets` flow: `campflow targets import` started from the Prefect UI."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from campflow.paths import input_path, output_path
from campflow.store import db
from campflow.store.targeting import import_targets as run
from flows.run_operation import artifact_key

LABELS = {"rows": "rows in the file", "parties_added": "parties targeted", "contacts_added": "contacts targeted",
          "already": "parties already targeted", "rejected": "bad rows skipped",
          "left_out": "rows left out: a kind the operation does not target"}


@flow(name="import-targets", flow_run_name="{operation} targets")
def import_targets(operation: str, path: str, skip_bad_rows: bool = False,
                   report: str | None = None) -> dict[str, int]:
    """Target the parties (and contacts) listed in a spreadsheet; all or nothing.

    Args:
        operation: the operation code, e.g. SALON-ERP-2026.
        path: the .xlsx or .csv file with FICHE (CLI, PRO…), TIERS (party code) and, optionally,
            CONTACT columns, e.g. data/targets.xlsx; a relative path is read from the folder the
            flow runs in.
        skip_bad_rows: import the good rows and skip the bad ones; otherwise one bad row stops
            the whole import and nothing is imported.
        report: write every bad row with its reason to this CSV file, e.g. rejets.csv.

    Returns:
        The counts: rows, parties_added, contacts_added, rejected, already (targeted before) and
        left_out (rows of a party kind the operation does not target, not imported).

    Raises:
        ImportRejected: bad rows (without skip_bad_rows), each with its row number.
    """
    sheet = input_path(path)
    with db.session() as session:
        result = run(session, operation, sheet, skip_bad_rows=skip_bad_rows, show_progress=False,
                     report=output_path(report))
    counts = {**{k: v for k, v in asdict(result).items() if k in LABELS}, "left_out": sum(result.left_out.values())}
    create_table_artifact(key=artifact_key(operation, "targets-import"),
                          table=[{"count": LABELS[k], "value": v} for k, v in counts.items()],
                          description=f"Targets of {operation} imported from {sheet.name}")
    get_run_logger().info("%s: %s parties targeted, %s contacts; %s already targeted; %s bad rows skipped",
                          sheet, result.parties_added, result.contacts_added, result.already, result.rejected)
    if result.note:
        get_run_logger().info("%s: %s", sheet, result.note)
    return counts
