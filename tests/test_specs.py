"""Applying, checking and exporting spec documents against the real PostgreSQL."""

from __future__ import annotations

import shutil
import textwrap

import pytest
import yaml

from campflow.store import db
from tests.conftest import EXAMPLES, rows, scalar

SNAPSHOT_TABLES = ("family", "state", "entity_type", "collaborator", "field_alias", "custom_field",
                   "questionnaire", "question", "folder", "operation", "step", "route", "condition",
                   "event_code")


def snapshot() -> dict[str, list[tuple]]:
    return {t: rows(f"select * from {t} order by 1") for t in SNAPSHOT_TABLES}


BASE = """\
kind: Operation
code: OP-TEST
label: Opération de test
family: SALONS
party_kinds: [prospect, client]
steps:
  - code: S1
    label: Appel
    kind: phoning
    questionnaire: Q1
    next:
      - to: S2
        conditions:
          C1: {answer: Q1.CATALOGUE, op: equals, value: oui}
          C2: {field: CLI.VILLE, op: matches, value: "Par*"}
        formula: C1 or C2
  - code: S2
    label: Export
    kind: spreadsheet_export
    columns: [PCFIDX.NOM, party.stat(2)]
"""


class TestApply:
    def test_examples_apply_and_are_idempotent(self, examples_applied, cli):
        assert scalar("select count(*) from operation") == 4
        assert scalar("select count(*) from step where operation_id = "
                      "(select id from operation where code = 'SALON-ERP-2026')") == 7
        assert rows("select code, to_step, formula from (select s.code, t.code as to_step, r.formula, "
                    "r.position from route r join step s on s.id = r.step_id join step t on t.id = "
                    "r.to_step_id where s.code = 'S2' and s.operation_id = (select id from operation "
                    "where code = 'SALON-ERP-2026')) x order by position") == [
            ("S2", "S3", "C1 or (C2 and C3 and not C4)"), ("S2", "S4", None)]
        before = snapshot()
        again = cli("apply", EXAMPLES / "specs")
        assert again.code == 0
        assert "created" not in again.out and "updated" not in again.out
        assert snapshot() == before

    def test_folder_path_is_created_once(self, examples_applied):
        assert rows("select f.label, p.label from folder f left join folder p on p.id = f.parent_id "
                    "order by f.id") == [("Modèles", None), ("Prospection", None), ("Rhône-Alpes", "Prospection"),
                                         ("Salons", None), ("Salons à Paris", "Salons")]

    def test_check_writes_nothing(self, database, cli):
        result = cli("apply", EXAMPLES / "specs", "--check")
        assert result.code == 0, result.err
        assert "nothing written" in result.out
        assert scalar("select count(*) from operation") == 0

    def test_export_then_apply_changes_nothing(self, examples_applied, cli, tmp_path, monkeypatch):
        out = tmp_path / "exported" / "salon.yaml"
        exported = cli("export", "SALON-ERP-2026", "-o", out)
        assert exported.code == 0
        assert "lie outside" in exported.err and "CAMPFLOW_ALLOWED_DIRS" in exported.err
        # exported away from its templates: they are read where an administrator allows it
        monkeypatch.setenv("CAMPFLOW_ALLOWED_DIRS", str(EXAMPLES / "specs"))
        data = yaml.safe_load(out.read_text(encoding="utf-8"))
        assert data["steps"][1]["next"][0]["formula"] == "C1 or (C2 and C3 and not C4)"
        assert not data["steps"][0]["email"]["body"].startswith("/")  # relative to the export
        before = snapshot()
        result = cli("apply", out)
        assert result.code == 0, result.err
        assert "unchanged Operation SALON-ERP-2026" in result.out
        assert snapshot() == before

    def test_export_to_stdout_is_a_valid_spec(self, examples_applied, cli):
        result = cli("export", "MODELE-SALON")
        data = yaml.safe_load(result.out)
        assert data["template"] is True
        assert [s["code"] for s in data["steps"]] == ["INVIT", "APPEL", "EXPORT"]

    def test_changed_label_is_updated_and_steps_keep_ids(self, examples_applied, cli, tmp_path):
        ids = rows("select code, id from step where operation_id = (select id from operation "
                   "where code = 'SALON-ERP-2026') order by code")
        source = (EXAMPLES / "specs" / "salon-erp-2026.yaml").read_text(encoding="utf-8")
        spec = tmp_path / "salon.yaml"
        spec.write_text(source.replace("label: Salon ERP 2026", "label: Salon ERP 2026 (Paris)"),
                        encoding="utf-8")
        for name in ("templates", "docs"):  # copies: a symlink out of the spec's folder is refused
            shutil.copytree(EXAMPLES / "specs" / name, tmp_path / name)
        result = cli("apply", spec)
        assert "updated   Operation SALON-ERP-2026" in result.out, result.err
        assert scalar("select label from operation where code = 'SALON-ERP-2026'") == "Salon ERP 2026 (Paris)"
        assert rows("select code, id from step where operation_id = (select id from operation "
                    "where code = 'SALON-ERP-2026') order by code") == ids


