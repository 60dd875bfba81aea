"""The `import-answers` flow: `campflow answers import` started from the Prefect UI."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from campflow.paths import input_path, output_path
from campflow.store import db
from campflow.store.answer_imports import import_answers as run
from flows.run_operation import artifact_key

LABELS = {"rows": "rows in the call sheet", "answers_written": "answers written",
          "statuses_changed": "statuses changed", "callbacks": "callbacks set", "rejected": "bad rows skipped"}


@flow(name="import-answers", flow_run_name="{operation} {step} answers")
def import_answers(operation: str, step: str, path: str, skip_bad_rows: bool = False,
                   report: str | None = None) -> dict[str, int]:
    """Import a call sheet: the answers, statuses and callbacks of a step's parties; all or nothing.

    Args:
        operation: the operation code, e.g. SALON-ERP-2026.
        step: the code of the step the calls were made for, e.g. S2.
        path: the .xlsx or .csv call sheet with TIERS (party code), optional CONTACT, STATUT
            (new status), RAPPEL (call back at) and one column per question, e.g.
            appels-S2.xlsx; a relative path is read from the folder the flow runs in. Empty
            cells keep what was there.
        skip_bad_rows: import the good rows and skip the bad ones; otherwise one bad row stops
            the whole import and nothing is imported.
        report: write every bad row with its reason to this CSV file, e.g. rejets.csv.

    Returns:
        The counts: rows, answers_written, statuses_changed, callbacks and rejected.

    Raises:
        ImportRejected: bad rows (without skip_bad_rows), each with its row number.
    """
    sheet = input_path(path)
    with db.session() as session:
        result = run(session, operation, step, sheet, skip_bad_rows=skip_bad_rows, show_progress=False,
                     report=output_path(report))
    counts = asdict(result)
    create_table_artifact(key=artifact_key(operation, step, "answers-import"),
                          table=[{"count": LABELS[k], "value": v} for k, v in counts.items()],
                          description=f"Answers of {operation} step {step} imported from {sheet.name}")
    get_run_logger().info("%s: %s answers written, %s statuses changed, %s callbacks; %s bad rows skipped",
                          sheet, result.answers_written, result.statuses_changed, result.callbacks,
                          result.rejected)
    return counts
