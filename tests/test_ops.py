"""The operation tree, one operation, and copying templates."""

from __future__ import annotations

import json

from tests.conftest import rows, scalar


class TestTree:
    def test_tree_shows_folders_and_operations(self, examples_applied, cli):
        result = cli("ops", "tree")
        assert result.code == 0
        out = result.out
        assert out.index("Salons") < out.index("Salons à Paris") < out.index("SALON-ERP-2026")
        assert "MODELE-SALON" in out and "template" in out

    def test_filters_keep_the_folders_of_what_they_find(self, examples_applied, cli):
        data = json.loads(cli("ops", "tree", "--find", "2026", "--json").out)
        salons = next(n for n in data if n["label"] == "Salons")
        assert salons["children"][0]["children"][0]["code"] == "SALON-ERP-2026"
        assert [n["label"] for n in data] == ["Prospection", "Salons"]  # Modèles has nothing that matches
        finished = json.loads(cli("ops", "tree", "--state", "finished", "--json").out)
        assert finished[0]["children"][0]["children"][0]["code"] == "SALON-ERP-2025"
        assert "no operation matches" in cli("ops", "tree", "--family", "SALONS", "--find", "LYON").out


class TestShow:
    def test_header_steps_routes_and_counts(self, examples_applied, cli):
        data = json.loads(cli("ops", "show", "SALON-ERP-2026", "--json").out)
        assert data["starts_at"] == "2026-03-01T09:00"  # in the operation's timezone
        steps = {s["code"]: s for s in data["steps"]}
        assert steps["S3"]["parent"] == "G1" and steps["G1"]["kind"] is None
        assert steps["S2"]["routes"] == [{"to": "S3", "rule": "C1 or (C2 and C3 and not C4)"},
                                         {"to": "S4", "rule": "C1"}]
        assert steps["S1"]["routes"] == [{"to": "S2", "rule": "ok_continue (next step)"}]
        assert steps["S6"]["routes"] == []
        table = cli("ops", "show", "SALON-ERP-2026").out
        assert "Prise de contact téléphonique" in table and "no party yet" in table

    def test_unknown_operation_suggests(self, examples_applied, cli):
        result = cli("ops", "show", "SALON-ERP-2027")
        assert result.code == 1
        assert "no operation SALON-ERP-2027; did you mean" in result.err


class TestTemplates:
    def test_new_operation_from_template(self, examples_applied, cli):
        result = cli("ops", "new", "SALON-LYON", "--from", "MODELE-SALON", "--label", "Salon de Lyon",
                     "--folder", "Salons/Lyon")
        assert result.code == 0, result.err
        assert rows("select label, is_template, state from operation where code = 'SALON-LYON'") == [
            ("Salon de Lyon", False, "in_preparation")]
        assert rows("select code, is_template from step where operation_id = (select id from operation "
                    "where code = 'SALON-LYON') order by position") == [
            ("INVIT", False), ("APPEL", False), ("EXPORT", False)]
        assert scalar("select count(*) from route r join step s on s.id = r.step_id join operation o "
                      "on o.id = s.operation_id where o.code = 'SALON-LYON'") == 1
        again = cli("ops", "new", "SALON-LYON", "--from", "MODELE-SALON")
        assert again.code == 1 and "exists already" in again.err

    def test_only_templates_are_copied(self, examples_applied, cli):
        result = cli("ops", "new", "X", "--from", "SALON-ERP-2026")
        assert result.code == 1
        assert "SALON-ERP-2026 is not a template operation" in result.err

    def test_load_template_step(self, examples_applied, cli):
        result = cli("steps", "load-template", "SALON-ERP-2026", "--from", "MODELE-SALON/APPEL", "--as", "S7")
        assert result.code == 0, result.err
        assert "route to EXPORT dropped" in result.out
        assert rows("select code, position from step where operation_id = (select id from operation "
                    "where code = 'SALON-ERP-2026') order by position desc limit 1") == [("S7", 7)]

    def test_load_template_asks_before_overwriting(self, examples_applied, cli, monkeypatch):
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
        result = cli("steps", "load-template", "SALON-ERP-2026", "--from", "MODELE-SALON/INVIT", "--as", "S1")
        assert result.code == 1
        assert scalar("select label from step where code = 'S1' and operation_id = (select id from "
                      "operation where code = 'SALON-ERP-2026')") == "Prospection e-mails"
        result = cli("steps", "load-template", "SALON-ERP-2026", "--from", "MODELE-SALON/INVIT", "--as", "S1",
                     "--yes")
        assert result.code == 0, result.err
        assert scalar("select label from step where code = 'S1' and operation_id = (select id from "
                      "operation where code = 'SALON-ERP-2026')") == "Invitations par e-mail"


def test_show_has_no_default_route_after_next_empty(examples_applied, cli):
    data = json.loads(cli("ops", "show", "PROSPECTION-LYON-2026", "--json").out)
    steps = {s["code"]: s for s in data["steps"]}
    assert steps["ETIQUETTES"]["routes"] == []  # `next: []` ends the path, though RELANCE follows
    assert [r["to"] for r in steps["CATALOGUE"]["routes"]] == ["ETIQUETTES"]
    assert steps["LISTE"]["routes"] == [{"to": "APPEL", "rule": "ok_continue (next step)"}]
