"""The label_mailing step kind: sheet layouts, label text, Word and PDF sheets on PostgreSQL."""

from __future__ import annotations

import io
import re

import docx
import pytest
from docx.shared import Mm

from campflow.core.kinds import StepContext, step_kind
from campflow.core.labels import SHEETS, check_labels, label_layout
from campflow.errors import CampflowError
from campflow.store import db
from tasks.kinds import label_mailing
from tasks.kinds.label_mailing import address_lines, label_origin, twips, write_docx
from tests.conftest import load_files, rows, scalar, target_everyone

PARTIES = """FICHE;TIERS;NOM;ADRESSE;CP;VILLE;PAYS
PRO;P001;Boulangerie Lefèvre;12 rue de l'Église;69001;Lyon;FR
PRO;P002;Menuiserie Gaëlle;3 place Bellecour;69002;Lyon;
CLI;C001;Société Générale d'Équipements;5 avenue Foch;75016;Paris;FR
CLI;C002;Ébénisterie Noël;Rue du Rhône 4;1204;Genève;CH
"""
CONTACTS = """TIERS;CONTACT;CIVILITE;NOM;PRENOM
P001;C1;Mme;Lefèvre;Hélène
P001;C2;M.;Gérard;Loïc
C001;C1;M.;Dupré;François
C001;C2;Mme;Øster;Amélie
"""
SPECS = """kind: Operation
code: OP
label: Étiquettes
party_kinds: [prospect, client]
steps:
  - code: SHEET
    label: Étiquettes L7163
    kind: label_mailing
    next: []
    labels: {sheet: Avery L7163}
  - code: CONTACTS
    label: Une étiquette par contact
    kind: label_mailing
    next: []
    labels: {sheet: "3475", per_contact: true, font_size: 9}
  - code: PDF
    label: Étiquettes PDF
    kind: label_mailing
    next: []
    labels: {sheet: L7160, format: pdf}
  - code: CUSTOM
    label: Planche maison
    kind: label_mailing
    next: []
    labels: {rows: 5, columns: 2, width_mm: 100, height_mm: 50, margin_top_mm: 20, margin_left_mm: 5}
"""
EMU_PER_TWIP = 635


def run_cli(cli, *args):
    result = cli(*args)
    assert result.code == 0, result.err
    return result


@pytest.fixture
def operation(database, cli, tmp_path):
    """Four parties; P001's targeted contact is C2; C001 has two contacts, none targeted."""
    load_files(cli, tmp_path, PARTIES, CONTACTS, SPECS)
    target_everyone(("P001", "C2"))
    with db.engine().begin() as conn:
        conn.exec_driver_sql("""
            insert into step_target_contact (step_id, contact_id, party_id)
            select s.id, otc.contact_id, otc.party_id from step s, operation_target_contact otc;""")
    return tmp_path


def print_labels(step: str, out, **settings):
    """Run the kind on OP/step in one transaction, as the flow does."""
    step_id, stored = rows("select id, settings from step where code = :code", code=step)[0]
    ctx = StepContext(operation_id=scalar("select id from operation where code = 'OP'"), operation_code="OP",
                      step_id=step_id, step_code=step, kind="label_mailing",
                      settings={**stored, "labels": {**stored["labels"], **settings}}, output_dir=out)
    with db.session() as session:
        return step_kind("label_mailing").run(session, ctx)


def labels_of(path) -> list[list[str]]:
    """Each label's lines, row by row, skipping the gap columns and empty cells."""
    table = docx.Document(path if isinstance(path, io.BytesIO) else str(path)).tables[0]
    found = []
    for row in table.rows:
        for cell in row.cells:
            lines = [p.text for p in cell.paragraphs if p.text]
            if lines:
                found.append(lines)
    return found


