"""Conditions on states (MANIF.ETAT, step.ETAT) and dictionary names, from apply to a real run."""

from __future__ import annotations

import textwrap

import pytest
from sqlalchemy import text

from campflow.store import db
from tests.conftest import rows, scalar

PARTIES = """FICHE;TIERS;NOM;VILLE
PRO;P1;Un;Lyon
PRO;P2;Deux;Paris
CLI;C1;Trois;Lyon
"""
PREVIOUS = """kind: Operation
code: PREV
label: Last year
state: finished
steps:
  - {code: S6, label: Survey, kind: other, state: finished, next: []}
  - {code: S7, label: Open, kind: other, next: []}
"""
OPERATION = """kind: Operation
code: OP
label: States
party_kinds: [prospect, client]
steps:
  - code: A
    label: Sort
    kind: other
    where: {conditions: {W: {field: MANIF.ETAT, op: not_equals, value: finished}}}
    next:
      - to: RUNNING_LYON
        conditions:
          R: {field: MANIF.ETAT, op: equals, value: in_progress}
          L: {field: VILLE, op: equals, value: Lyon}
      - to: PREPARING
        conditions: {P: {field: operation.state, op: equals, value: in_preparation}}
      - to: AFTER_PREV
        conditions:
          O: {field: MANIF.ETAT, operation: PREV, op: in, value: [finished]}
          S: {field: step.ETAT, step: S6, operation: PREV, op: equals, value: finished}
        formula: O and S
      - to: PREV_OPEN
        conditions: {S: {field: step.ETAT, step: S7, operation: PREV, op: equals, value: finished}}
      - to: OWN_STEP
        conditions: {G: {field: step.state, step: B, op: equals, value: in_progress}}
  - {code: RUNNING_LYON, label: R, kind: other, next: []}
  - {code: PREPARING, label: P, kind: other, next: []}
  - {code: AFTER_PREV, label: X, kind: other, next: []}
  - {code: PREV_OPEN, label: Y, kind: other, next: []}
  - {code: OWN_STEP, label: Z, kind: other, next: []}
  - code: G
    label: Group
    state: in_progress
    steps:
      - {code: B, label: B, kind: other, state: in_progress, next: []}
"""


def write(path, content: str):
    path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


def execute(sql: str, **params) -> None:
    with db.engine().begin() as conn:
        conn.execute(text(sql), params)


def in_step(step: str) -> set[str]:
    return {code for (code,) in rows("""select p.code from step_target st join party p on p.id = st.party_id
                                        join step s on s.id = st.step_id join operation o on o.id = s.operation_id
                                        where o.code = 'OP' and s.code = :step""", step=step)}


@pytest.fixture
def applied(database, cli, tmp_path):
    write(tmp_path / "parties.csv", PARTIES)
    specs = tmp_path / "specs"
    specs.mkdir()
    write(specs / "prev.yaml", PREVIOUS)
    write(specs / "op.yaml", OPERATION)
    for args in (("parties", "import", tmp_path / "parties.csv"), ("apply", specs),
                 ("targets", "add", "OP", "--where", "kind in (PRO, CLI)")):
        result = cli(*args)
        assert result.code == 0, result.err
    return specs


class TestStateConditionsRoute:
    def test_a_run_routes_by_the_operations_and_the_steps_states(self, applied, prefect):
        from flows.run_operation import run_operation

        run_operation("OP")  # the where on MANIF.ETAT lets all in; the operation goes in_progress
        assert in_step("A") == {"P1", "P2", "C1"}
        # only A's parties are done: B keeps its parties to process, so it stays in_progress (a step
        # with nothing left becomes finished, and B runs beside A)
        execute("update step_target set status = 'ok_continue' where step_id = "
                "(select s.id from step s join operation o on o.id = s.operation_id where o.code = 'OP' and s.code = 'A')")
        reports = {r["code"]: r for r in run_operation("OP")}
        assert in_step("RUNNING_LYON") == {"P1", "C1"}  # in_progress, and Lyon
        assert in_step("PREPARING") == set()  # no longer in preparation
        assert in_step("AFTER_PREV") == {"P1", "P2", "C1"}  # PREV finished, its S6 finished
        assert in_step("PREV_OPEN") == set()  # S7 has no state
        assert in_step("OWN_STEP") == {"P1", "P2", "C1"}
        assert {r["target"]: r["routed"] for r in reports["A"]["routes"]} == {
            "RUNNING_LYON": 2, "PREPARING": 0, "AFTER_PREV": 3, "PREV_OPEN": 0, "OWN_STEP": 3}

    def test_a_where_on_the_state_keeps_parties_out(self, applied, prefect):
        from flows.run_operation import run_operation

        execute("update operation set state = 'finished' where code = 'OP'")
        reports = {r["code"]: r for r in run_operation("OP")}
        assert reports["A"]["entered"] == 0
        assert in_step("A") == set()

    def test_a_condition_the_database_holds_from_before_fails_in_one_line(self, applied, prefect, cli):
        # a spec applied before apply refused such fields: the run says what to fix, no traceback
        execute("""update condition set definition = '{"field": "MANIFTIERS.STATUT", "op": "equals",
                   "value": "x"}' where code = 'W'""")
        result = cli("run", "OP")
        assert result.code == 1
        assert "MANIFTIERS.STATUT" in result.err or "target.status" in result.err, result.err
        assert "condition W: " in result.err and "status: {step: S1, in: [ok_continue]}" in result.err
        assert "apply it again" in " ".join(result.err.split())
        assert "Traceback" not in result.err + result.out


