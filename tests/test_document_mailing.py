"""The document_mailing step kind on the real PostgreSQL: Word merges of real templates."""

from __future__ import annotations

import copy
import io
import shutil
import uuid
import zipfile
from pathlib import Path

import docx
import pytest
from docx.oxml import OxmlElement
from docx.oxml.ns import qn

from blocks import storage
from campflow.core.field_catalog import FieldCatalog
from campflow.core.kinds import StepContext, step_kind
from campflow.errors import SpecError
from campflow.render.word_mapping import map_fields, template_fields
from campflow.render.wordmerge import TemplateError, WordTemplate, merge_document
from campflow.store import db
from tasks.kinds import document_mailing
from tasks.kinds.document_mailing import MergePlan, file_name, write_documents
from tests.conftest import EXAMPLES, load_files, rows, scalar, target_everyone

WORD = Path(__file__).resolve().parent / "fixtures" / "word"
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"

PARTIES = """FICHE;TIERS;NOM;ADRESSE;CP;VILLE;PAYS;SECTEUR;STAT(2)
PRO;P001;Boulangerie Lefèvre;12 rue de l'Église;69001;Lyon;FR;Commerce;A
PRO;P002;Menuiserie Gaëlle;3 place Bellecour;69002;Lyon;FR;BTP;B
CLI;C001;Société Générale d'Équipements;5 avenue Foch;75016;Paris;FR;Industrie;A
CLI;C002;Ébénisterie Noël;Rue du Rhône 4;1204;Genève;CH;;
"""
CONTACTS = """TIERS;CONTACT;CIVILITE;NOM;PRENOM
P001;C1;Mme;Lefèvre;Hélène
P001;C2;M.;Gérard;Loïc
C001;C1;M.;Dupré;François
"""
SPECS = """kind: Operation
code: OP
label: Courrier de rentrée
timezone: Europe/Paris
starts_at: 2026-03-01T09:00
party_kinds: [prospect, client]
steps:
  - code: NL
    label: Brief (Word 2010, complex fields)
    kind: document_mailing
    next: []
    document:
      template: templates/test_winword2010.docx
      fields: {Titel: contact.title, Voornaam: T2.PRENOM, Achternaam: contact.last_name,
               Adresregel_1: party.address, Postcode: CP, Plaats: party.city, Provincie: party.secteur,
               Land_of_regio: PCFIDX.PAYS}
  - code: MAC
    label: Letter (Mac Word 2011, simple fields)
    kind: document_mailing
    next: []
    document:
      template: templates/test_macword2011.docx
      fields: {first_name: contact.first_name, last_name: contact.last_name, address_line: party.address,
               postal_code: party.postal_code, city: party.city, state: party.secteur,
               country: party.country, date: operation.starts_at}
  - code: SPACES
    label: Names with spaces
    kind: document_mailing
    next: []
    document:
      template: templates/test_spaces.docx
      fields: {Singleword: party.code, Hello world: party.name, "More than one space": VILLE}
  - code: MULTI
    label: Fields in several elements
    kind: document_mailing
    next: []
    document:
      template: templates/test_multiple_elements.docx
      fields: {foo: party.name, bar: contact.last_name, gak: party.city}
  - code: TABLE
    label: Fields in a table row
    kind: document_mailing
    next: []
    document:
      template: templates/test_merge_table_rows.docx
      fields: {student_name: party.name, study_name: operation.label, class_code: party.code,
               class_name: party.secteur, class_grade: party.stat(2), thesis_grade: target.status}
  - code: CATALOGUE
    label: Envoi du catalogue
    kind: document_mailing
    next: []
    document:
      template: templates/catalogue.docx
      fields: {Societe: party.name, Ville: party.city}
      per_party: true
"""


def run_cli(cli, *args):
    result = cli(*args)
    assert result.code == 0, result.err
    return result


def templates(folder: Path) -> Path:
    """The Word fixtures and the example catalogue, next to the spec."""
    target = folder / "templates"
    target.mkdir(parents=True, exist_ok=True)
    for path in WORD.glob("*.docx"):
        shutil.copy(path, target / path.name)
    shutil.copy(EXAMPLES / "specs" / "templates" / "catalogue.docx", target / "catalogue.docx")
    return target


