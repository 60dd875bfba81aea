"""A step is finished when nothing is left for it, on real runs; a party entering later reopens it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from campflow.store import db
from tests.conftest import scalar

PARTIES = """FICHE;TIERS;NOM;VILLE
PRO;P001;Boulangerie Lefèvre;Paris
CLI;C001;Société Générale;Lyon
PRO;P002;Menuiserie Gaëlle;Lyon
"""
OPERATION = """kind: Operation
code: DONE
label: Steps that finish
party_kinds: [prospect, client]
steps:
  - {code: E, label: Export, kind: spreadsheet_export, columns: [party.code, party.name]}
  - {code: C, label: Appel, kind: other, next: []}
"""


@pytest.fixture
def operation(database, cli, tmp_path, prefect, monkeypatch):
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "op.yaml").write_text(OPERATION, encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv"), ("apply", tmp_path / "op.yaml"),
                 ("targets", "add", "DONE", "--where", "VILLE = Paris or CODE = C001")):
        result = cli(*args)
        assert result.code == 0, result.err
    return "DONE"


def run() -> dict[str, dict]:
    from flows.run_operation import run_operation

    return {r["code"]: r for r in run_operation("DONE")}


def step_states(cli) -> dict[str, str]:
    data = json.loads(cli("ops", "show", "DONE", "--json").out)
    return {s["code"]: s["state"] for s in data["steps"]}


def progress(cli) -> int:
    (node,) = json.loads(cli("ops", "tree", "--find", "DONE", "--json").out)
    return node["progress"]


def answer_all(step: str) -> None:
    with db.engine().begin() as conn:
        conn.execute(text("update step_target st set status = 'ok_continue', processed_at = now() "
                          "from step s where s.id = st.step_id and s.code = :step"), {"step": step})


class TestStepsFinish:
    def test_a_step_finishes_when_nothing_is_left_and_reopens_when_a_party_enters(self, operation, cli):
        assert step_states(cli) == {"E": None, "C": None} and progress(cli) == 0
        reports = run()
        # E processed everyone and has no step before it; C's parties wait for people
        assert step_states(cli) == {"E": "finished", "C": "in_progress"}
        assert (reports["E"]["step_state"], reports["C"]["step_state"]) == ("finished", "in_progress")
        assert progress(cli) == 50
        answer_all("C")  # the calls were made (status set / answers import)
        run()
        assert step_states(cli) == {"E": "finished", "C": "finished"} and progress(cli) == 100
        shown = " ".join(cli("ops", "show", "DONE").out.split())
        assert "spreadsheet_export finished" in shown and "other finished" in shown
        assert "100%" in cli("ops", "tree").out

        assert cli("targets", "add", "DONE", "--where", "CODE = P002").code == 0
        run()  # P002 enters E, is exported and routed to C, where it waits
        assert step_states(cli) == {"E": "finished", "C": "in_progress"} and progress(cli) == 50
        assert scalar("select count(*) from step_target where status = 'to_process'") == 1

    def test_a_step_fed_by_an_unfinished_step_is_not_finished(self, operation, cli):
        from flows.run_operation import run_operation

        run_operation("DONE", steps=["C"])  # nobody reached C, but E can still send it parties
        assert step_states(cli) == {"E": None, "C": None}

    def test_a_state_the_spec_gives_is_left_alone(self, operation, cli, tmp_path):
        specs = tmp_path / "specs"
        specs.mkdir()
        (specs / "state.yaml").write_text("kind: State\ncode: paused\nlabel: En pause\napplies_to: step\n",
                                          encoding="utf-8")
        (specs / "op.yaml").write_text(OPERATION.replace("kind: other,", "kind: other, state: paused,"),
                                       encoding="utf-8")
        result = cli("apply", specs)
        assert result.code == 0, result.err
        run()
        assert step_states(cli) == {"E": "finished", "C": "paused"}