class TestLayout:
    @pytest.mark.parametrize(("name", "columns", "rows_", "width", "height"), [
        ("L7160", 3, 7, 63.5, 38.1), ("avery l7163", 2, 7, 99.1, 38.1), ("L7651", 5, 13, 38.1, 21.2),
        ("Avery Zweckform 3475", 3, 8, 70.0, 36.0), ("avery-zweckform-3474", 3, 8, 70.0, 37.0)])
    def test_standard_sheets(self, name, columns, rows_, width, height):
        sheet = label_layout({"sheet": name})
        assert (sheet.columns, sheet.rows, sheet.width_mm, sheet.height_mm) == (columns, rows_, width, height)

    @pytest.mark.parametrize("sheet", SHEETS.values(), ids=str)
    def test_every_sheet_fits_and_is_centred(self, sheet):
        assert label_layout({"sheet": sheet.name}) == sheet
        right = 210 - sheet.margin_left_mm - sheet.table_width_mm
        bottom = 297 - sheet.margin_top_mm - sheet.rows * sheet.height_mm
        assert abs(right - sheet.margin_left_mm) < 0.1 and abs(bottom - sheet.margin_top_mm) < 0.1

    def test_explicit_values_override_the_sheet(self):
        sheet = label_layout({"sheet": "L7160", "font_size": 9, "margin_top_mm": 14.0, "per_contact": True})
        assert (sheet.font_size, sheet.margin_top_mm, sheet.margin_left_mm, sheet.column_gap_mm) == (9, 14.0, 7.25, 2.5)
        assert sheet.name == "L7160 (adjusted)"

    def test_explicit_layout_is_centred_unless_margins_are_given(self):
        sheet = label_layout({"rows": 8, "columns": 2, "width_mm": 105, "height_mm": 37})
        assert (sheet.margin_left_mm, sheet.margin_top_mm) == (0.0, 0.5)
        assert label_layout({"rows": 2, "columns": 2, "width_mm": 50, "height_mm": 20,
                             "margin_left_mm": 3, "margin_top_mm": 4}).margin_left_mm == 3

    def test_no_settings_is_the_default_sheet(self):
        assert label_layout(None) == SHEETS["L7160"]

    @pytest.mark.parametrize(("settings", "key", "message"), [
        ({"sheet": "L9999"}, "sheet", "unknown label sheet 'L9999'; known sheets: Avery L7160 (3×7, 63.5×38.1 mm)"),
        ({"rows": 3, "columns": 2}, None, "missing width_mm, height_mm"),
        ({"rows": 3, "columns": 4, "width_mm": 60, "height_mm": 30}, "columns", "take 240 mm; an A4 page is 210"),
        ({"sheet": "L7160", "rows": 8}, "rows", "8 rows of 38.1 mm under a 15.15 mm margin take 319.95 mm"),
    ])
    def test_bad_layouts(self, settings, key, message):
        [(found_key, found)] = check_labels(settings)
        assert found_key == key and message in found

    @pytest.mark.parametrize(("index", "origin"), [(0, (7.25, 15.15)), (1, (73.25, 15.15)),
                                                   (3, (7.25, 53.25)), (21, (7.25, 15.15))])
    def test_label_positions(self, index, origin):
        left, top = label_origin(SHEETS["L7160"], index)
        assert (round(left, 2), round(top, 2)) == origin


class TestAddress:
    def test_lines_of_a_label(self):
        assert address_lines("Société Générale", "M.", "François", "Dupré", "5 avenue Foch\nBât. B ",
                             "75016", "Paris", "fr", home=frozenset({"fr"})) == (
            "Société Générale", "M. François Dupré", "5 avenue Foch", "Bât. B", "75016 Paris")

    def test_foreign_country_and_missing_parts(self):
        assert address_lines("Ébénisterie Noël", None, None, " ", None, "1204", "Genève", "Suisse",
                             home=frozenset({"fr", "france"})) == ("Ébénisterie Noël", "1204 Genève", "SUISSE")

    def test_home_country_from_the_environment(self, monkeypatch):
        monkeypatch.setenv(label_mailing.HOME_COUNTRY_VARIABLE, "BE, Belgique")
        assert label_mailing.home_countries() == {"be", "belgique"}