@pytest.fixture
def operation(database, cli, tmp_path):
    """Four parties, three contacts (P001's targeted one is C2), every step holding them all."""
    templates(tmp_path)
    load_files(cli, tmp_path, PARTIES, CONTACTS, SPECS)
    target_everyone(("P001", "C2"))
    return tmp_path


def merge(step: str, out: Path, **settings):
    """Run the kind on OP/step in one transaction, as the flow does."""
    step_id, stored = rows("select s.id, s.settings from step s join operation o on o.id = s.operation_id "
                           "where o.code = 'OP' and s.code = :code", code=step)[0]
    document = {**stored["document"], **settings}
    ctx = StepContext(operation_id=scalar("select id from operation where code = 'OP'"), operation_code="OP",
                      step_id=step_id, step_code=step, kind="document_mailing",
                      settings={**stored, "document": document}, output_dir=out)
    with db.session() as session:
        return step_kind("document_mailing").run(session, ctx)


def section_texts(path) -> list[str]:
    """The text of each section of a document: paragraphs and table cells, a line each."""
    body = docx.Document(str(path) if isinstance(path, Path) else path).element.body
    sections, lines = [], []
    for element in body:
        for paragraph in element.iter(f"{W}p"):
            lines.append("".join(t.text or "" for t in paragraph.iter(f"{W}t")))
            if paragraph.find(f"{W}pPr/{W}sectPr") is not None and element.tag == f"{W}p":
                sections.append("\n".join(lines))
                lines = []
        if element.tag == f"{W}sectPr":
            sections.append("\n".join(lines))
    return sections


def fields_left(path: Path) -> list[str]:
    """Traces of merge fields in the merged body: field codes, placeholders, «names»."""
    with zipfile.ZipFile(path) as package:
        xml = package.read("word/document.xml").decode("utf-8")
    return [mark for mark in ("MERGEFIELD", "MergeField", "fldSimple", "instrText", "«") if mark in xml]


def statuses(step: str) -> dict[str, str]:
    return dict(rows("select p.code, st.status from step_target st join party p on p.id = st.party_id "
                     "join step s on s.id = st.step_id where s.code = :step", step=step))


class TestWordFixtures:
    """Each real Word document of tests/fixtures/word, merged with a `fields:` mapping."""

    @pytest.mark.parametrize(("step", "expected"), [
        ("NL", {"C001": ["M. François Dupré", "5 avenue Foch", "75016 Paris Industrie FR", "Dear François,"],
                "C002": ["Rue du Rhône 4", "1204 Genève  CH"],
                "P001": ["M. Loïc Gérard", "12 rue de l'Église", "69001 Lyon Commerce FR", "Dear Loïc,"],
                "P002": ["3 place Bellecour", "69002 Lyon BTP FR"]}),
        ("MAC", {"C001": ["François Dupré", "5 avenue Foch", "75016 Paris Industrie FR",
                          "Groningen, 01/03/2026 09:00,", "Dear François,"],
                 "C002": ["Rue du Rhône 4", "1204 Genève  CH"],
                 "P001": ["Loïc Gérard", "Dear Loïc,"], "P002": ["3 place Bellecour"]}),
        ("SPACES", {"C001": ["C001", "Société Générale d'Équipements", "Paris"],
                    "C002": ["C002", "Ébénisterie Noël", "Genève"],
                    "P001": ["P001", "Boulangerie Lefèvre", "Lyon"], "P002": ["P002", "Menuiserie Gaëlle"]}),
        ("MULTI", {"C001": ["Société Générale d'Équipements", "Dupré", "Paris"],
                   "C002": ["Ébénisterie Noël", "Genève"], "P001": ["Boulangerie Lefèvre", "Gérard", "Lyon"],
                   "P002": ["Menuiserie Gaëlle", "Lyon"]}),
        ("TABLE", {"C001": ["Société Générale d'Équipements received the grades for Courrier de rentrée",
                            "C001", "Industrie", "A", "to_process"],
                   "C002": ["Ébénisterie Noël received the grades"],
                   "P001": ["Boulangerie Lefèvre received", "P001", "Commerce"],
                   "P002": ["Menuiserie Gaëlle received", "P002", "BTP", "B"]}),
    ])
    def test_each_party_gets_its_section(self, operation, step, expected):
        out = operation / "out"
        outcome = merge(step, out)
        path = out / f"OP-{step}.docx"
        assert outcome.outputs == (path,)
        assert (outcome.processed, outcome.statuses) == (4, {"ok_continue": 4})
        assert outcome.message.split(";")[0] == f"4 parties merged into OP-{step}.docx"  # then the blanks
        sections = section_texts(path)
        assert len(sections) == 4  # one section per party, by party code
        for text, (code, fragments) in zip(sections, sorted(expected.items()), strict=True):
            for fragment in fragments:
                assert fragment in text, (code, fragment, text)
        assert fields_left(path) == []
        assert statuses(step) == {code: "ok_continue" for code in ("C001", "C002", "P001", "P002")}
        assert [p.name for p in out.iterdir()] == [path.name]  # no temporary file left

    def test_sections_break_to_a_new_page(self, operation):
        merge("NL", operation / "out")
        body = docx.Document(str(operation / "out" / "OP-NL.docx")).element.body
        breaks = body.findall(f"{W}p/{W}pPr/{W}sectPr")
        assert len(breaks) == 3 and body[-1].tag == f"{W}sectPr"
        # no w:type: each section starts on a new page, with the template's page size
        assert all(b.find(f"{W}type") is None and b.find(f"{W}pgSz") is not None for b in breaks)

    def test_mail_merge_link_is_dropped(self, operation):
        merge("NL", operation / "out")
        with zipfile.ZipFile(operation / "out" / "OP-NL.docx") as package:
            assert b"mailMerge" not in package.read("word/settings.xml")


