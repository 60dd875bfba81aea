"""The `apply-specs` flow: `campflow apply` started from the Prefect UI."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from campflow.orchestration.schedules import after_apply
from campflow.paths import input_path
from campflow.specs.apply import Applied, apply_path
from campflow.store import db

OUTCOMES = ("created", "updated", "unchanged", "checked")


@flow(name="apply-specs", flow_run_name="apply {path}")
def apply_specs(path: str, dry_run: bool = False) -> dict[str, Any]:
    """Apply spec documents (operations, questionnaires, reference lists); all or nothing.

    Args:
        path: a spec file (.yaml) or a folder of them, e.g. specs/salon-erp-2026.yaml;
            a relative path is read from the folder the flow runs in.
        dry_run: only check the specs and list what they hold; write nothing.

    Returns:
        The documents by outcome ("Kind CODE" under created, updated, unchanged or, in a dry
        run, checked) and under "operations" the codes of the operations applied (none in a
        dry run).

    Raises:
        SpecError: every problem of the specs, listed at once; nothing was written.
    """
    target = input_path(path, folder_ok=True)
    with db.session() as session:
        results = apply_path(session, target, check_only=dry_run)
    summary: dict[str, Any] = {"path": str(target), "dry_run": dry_run}
    summary.update({outcome: [f"{r.kind} {r.code}" for r in results if r.outcome == outcome]
                    for outcome in OUTCOMES})
    summary["operations"] = [r.code for r in results if r.kind == "Operation" and r.outcome != "checked"]
    create_markdown_artifact(key="apply-specs", markdown=applied_markdown(str(target), results, dry_run),
                             description=f"Specs applied from {target}")
    logger = get_run_logger()
    for warning in (w for r in results for w in r.warnings):  # written anyway: shown, not refused
        logger.warning(warning)
    if not dry_run:
        for level, line in after_apply(summary["operations"], inside_flow=True):
            (logger.warning if level == "warning" else logger.info)(line)
    logger.info("%s: %s", target, ", ".join(f"{len(summary[o])} {o}" for o in OUTCOMES
                                                      if summary[o]) or "no document")
    return summary


def applied_markdown(path: str, results: list[Applied], dry_run: bool) -> str:
    lines = [f"# Specs from {path}", ""]
    if dry_run:
        lines += [f"Dry run: {len(results)} document(s) valid; nothing written.", ""]
    lines += ["| outcome | kind | code | where |", "|---|---|---|---|"]
    lines += [f"| {r.outcome} | {r.kind} | {r.code} | {r.place} |" for r in results]
    return "\n".join(lines)