CONDITION = "      - to: B\n        conditions: {{C: {condition}}}\n"
SMALL = """kind: Operation
code: OP2
label: Small
party_kinds: [prospect, client]
steps:
  - code: A
    label: A
    kind: other
    next:
{route}  - {{code: B, label: B, kind: other}}
"""


class TestStateConditionsRefused:
    @pytest.mark.parametrize(("condition", "message"), [
        ("{field: step.ETAT, op: equals, value: finished}",
         "field: step.ETAT reads a step's state: name the step, e.g. {field: step.ETAT, step: A, op: …}"),
        ("{field: step.ETAT, step: S9, op: equals, value: finished}", "operation OP2 has no step S9"),
        ("{field: step.ETAT, step: S6, operation: PREV, op: equals, value: finishd}",
         "'finishd' is not a state of steps; did you mean finished?"),
        ("{field: MANIF.ETAT, operation: NOPE, op: equals, value: finished}", "unknown operation NOPE"),
        ("{field: MANIF.ETAT, op: equals, value: en_cours}", "'en_cours' is not a state of operations"),
        ("{field: MANIF.ETAT, step: A, op: equals, value: finished}",
         "operation.state is the operation's; step belongs to step.* fields"),
        ("{field: MANIF.DEBUT, op: equals, value: x}",
         "conditions compare operation fields code, label, location, state, progress; "
         "operation.starts_at is not one of them"),
        ("{field: MANIFTIERS.STATUT, op: equals, value: x}",
         "target.status is in table target: a party's status in a step is a status condition"),
        ("{field: EVTTIERS.CODE_EVT, op: equals, value: x}", "event.code is in table event"),
        ("{field: CLI.VILLE, step: A, op: equals, value: x}", "CLI.city is a party field"),
        ("{party_kind: [client], step: A}", "step and operation name whose state a field condition reads"),
    ])
    def test_refused_at_apply_with_its_line(self, database, cli, tmp_path, condition, message):
        write(tmp_path / "prev.yaml", PREVIOUS)
        assert cli("apply", tmp_path / "prev.yaml").code == 0
        path = write(tmp_path / "op.yaml", SMALL.format(route=CONDITION.format(condition=condition)))
        result = cli("apply", path)
        assert result.code == 1
        assert f"{path}:" in result.err and message in " ".join(result.err.split()), result.err
        assert "nothing was written" in result.err
        assert scalar("select count(*) from operation where code = 'OP2'") == 0


class TestDictionaryNames:
    DICTIONARY = """kind: FieldDictionary
code: ODBC
aliases:
  CLI_NOM: party.name
  VILLE: party.name
  T2.NOM: contact.first_name
"""

    def test_apply_warns_where_a_dictionary_name_hides_a_standard_one(self, database, cli, tmp_path):
        path = write(tmp_path / "dict.yaml", self.DICTIONARY)
        result = cli("apply", path)
        assert result.code == 0, result.err
        err = " ".join(result.err.split())
        assert (f"warning: {path}:5: dictionary name VILLE hides the standard field party.city: field names "
                "are read in the dictionary first, so VILLE now means party.name") in err
        assert f"{path}:6: dictionary name T2.NOM hides the standard field contact.last_name" in err
        assert "CLI_NOM" not in err
        assert scalar("select count(*) from field_alias") == 3  # a warning: applied anyway

    def test_a_dictionary_name_is_read_before_the_standard_one(self, database, cli, tmp_path):
        write(tmp_path / "parties.csv", PARTIES)
        write(tmp_path / "dict.yaml", self.DICTIONARY)
        for args in (("parties", "import", tmp_path / "parties.csv"), ("apply", tmp_path / "dict.yaml"),
                     ("apply", write(tmp_path / "op.yaml", SMALL.format(route="")))):
            assert cli(*args).code == 0
        # VILLE is the dictionary's: the party's name, not its city
        result = cli("targets", "add", "OP2", "--where", "VILLE = Un")
        assert result.code == 0, result.err
        assert rows("select p.code from operation_target t join party p on p.id = t.party_id") == [("P1",)]