class TestTableFieldNames:
    def test_table_field_names_and_own_names_per_party(self, operation):
        with db.engine().begin() as conn:
            conn.exec_driver_sql("update party set address = E'5 avenue Foch\\nBâtiment B' where code = 'C001'")
        out = operation / "out"
        outcome = merge("CATALOGUE", out)
        each = out / "OP-CATALOGUE"
        assert outcome.outputs == (out / "OP-CATALOGUE.docx", *(each / f"{c}.docx" for c in
                                                                 ("C001", "C002", "P001", "P002")))
        assert outcome.message.split(";")[0].endswith("and one file per party in OP-CATALOGUE/")
        merged = section_texts(out / "OP-CATALOGUE.docx")
        assert len(merged) == 4
        c001 = section_texts(each / "C001.docx")
        assert len(c001) == 1 and c001[0] == merged[0]
        lines = c001[0].splitlines()
        # Societe and Ville through fields:; T2__…, PCFIDX__…, MANIF__… by their names
        assert lines[:4] == ["Société Générale d'Équipements", "M. François Dupré",
                             "5 avenue FochBâtiment B", "75016 Paris"]
        assert "Objet : votre catalogue Courrier de rentrée" in lines
        assert any("préparé pour Société Générale d'Équipements :" in line for line in lines)
        assert any("dans vos locaux de Paris ou" in line for line in lines)
        # a line break inside a value is a Word line break
        assert b"<w:cr/>" in zipfile.ZipFile(each / "C001.docx").read("word/document.xml")
        p001 = section_texts(each / "P001.docx")[0]
        assert p001.splitlines()[1] == "M. Loïc Gérard"  # the targeted contact, not the first
        assert fields_left(out / "OP-CATALOGUE.docx") == [] and fields_left(each / "P002.docx") == []

    def test_one_column_per_field(self, operation):
        with db.session() as session:
            step_id, stored = rows("select id, settings from step where code = 'CATALOGUE'")[0]
            ctx = StepContext(scalar("select id from operation"), "OP", step_id, "CATALOGUE",
                              "document_mailing", stored, operation / "out")
            plan = document_mailing.plan_merge(session, ctx)
        # Ville and PCFIDX__VILLE are both party.city; PCFIDX__NOM and Societe party.name
        assert [str(c.ref) for c in plan.columns] == [
            "party.name", "contact.title", "contact.first_name", "contact.last_name", "party.address",
            "party.postal_code", "party.city", "operation.label"]
        assert plan.values(["N", "T", "F", "L", "A", "P", "C", "O"])["PCFIDX__VILLE"] == "C"


