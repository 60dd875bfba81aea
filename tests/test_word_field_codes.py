"""Word's field codes: French Word's CHAMP DE FUSION merged like MERGEFIELD, and at apply every
field code the merge does not understand refused by name. Documents are real .docx files
written with python-docx and opened back."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pytest
from docx.oxml import OxmlElement
from docx.oxml.ns import qn

from campflow.render.word_codes import merge_tokens
from campflow.render.wordmerge import WordTemplate, merge_document
from tests.conftest import scalar


def _run(parent, tag: str | None = None, text: str | None = None, **attributes: str):
    run = OxmlElement("w:r")
    if tag:
        child = OxmlElement(tag)
        for name, value in attributes.items():
            child.set(qn(name), value)
        if text is not None:
            child.text = text
            child.set(qn("xml:space"), "preserve")
        run.append(child)
    parent.append(run)
    return run


def simple_field(paragraph, instruction: str, shown: str) -> None:
    """A field as `w:fldSimple`, showing `shown` until merged."""
    field = OxmlElement("w:fldSimple")
    field.set(qn("w:instr"), instruction)
    _run(field, "w:t", shown)
    paragraph._p.append(field)


def complex_field(paragraph, instruction: str, shown: str, split: bool = False) -> None:
    """A field over runs: begin, instruction (in two runs with `split`), separate, result, end."""
    p = paragraph._p
    _run(p, "w:fldChar", **{"w:fldCharType": "begin"})
    parts = [instruction[:len(instruction) // 2], instruction[len(instruction) // 2:]] if split else [instruction]
    for part in parts:
        _run(p, "w:instrText", part)
    _run(p, "w:fldChar", **{"w:fldCharType": "separate"})
    _run(p, "w:t", shown)
    _run(p, "w:fldChar", **{"w:fldCharType": "end"})


def letter(path: Path, fields: list[tuple[str, str, str]]) -> Path:
    """A .docx with one paragraph per field: (form, instruction, shown); form is simple/complex/split."""
    document = docx.Document()
    for form, instruction, shown in fields:
        paragraph = document.add_paragraph("Ville : ")
        if form == "simple":
            simple_field(paragraph, instruction, shown)
        else:
            complex_field(paragraph, instruction, shown, split=form == "split")
    document.save(path)
    return path


def text_of(data: bytes) -> str:
    return "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)


FRENCH = [
    ("simple", " CHAMP DE FUSION MaVille ", "«MaVille»"),
    ("complex", ' CHAMP DE FUSION "MonNom" \\* MERGEFORMAT ', "«MonNom»"),
    ("split", " CHAMP DE FUSION MonCode ", "«MonCode»"),
    ("complex", " CHAMPFUSION MonCP ", "«MonCP»"),
    ("simple", " champ de fusion MaRue \\* Upper ", "«MaRue»"),
    ("complex", " mergefield MonPays ", "«MonPays»"),
]


class TestFrenchMergeFields:
    @pytest.mark.parametrize(("tokens", "expected"), [
        (["CHAMP", "DE", "FUSION", "Ville", "\\*", "MERGEFORMAT"], ["MERGEFIELD", "Ville", "\\*", "MERGEFORMAT"]),
        (["Champ", "de", "fusion", "Ville"], ["MERGEFIELD", "Ville"]),
        (["CHAMPFUSION", "Ville"], ["MERGEFIELD", "Ville"]),
        (["mergefield", "Ville"], ["MERGEFIELD", "Ville"]),
        (["next"], ["NEXT"]),
        (["PAGE"], ["PAGE"]),
        (["CHAMP", "Ville"], ["CHAMP", "Ville"]),
    ])
    def test_codes_read_as_mergefield(self, tokens, expected):
        assert merge_tokens(tokens) == expected

    def test_simple_and_complex_french_fields_are_merged(self, tmp_path):
        path = letter(tmp_path / "lettre.docx", FRENCH)
        template = WordTemplate(path)
        assert template.fields == ("MaVille", "MonNom", "MonCode", "MonCP", "MaRue", "MonPays")
        assert template.unknown_codes == ()
        merged = merge_document(template, {"MaVille": "Nîmes", "MonNom": "Lefèvre", "MonCode": "P001",
                                           "MonCP": "30000", "MaRue": "rue de l'église", "MonPays": "France"})
        (tmp_path / "merged.docx").write_bytes(merged)
        text = text_of((tmp_path / "merged.docx").read_bytes())  # opened back by python-docx
        assert text.splitlines() == ["Ville : Nîmes", "Ville : Lefèvre", "Ville : P001", "Ville : 30000",
                                     "Ville : RUE DE L'ÉGLISE", "Ville : France"]
        body = zipfile.ZipFile(io.BytesIO(merged)).read("word/document.xml").decode("utf-8")
        assert "«" not in text and "CHAMP" not in body and "MERGEFIELD" not in body  # no field left

    def test_fields_word_computes_itself_are_left_to_word(self, tmp_path):
        path = letter(tmp_path / "lettre.docx", [("complex", " PAGE ", "1"), ("simple", " DATE \\@ dd/MM/yyyy ", "x"),
                                                 ("complex", ' HYPERLINK "https://example.com" ', "site"),
                                                 ("simple", " CHAMP DE FUSION MaVille ", "«MaVille»")])
        template = WordTemplate(path)
        assert template.unknown_codes == ()
        assert "Ville : Nîmes" in text_of(merge_document(template, {"MaVille": "Nîmes"}))


SPEC = """kind: Operation
code: LETTRE
label: Lettre
party_kinds: [prospect]
steps:
  - code: L
    label: Lettre
    kind: document_mailing
    next: []
    document:
      template: lettre.docx
      fields: {MaVille: party.city, MonNom: party.name, MonCode: party.code, MonCP: party.postal_code,
               MaRue: party.address, MonPays: party.country}
"""


class TestAtApply:
    def test_a_french_template_applies(self, database, cli, tmp_path):
        letter(tmp_path / "lettre.docx", FRENCH)
        (tmp_path / "op.yaml").write_text(SPEC, encoding="utf-8")
        result = cli("apply", tmp_path / "op.yaml")
        assert result.code == 0, result.err

    def test_field_codes_the_merge_does_not_understand_are_refused_by_name(self, database, cli, tmp_path):
        letter(tmp_path / "lettre.docx", [*FRENCH, ("complex", ' SI "a" = "b" "oui" "non" ', "non"),
                                          ("simple", " SERIENDRUCKFELD Stadt ", "«Stadt»"),
                                          ("complex", ' IF { MERGEFIELD X } = "1" "a" "b" ', "b"),
                                          ("simple", " ASK Question ", "")])
        (tmp_path / "op.yaml").write_text(SPEC, encoding="utf-8")
        result = cli("apply", tmp_path / "op.yaml")
        assert result.code == 1
        err = " ".join(result.err.split())
        for code in ("SI", "SERIENDRUCKFELD", "IF", "ASK"):
            assert (f"op.yaml:11: template lettre.docx: field code {code} is not one campflow's merge "
                    "understands") in err
        assert "remove it, or replace it with a merge field" in err
        assert "Traceback" not in result.err
        assert scalar("select count(*) from operation") == 0