class TestWordSheet:
    def test_labels_per_party_with_exact_dimensions_over_several_pages(self, operation):
        with db.engine().begin() as conn:
            conn.exec_driver_sql("""
                insert into party (code, kind, name, city, postal_code) select 'X' || lpad(n::text, 2, '0'),
                'client', 'Société n°' || n, 'Montréal', 'H2X' from generate_series(1, 30) n;
                insert into step_target (step_id, party_id, operation_id) select s.id, p.id, s.operation_id
                from step s, party p where s.code = 'SHEET' and p.code like 'X%%'""")
        out = operation / "out"
        outcome = print_labels("SHEET", out)
        path = out / "OP-SHEET.docx"
        assert outcome.outputs == (path,) and (outcome.processed, outcome.statuses) == (34, {"ok_continue": 34})
        assert outcome.message == "34 labels on 3 pages of Avery L7163 (2×7, 99.1×38.1 mm) in OP-SHEET.docx"
        labels = labels_of(path)
        assert len(labels) == 34
        assert labels[:4] == [
            ["Société Générale d'Équipements", "M. François Dupré", "5 avenue Foch", "75016 Paris"],
            ["Ébénisterie Noël", "Rue du Rhône 4", "1204 Genève", "CH"],
            ["Boulangerie Lefèvre", "M. Loïc Gérard", "12 rue de l'Église", "69001 Lyon"],
            ["Menuiserie Gaëlle", "3 place Bellecour", "69002 Lyon"]]
        assert labels[-1] == ["Société n°30", "H2X Montréal"]  # by party code
        document = docx.Document(str(path))
        table = document.tables[0]
        assert len(table.rows) == 17 and len(table.columns) == 3  # label, gap, label
        assert [c.width for c in table.columns] == [twips(99.1) * EMU_PER_TWIP, twips(2.5) * EMU_PER_TWIP,
                                                    twips(99.1) * EMU_PER_TWIP]
        assert twips(99.1) == 5618 and twips(38.1) == 2160
        assert {(r.height, str(r.height_rule)) for r in table.rows} == {(2160 * EMU_PER_TWIP, "EXACTLY (2)")}
        assert table._tbl.tblPr.find(f"{{{table._tbl.nsmap['w']}}}tblLayout").get(
            f"{{{table._tbl.nsmap['w']}}}type") == "fixed"
        section = document.sections[0]
        assert (section.page_width, section.page_height) == (Mm(210).twips * EMU_PER_TWIP,
                                                             Mm(297).twips * EMU_PER_TWIP)
        assert abs(section.left_margin.mm - 4.65) < 0.02 and abs(section.top_margin.mm - 15.15) < 0.02
        # exactly seven rows fit between the margins, so the 17 rows take three pages
        room = section.page_height - section.top_margin - section.bottom_margin
        assert 7 * table.rows[0].height <= room < 8 * table.rows[0].height
        assert rows("select distinct status from step_target st join step s on s.id = st.step_id "
                    "where s.code = 'SHEET'") == [("ok_continue",)]
        assert [p.name for p in out.iterdir()] == ["OP-SHEET.docx"]

    def test_one_label_per_contact(self, operation):
        outcome = print_labels("CONTACTS", operation / "out")
        assert outcome.processed == 4
        # C001: both contacts (none targeted); P001: only its targeted contact; others: the party
        assert [label[:2] for label in labels_of(operation / "out" / "OP-CONTACTS.docx")] == [
            ["Société Générale d'Équipements", "M. François Dupré"],
            ["Société Générale d'Équipements", "Mme Amélie Øster"],
            ["Ébénisterie Noël", "Rue du Rhône 4"],
            ["Boulangerie Lefèvre", "M. Loïc Gérard"],
            ["Menuiserie Gaëlle", "3 place Bellecour"]]
        table = docx.Document(str(operation / "out" / "OP-CONTACTS.docx")).tables[0]
        assert [c.width for c in table.columns] == [twips(70) * EMU_PER_TWIP] * 3  # 3475: no gaps
        assert 'w:val="18"' in table._tbl.xml  # 9 pt
        assert rows("select status, count(*) from step_target_contact stc join step s on s.id = stc.step_id "
                    "where s.code = 'CONTACTS' group by status") == [("ok_continue", 1)]

    def test_explicit_layout(self, operation):
        print_labels("CUSTOM", operation / "out")
        document = docx.Document(str(operation / "out" / "OP-CUSTOM.docx"))
        table = document.tables[0]
        assert [c.width for c in table.columns] == [twips(100) * EMU_PER_TWIP] * 2
        assert table.rows[0].height == twips(50) * EMU_PER_TWIP
        assert round(document.sections[0].top_margin.mm) == 20

    def test_texts_with_markup_characters_stay_text(self, tmp_path):
        target = io.BytesIO()
        count = write_docx(target, SHEETS["L7163"], [("A & B <Cie>", "\"Q\" 'R'")])
        assert count == 1
        assert labels_of(io.BytesIO(target.getvalue())) == [["A & B <Cie>", "\"Q\" 'R'"]]