class TestRefusals:
    def test_text_file_renamed_docx_is_refused_at_apply(self, database, cli, tmp_path):
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "lettre.docx").write_text("Bonjour «Nom»", encoding="utf-8")
        (tmp_path / "op.yaml").write_text(SPECS.split("  - code: NL")[0] + """  - code: L
    label: Lettre
    kind: document_mailing
    document: {template: templates/lettre.docx}
""", encoding="utf-8")
        result = cli("apply", tmp_path / "op.yaml")
        assert result.code == 1
        assert "op.yaml:11: lettre.docx is not a Word .docx file: it is not a zip package" in result.err
        assert scalar("select count(*) from operation") == 0

    def test_zip_without_document_is_refused(self, tmp_path):
        path = tmp_path / "archive.docx"
        with zipfile.ZipFile(path, "w") as package:
            package.writestr("readme.txt", "not a letter")
        with pytest.raises(TemplateError, match="archive.docx is not a Word .docx file: it is a zip "
                                                "without word/document.xml"):
            template_fields(path)

    @pytest.mark.parametrize(("head", "what"), [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "Word 97-2003 .doc"), (b"{\\rtf1\\ansi", "RTF file"),
        (b"", "the file is empty")])
    def test_other_files_are_named(self, tmp_path, head, what):
        path = tmp_path / "old.docx"
        path.write_bytes(head)
        with pytest.raises(TemplateError, match=what):
            WordTemplate(path)

    def test_unmapped_field_is_refused_at_apply_with_its_name(self, database, cli, tmp_path):
        templates(tmp_path)
        spec = (SPECS.replace("Voornaam: T2.PRENOM, ", "").replace("Singleword: party.code, ", "")
                .replace("{Societe: party.name, Ville: party.city}", "{Societe: party.name}")
                .replace("foo: party.name", "foo: PCFIDX__NOM"))  # TABLE__FIELD in fields: too
        (tmp_path / "op.yaml").write_text(spec, encoding="utf-8")
        result = cli("apply", tmp_path / "op.yaml")
        assert result.code == 1
        errors = [line.split("/")[-1] for line in result.err.splitlines()]
        assert ("op.yaml:13: template test_winword2010.docx: merge field 'Voornaam' has no mapping "
                "(its name is not TABLE__FIELD such as PCFIDX__NOM); add it under document.fields, "
                "e.g. \"Voornaam: contact.first_name\"") in errors
        assert any("test_spaces.docx: merge field 'Singleword' has no mapping" in e for e in errors)
        # a bare name that is a campflow field is suggested as such
        assert any("catalogue.docx: merge field 'Ville' has no mapping" in e and '"Ville: party.city"' in e
                   for e in errors)
        assert sum("has no mapping" in e for e in errors) == 3
        assert scalar("select count(*) from operation") == 0

    def test_misspelt_table_field_name(self):
        catalog = FieldCatalog(aliases={"CLI_NOM": "party.name"})
        mapping, problems = map_fields(["PCFIDX__NOMM", "T2__PRENOM", "cli_nom", "Nom"],
                                       {"nom": "party.name"}, catalog, "template x.docx")
        assert mapping == {"T2__PRENOM": "T2__PRENOM", "cli_nom": "cli_nom", "Nom": "party.name"}
        assert len(problems) == 1 and problems[0].startswith(
            "template x.docx: merge field 'PCFIDX__NOMM': unknown field 'NOMM' in table party; closest: NOM")

    def test_template_broken_after_apply_is_refused_before_claiming(self, operation):
        (operation / "templates" / "test_spaces.docx").write_text("oops", encoding="utf-8")
        with pytest.raises(SpecError, match="step OP/SPACES document.template: test_spaces.docx is not a Word"):
            merge("SPACES", operation / "out")
        assert set(statuses("SPACES").values()) == {"to_process"}
        assert not (operation / "out").exists()

    def test_nothing_to_process(self, operation):
        merge("SPACES", operation / "out")
        again = merge("SPACES", operation / "out2")
        assert (again.processed, again.outputs, again.message) == (0, (), "no party to process")


