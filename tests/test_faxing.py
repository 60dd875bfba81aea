"""The faxing kind: merged documents sent by e-mail-to-fax to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
from docx import Document

from tasks.kinds.faxing import normalise_fax
from tests.conftest import final_task_runs, rows

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "word"
PARTIES = """FICHE;TIERS;NOM;VILLE;FAX
PRO;F1;Imprimerie Lefèvre;Paris;01 42 68 53 00
CLI;F2;Garage de Genève;Genève;+41 44 668 18 00
PRO;F3;Fax Erroné;Lyon;04 7X 00 00 00
CLI;F4;Sans Fax;Brest;
"""
CONTACTS = """TIERS;CONTACT;NOM;PRENOM;FONCTION
F1;C1;Lefèvre;Hélène;DIRECTION
F2;C1;Müller;Jürg;DIRECTION
"""
SPEC = """kind: Operation
code: FAX
label: Fax du catalogue
party_kinds: [prospect, client]
steps:
  - code: F1
    label: Fax
    kind: faxing
    event: FAX_ENVOYE
    document:
      template: letter.docx
      channel: {gateway}
      fields: {{first_name: contact.first_name, last_name: contact.last_name, address_line: party.name,
               city: party.city, state: "party.country|", postal_code: "party.postal_code|",
               country: "party.country|France", date: "operation.starts_at|"}}
    next: []
"""


@pytest.mark.parametrize(("raw", "expected"), [
    ("01 42 68 53 00", "+33142685300"),
    ("+33 (0)1 42 68 53 00", "+33142685300"),
    ("0033 1 42 68 53 00", "+33142685300"),
    ("04.78.00.00.00", "+33478000000"),
    ("+41 44 668 18 00", "+41446681800"),
])
def test_numbers_are_normalised_to_e164(raw, expected):
    assert normalise_fax(raw, "FR") == expected


@pytest.mark.parametrize(("raw", "reason"), [
    ("01 4X 68 53 00", "it contains letters"),
    ("1-800-FLOWERS", "it contains letters"),
    ("12", "not a valid number"),
    ("", "no fax number"),
    (None, "no fax number"),
])
def test_invalid_numbers_say_why(raw, reason):
    with pytest.raises(ValueError, match=reason):
        normalise_fax(raw, "FR")


def setup(cli, tmp_path, gateway: str = "fax") -> None:
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(FIXTURES / "test_macword2011.docx", specs / "letter.docx")
    (specs / "fax.yaml").write_text(SPEC.format(gateway=gateway), encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv", "-q"),
                 ("contacts", "import", tmp_path / "contacts.csv", "-q"),
                 ("apply", specs), ("targets", "add", "FAX", "--where", "kind in (PRO, CLI)")):
        result = cli(*args)
        assert result.code == 0, result.err


def statuses() -> dict[str, tuple[str, str | None]]:
    return {code: (status, reason) for code, status, reason in rows(
        "select p.code, st.status, st.reason from step_target st join party p on p.id = st.party_id order by 1")}


def docx_text(data: bytes) -> str:
    return "\n".join(p.text for p in Document(io.BytesIO(data)).paragraphs)


@pytest.fixture
def fax_operation(database, cli, tmp_path, prefect, channels, smtp, monkeypatch):
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    setup(cli, tmp_path)
    add_smtp_channel(cli, "fax-smtp", smtp.port)
    result = cli("channels", "add-fax", "fax", "--channel", "fax-smtp", "--domain", "fax.example.com")
    assert result.code == 0, result.err
    listed = cli("channels", "list", "--json")
    assert {"name": "fax", "type": "fax", "server": "<number>@fax.example.com"}.items() <= \
        next(c for c in json.loads(listed.out) if c["name"] == "fax").items()
    return smtp


def add_smtp_channel(cli, name: str, port: int) -> None:
    result = cli("channels", "add-smtp", name, "--host", "127.0.0.1", "--port", str(port), "--plain",
                 "--sender", "Service courrier <courrier@example.com>")
    assert result.code == 0, result.err


def test_each_party_is_faxed_its_own_document(fax_operation):
    from flows.run_operation import run_operation

    report = run_operation("FAX")[0]
    assert report["state"] == "Completed", report["reason"]
    received = fax_operation.messages()
    assert sorted(received) == ["+33142685300@fax.example.com", "+41446681800@fax.example.com"]
    paris = received["+33142685300@fax.example.com"]
    assert paris["X-Campflow-Party"] == "F1"
    assert "Imprimerie Lefèvre" in paris["Subject"]
    (attachment,) = list(paris.iter_attachments())
    assert attachment.get_filename() == "FAX-F1-F1.docx"
    text = docx_text(attachment.get_content())
    assert "Hélène" in text and "Lefèvre" in text and "Paris" in text
    assert "Jürg" in docx_text(next(received["+41446681800@fax.example.com"].iter_attachments()).get_content())
    assert statuses() == {
        "F1": ("ok_continue", None), "F2": ("ok_continue", None),
        "F3": ("failed", "invalid fax number '04 7X 00 00 00': it contains letters"),
        "F4": ("failed", "no fax number")}
    assert rows("select count(*) from event where code = 'FAX_ENVOYE'") == [(2,)]

    again = run_operation("FAX")[0]
    assert again["state"] == "Skipped"
    assert len(fax_operation.received) == 2  # never faxed twice


def test_a_refused_number_fails_only_that_party(fax_operation):
    from flows.run_operation import run_operation

    fax_operation.refuse["+41446681800@fax.example.com"] = "550 5.1.1 number not reachable"
    run_operation("FAX")
    result = statuses()
    assert result["F1"] == ("ok_continue", None)
    assert result["F2"][0] == "failed" and "550" in result["F2"][1]


def test_without_a_gateway_the_step_fails_naming_the_command(database, cli, tmp_path, prefect, channels,
                                                                monkeypatch):
    from campflow.core.kinds import REGISTRY, step_kind
    from flows.run_operation import run_operation

    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setitem(REGISTRY, "faxing", dataclasses.replace(step_kind("faxing"), retries=0))
    setup(cli, tmp_path, gateway="nowhere")
    state = run_operation("FAX", return_state=True)
    assert state.is_failed()
    task_run, = final_task_runs(state.state_details.flow_run_id)
    assert "no fax gateway named 'nowhere'" in task_run.state.message
    assert "campflow channels add-fax nowhere" in task_run.state.message
    assert statuses() == {}  # the step rolled back: nobody entered it, nothing was sent


def test_an_unknown_template_field_is_refused_at_apply(database, cli, tmp_path):
    setup_files = tmp_path / "specs"
    setup_files.mkdir()
    shutil.copy(FIXTURES / "test_macword2011.docx", setup_files / "letter.docx")
    (setup_files / "fax.yaml").write_text(SPEC.format(gateway="fax").replace(
        "first_name: contact.first_name, ", ""), encoding="utf-8")
    result = cli("apply", setup_files)
    assert result.code == 1
    assert "first_name" in result.err and "document.fields" in result.err