class TestPdfSheet:
    def test_pdf_labels(self, operation):
        outcome = print_labels("PDF", operation / "out")
        path = operation / "out" / "OP-PDF.pdf"
        assert outcome.outputs == (path,) and outcome.processed == 4
        data = path.read_bytes()
        assert data.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b(?!s)", data)) == 1
        assert outcome.message == "4 labels on 1 page of Avery L7160 (3×7, 63.5×38.1 mm) in OP-PDF.pdf"

    def test_pdf_pages_follow_the_sheet(self, tmp_path):
        with (tmp_path / "many.pdf").open("wb") as out:
            assert label_mailing.write_pdf(out, SHEETS["L7160"], [("Zoë", "Łódź")] * 43) == 43
        assert len(re.findall(rb"/Type /Page\b(?!s)", (tmp_path / "many.pdf").read_bytes())) == 3


class TestRefusals:
    def test_unknown_sheet_is_refused_at_apply(self, database, cli, tmp_path):
        (tmp_path / "op.yaml").write_text(SPECS.replace("sheet: L7160,", "sheet: L7199,"), encoding="utf-8")
        result = cli("apply", tmp_path / "op.yaml")
        assert result.code == 1
        assert "op.yaml:20: unknown label sheet 'L7199'; known sheets: Avery L7160" in result.err
        assert "Avery Zweckform 3475 (3×8, 70×36 mm)" in result.err
        assert scalar("select count(*) from operation") == 0

    def test_unknown_format_at_run_time(self, operation):
        with pytest.raises(CampflowError, match="labels.format must be one of docx, pdf; got 'odt'"):
            print_labels("SHEET", operation / "out", format="odt")
        assert scalar("select count(*) from step_target where status = 'to_process'") == 16


LABEL_OPERATION = """kind: Operation
code: ETIQ
label: Étiquettes clients
party_kinds: [client]
steps:
  - code: PLANCHE
    label: Planche d'étiquettes
    kind: label_mailing
    labels: {sheet: L7651}
"""


def test_run_operation_prints_labels(database, cli, tmp_path, prefect, monkeypatch):
    from flows.run_operation import run_operation

    for name, content in (("parties.csv", PARTIES), ("op.yaml", LABEL_OPERATION)):
        (tmp_path / name).write_text(content, encoding="utf-8")
    run_cli(cli, "parties", "import", tmp_path / "parties.csv")
    run_cli(cli, "apply", tmp_path / "op.yaml")
    run_cli(cli, "targets", "add", "ETIQ", "--where", "kind in (CLI)")
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("CAMPFLOW_OUTPUT_STORAGE", "local")
    report = {r["code"]: r for r in run_operation("ETIQ")}["PLANCHE"]
    assert (report["state"], report["processed"], report["after"]) == ("Completed", 2, {"ok_continue": 2})
    [output] = report["outputs"]
    assert output.startswith(str(tmp_path / "out" / "ETIQ")) and output.endswith("ETIQ-PLANCHE.docx")
    assert [label[0] for label in labels_of(output)] == ["Société Générale d'Équipements", "Ébénisterie Noël"]
    assert "2 labels on 1 page of Avery L7651" in report["reason"]