def header_letter(path: Path) -> Path:
    """A letter whose header holds a merge field (each section needs its own filled header)."""
    document = docx.Document()
    field = OxmlElement("w:fldSimple")
    field.set(qn("w:instr"), " MERGEFIELD PCFIDX__NOM ")
    run = OxmlElement("w:r")
    text = OxmlElement("w:t")
    text.text = "«PCFIDX__NOM»"
    run.append(text)
    field.append(run)
    document.sections[0].header.paragraphs[0]._p.append(field)
    document.add_paragraph("Bonjour ")._p.append(copy.deepcopy(field))
    document.save(path)
    return path


class TestWordTemplate:
    def test_fields_in_headers_get_a_copy_per_section(self, tmp_path):
        template = WordTemplate(header_letter(tmp_path / "entete.docx"))
        assert template.fields == ("PCFIDX__NOM",)
        target = io.BytesIO()
        template.write(target, [{"PCFIDX__NOM": name} for name in ("Alpha", "Bêta", "Gamma")])
        merged = docx.Document(io.BytesIO(target.getvalue()))
        assert [s.header.paragraphs[0].text for s in merged.sections] == ["Alpha", "Bêta", "Gamma"]
        assert [p.text for p in merged.paragraphs] == ["Bonjour Alpha", "Bonjour Bêta", "Bonjour Gamma"]

    def test_merge_document_for_one_party(self):
        values = {"first_name": "Zoé", "last_name": "Åström", "city": "Malmö", "date": None,
                  "address_line": "Storgatan 1\x07", "unused": "x"}
        merged = docx.Document(io.BytesIO(merge_document(WORD / "test_macword2011.docx", values)))
        text = "\n".join(p.text for p in merged.paragraphs)
        assert "Zoé Åström" in text and "Storgatan 1\n" in text and "Malmö" in text
        assert "Groningen, ," in text  # a missing value merges as blank, never «date»
        assert len(merged.sections) == 1

    def test_no_record_is_an_error(self):
        with pytest.raises(ValueError, match="no record to merge"):
            WordTemplate(WORD / "test_spaces.docx").write(io.BytesIO(), [])

    def test_many_parties_stream_into_one_document(self, tmp_path):
        template = WordTemplate(WORD / "test_merge_table_rows.docx")
        plan = MergePlan(template, (), tuple((name, 0) for name in template.fields))
        files, count = write_documents(plan, ((f"P{n:04}", f"n°{n}") for n in range(600)), tmp_path,
                                       "OP-BIG", per_party=False)
        assert count == 600 and files == [tmp_path / "OP-BIG.docx"]
        sections = section_texts(tmp_path / "OP-BIG.docx")
        assert len(sections) == 600 and "n°599 received the grades" in sections[-1]

    def test_a_failure_leaves_no_file(self, tmp_path):
        template = WordTemplate(WORD / "test_spaces.docx")
        plan = MergePlan(template, (), tuple((name, 0) for name in template.fields))

        def broken_rows():
            yield ("P1", "un")
            yield ("P2", "deux")
            raise RuntimeError("connection lost")

        with pytest.raises(RuntimeError):
            write_documents(plan, broken_rows(), tmp_path, "OP-S1", per_party=True)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(("code", "name"), [
        ("C001", "C001.docx"), ("A/C", "A_C.docx"), ("a_b", "a_b~2.docx"), ("A/B", "A_B~2.docx"), ("../../etc", "etc.docx"),
        ("CON", "_CON.docx"), ("Société 1", "Société_1.docx"), ("...", "party.docx")])
    def test_file_names_are_safe_and_unique(self, code, name):
        used = {"a_b.docx"}
        assert file_name(code, used) == name