def write_spec(tmp_path, text: str, name: str = "op.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


class TestBadSpecs:
    """Each bad spec: every problem as file:line: message, exit 1, nothing written."""

    @pytest.mark.parametrize(("old", "new", "line", "message"), [
        ("- to: S2", "- to: S9", 12, "S9 is not a step of this operation"),
        ("Q1.CATALOGUE", "Q1.CATALOG", 14, "unknown question CATALOG in questionnaire Q1; did you mean CATALOGUE"),
        ("CLI.VILLE", "CLI.VILE", 15, "unknown field"),
        ("formula: C1 or C2", "formula: C1 or", 16, "formula:"),
        ("formula: C1 or C2", "formula: C1 and C9", 16, "condition C9 is not defined"),
        ("value: oui", "value: oiu", 14, "'oiu' is not a choice of Q1.CATALOGUE (oui, non, plus tard)"),
        ("kind: spreadsheet_export", "kind: spreadsheet_exprot", 19, "steps.1.kind: Input should be"),
        ("family: SALONS", "family: SALON", 4, "unknown family SALON; did you mean SALONS?"),
        ("party.stat(2)", "party.stat", 20, "stat"),
        ("label: Export", "label: Export\n    emial: {}", 19, "unknown key 'emial'"),
        ("code: S2", "code: S1", 17, "duplicate step code S1"),
        ("    questionnaire: Q1\n", "", 7, "step S1: a phoning step needs `questionnaire:`"),
    ])
    def test_one_problem(self, examples_applied, cli, tmp_path, old, new, line, message):
        assert old in BASE
        path = write_spec(tmp_path, BASE.replace(old, new, 1))
        before = snapshot()
        result = cli("apply", path)
        assert result.code == 1
        assert f"{path}:{line}: " in result.err
        assert message in " ".join(result.err.split())
        assert "nothing was written" in result.err
        assert snapshot() == before

    def test_formula_error_has_a_caret_under_the_token(self, examples_applied, cli, tmp_path):
        path = write_spec(tmp_path, BASE.replace("formula: C1 or C2", "formula: C1 or or C2"))
        err = cli("apply", path).err
        lines = err.splitlines()
        at = next(i for i, text in enumerate(lines) if text.strip() == "C1 or or C2")
        assert lines[at + 1].index("^") == lines[at].index("or or") + 3

    def test_cycle_names_its_steps(self, examples_applied, cli, tmp_path):
        path = write_spec(tmp_path, BASE + "    next: [{to: S1}]\n")
        result = cli("apply", path)
        assert result.code == 1
        assert "steps form a cycle: S1 -> S2 -> S1" in result.err

    def test_end_before_start(self, examples_applied, cli, tmp_path):
        path = write_spec(tmp_path, BASE.replace("family: SALONS", "family: SALONS\nstarts_at: "
                                                 "2026-05-01T09:00\nends_at: 2026-04-01T09:00"))
        result = cli("apply", path)
        assert result.code == 1
        assert "ends_at 2026-04-01 09:00 is before starts_at 2026-05-01 09:00" in result.err

    def test_mandatory_field_of_entity_type(self, examples_applied, cli, tmp_path):
        path = write_spec(tmp_path, BASE.replace("family: SALONS", "family: SALONS\ntype: TRADE_SHOW"))
        result = cli("apply", path)
        assert result.code == 1
        for field in ("location", "starts_at", "ends_at", "responsible"):
            assert f"{field} is mandatory for operations of type TRADE_SHOW" in result.err

    def test_all_problems_are_listed_at_once(self, examples_applied, cli, tmp_path):
        bad = BASE.replace("- to: S2", "- to: S9").replace("CLI.VILLE", "CLI.VILE").replace(
            "family: SALONS", "family: NOPE")
        operation = write_spec(tmp_path, bad)
        family = write_spec(tmp_path, "kind: Family\ncode: X Y\nlabel: bad code\n", "family.yaml")
        result = cli("apply", tmp_path)
        assert result.code == 1
        err = result.err.removeprefix("error: ")
        assert f"{family}:2: code: String should match pattern" in err
        assert f"{operation}:4: unknown family NOPE" in err
        assert f"{operation}:12: route to S9" in err
        assert f"{operation}:15: field: unknown field" in err
        assert "4 problem(s); nothing was written" in err

    def test_yaml_syntax_error_names_the_line(self, database, cli, tmp_path):
        path = write_spec(tmp_path, "kind: Family\ncode: A\nlabel: [unclosed\n")
        result = cli("apply", path)
        assert result.code == 1
        assert f"{path}:" in result.err and "YAML syntax" in result.err

    def test_duplicate_codes_across_files(self, database, cli, tmp_path):
        write_spec(tmp_path, "kind: Family\ncode: A\nlabel: one\n", "a.yaml")
        write_spec(tmp_path, "kind: Family\ncode: A\nlabel: two\n", "b.yaml")
        result = cli("apply", tmp_path)
        assert result.code == 1
        assert "duplicate Family code A" in result.err
        assert scalar("select count(*) from family") == 0

    def test_unknown_kind(self, database, cli, tmp_path):
        path = write_spec(tmp_path, "kind: Operaton\ncode: A\n")
        result = cli("apply", path)
        assert f"{path}:1: unknown kind 'Operaton'; did you mean Operation?" in result.err


def test_one_alembic_head():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(db.alembic_config("postgresql+psycopg://unused/none"))
    assert len(script.get_heads()) == 1


def test_models_match_the_migrations(database_url):
    """Autogenerate finds nothing to add: the migrations create exactly the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from models import Base

    with db.engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


class TestTemplatesAtApply:
    """An unknown field in a template is a spec error, never a blank in a sent message."""

    SPEC = """\
kind: Operation
code: OP-MAIL
label: Mailing
steps:
  - code: S1
    label: E-mails
    kind: emailing
    email: {subject: "Bonjour [[PCFIDX.NOM]]", body: BODY}
"""

    def apply(self, cli, tmp_path, body_name: str, body: str | None):
        if body is not None:
            (tmp_path / body_name).write_text(body, encoding="utf-8")
        path = write_spec(tmp_path, self.SPEC.replace("BODY", body_name))
        return path, cli("apply", path)

    def test_html_template_field_unknown(self, database, cli, tmp_path):
        path, result = self.apply(cli, tmp_path, "body.html", "<p>Bonjour</p>\n<p>[[PCFIDX.VILE]]</p>\n")
        assert result.code == 1
        assert f"{path}:8: " in result.err
        assert f"{tmp_path / 'body.html'}:2: field PCFIDX.VILE: unknown field" in result.err

    def test_jinja_template_checked_in_the_sandbox_parser(self, database, cli, tmp_path):
        _, result = self.apply(cli, tmp_path, "body.j2", "{{ party.name }}\n{{ party.nmae }}\n")
        assert result.code == 1
        assert "body.j2: line 2: party.nmae: unknown field" in result.err
        _, result = self.apply(cli, tmp_path, "bad.j2", "{% if party.name %}unclosed\n")
        assert "bad.j2: line 1: template syntax" in result.err or "bad.j2: line 2: template syntax" in result.err

    def test_missing_template_file(self, database, cli, tmp_path):
        _, result = self.apply(cli, tmp_path, "absent.html", None)
        assert result.code == 1
        assert "template absent.html not found" in result.err

    def test_good_templates_apply(self, database, cli, tmp_path):
        _, result = self.apply(cli, tmp_path, "body.j2", "{{ contact.first_name }} {{ party.city }}\n")
        assert result.code == 0, result.err


def test_reapplying_does_not_move_a_running_operation_back(examples_applied, cli):
    from sqlalchemy import text

    with db.engine().begin() as conn:
        conn.execute(text("update operation set state = 'in_progress' where code = 'SALON-ERP-2026'"))
    result = cli("apply", EXAMPLES / "specs")
    assert "unchanged Operation SALON-ERP-2026" in result.out
    assert scalar("select state from operation where code = 'SALON-ERP-2026'") == "in_progress"


def test_a_database_without_the_tables_says_to_upgrade(database_url, cli, monkeypatch):
    import uuid

    from sqlalchemy import create_engine, text

    from tests.conftest import ADMIN_URL

    name = f"campflow_empty_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    monkeypatch.setenv("CAMPFLOW_DATABASE_URL", ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    db.reset_caches()
    try:
        result = cli("apply", EXAMPLES / "specs")
        assert result.code == 1
        assert f"{name} lacks campflow's tables" in result.err and "run `campflow db upgrade`" in result.err
        assert "Traceback" not in result.err
    finally:
        db.reset_caches()
        with admin.connect() as conn:
            conn.execute(text(f'drop database "{name}" with (force)'))
        admin.dispose()
        monkeypatch.setenv("CAMPFLOW_DATABASE_URL", database_url)
        db.reset_caches()
