"""The `sync-schedules` flow: Prefect's operation schedules made to match the database."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from campflow.orchestration import schedules


@flow(name="sync-schedules", flow_run_name="sync schedules")
def sync_schedules(operations: list[str] | None = None) -> list[dict[str, Any]]:
    """Create, update or remove the run-operation schedules so that they follow each
    operation's dates, timezone and cadence.

    Args:
        operations: only these operation codes, e.g. ["SALON-ERP-2026"] (default: every operation;
            schedules of deleted operations are then removed too).
    """
    changes = schedules.sync(operations)
    logger = get_run_logger()
    for change in changes:
        if change.action not in ("unchanged", "none"):
            logger.info("%s: schedule %s (%s)", change.operation, change.action, change.detail)
    rows = [asdict(c) for c in changes]
    create_table_artifact(key="campflow-schedules", table=rows or [{"operation": "none"}],
                          description="Operation schedules after the sync")
    return rows