class TestOutputStorage:
    def test_files_stay_local_outside_a_run(self, tmp_path, monkeypatch):
        monkeypatch.delenv(storage.STORAGE_VARIABLE, raising=False)
        assert storage.output_storage() is None
        monkeypatch.setenv(storage.STORAGE_VARIABLE, "local")
        assert storage.output_storage() is None
        file = tmp_path / "OP" / "20260301-090000-0a1b2c3d" / "S1" / "OP-S1.docx"
        file.parent.mkdir(parents=True)
        file.write_bytes(b"letter")
        assert storage.publish(file.parent, [file]) == (file,)

    def test_publish_to_a_local_file_system(self, tmp_path):
        from prefect.filesystems import LocalFileSystem

        step = tmp_path / "out" / "OP" / "20260301-090000-0a1b2c3d" / "S1"
        (step / "OP-S1").mkdir(parents=True)
        (step / "OP-S1" / "P1.docx").write_bytes(b"one")
        shared = tmp_path / "shared"
        published = storage.publish_to(LocalFileSystem(basepath=str(shared)), step, [step / "OP-S1" / "P1.docx"])
        assert published == (shared / "OP" / "20260301-090000-0a1b2c3d" / "S1" / "OP-S1" / "P1.docx",)
        assert published[0].read_bytes() == b"one"
        assert [p.name for p in published[0].parent.iterdir()] == ["P1.docx"]

    def test_publish_to_a_remote_file_system(self, tmp_path):
        import fsspec
        from prefect.filesystems import RemoteFileSystem

        step = tmp_path / "OP" / "20260301-090000-0a1b2c3d" / "S1"
        step.mkdir(parents=True)
        (step / "OP-S1.docx").write_bytes(b"merged")
        bucket = f"memory://campflow-{uuid.uuid4().hex}"
        try:
            published = storage.publish_to(RemoteFileSystem(basepath=bucket), step, [step / "OP-S1.docx"])
            assert published == (f"{bucket}/OP/20260301-090000-0a1b2c3d/S1/OP-S1.docx",)
            assert fsspec.filesystem("memory").cat_file(published[0]) == b"merged"
        finally:
            fsspec.filesystem("memory").rm(bucket, recursive=True)

    def test_a_named_block_that_does_not_exist(self, monkeypatch, prefect):
        monkeypatch.setenv(storage.STORAGE_VARIABLE, "no-such-block")
        with pytest.raises(Exception, match="no filesystem block of that name is saved"):
            storage.output_storage()


LETTER_OPERATION = """kind: Operation
code: LETTRE
label: Lettre aux clients
party_kinds: [client]
steps:
  - code: COURRIER
    label: Courrier
    kind: document_mailing
    event: COURRIER_ENVOYE
    document:
      template: templates/catalogue.docx
      fields: {Societe: party.name, Ville: party.city}
      per_party: true
"""


class TestFlow:
    def test_run_operation_merges_and_publishes(self, database, cli, tmp_path, prefect, monkeypatch):
        from prefect.filesystems import LocalFileSystem

        from flows.run_operation import run_operation

        templates(tmp_path)
        for name, content in (("parties.csv", PARTIES), ("op.yaml", LETTER_OPERATION)):
            (tmp_path / name).write_text(content, encoding="utf-8")
        run_cli(cli, "parties", "import", tmp_path / "parties.csv")
        run_cli(cli, "apply", tmp_path / "op.yaml")
        run_cli(cli, "targets", "add", "LETTRE", "--where", "kind in (CLI)")
        block = f"campflow-output-test-{uuid.uuid4().hex[:8]}"
        LocalFileSystem(basepath=str(tmp_path / "shared")).save(block)
        monkeypatch.setenv(storage.STORAGE_VARIABLE, block)
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        report = {r["code"]: r for r in run_operation("LETTRE")}["COURRIER"]
        assert (report["state"], report["processed"]) == ("Completed", 2)
        assert report["after"] == {"ok_continue": 2}
        published = [Path(p) for p in report["outputs"]]
        assert [p.relative_to(tmp_path / "shared").parts[0] for p in published] == ["LETTRE"] * 3
        assert [p.name for p in published] == ["LETTRE-COURRIER.docx", "C001.docx", "C002.docx"]
        assert [s.splitlines()[0] for s in section_texts(published[0])] == [
            "Société Générale d'Équipements", "Ébénisterie Noël"]
        local = next((tmp_path / "out" / "LETTRE").glob("*/*/LETTRE-COURRIER.docx"))
        assert local.read_bytes() == published[0].read_bytes()
        assert scalar("select count(*) from event where code = 'COURRIER_ENVOYE'") == 2
        again = {r["code"]: r for r in run_operation("LETTRE")}["COURRIER"]
        assert (again["state"], again["processed"]) == ("Skipped", 0)
