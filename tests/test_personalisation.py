"""No message goes out with a silent hole: empty fields, their defaults, and apply's warning."""

from __future__ import annotations

import re

import pytest

from tests import test_faxing as faxing
from tests.conftest import scalar
from tests.test_document_mailing import merge, operation, section_texts  # noqa: F401  (a fixture)
from tests.test_emailing import PDF, SPEC, add_smtp, execute, run, setup_operation, statuses
from tests.test_faxing import docx_text, fax_operation  # noqa: F401  (a fixture)

# P1, P2, P5 are prospects; P3 is a client (its address repaired below), P4 a client without one
PROSPECT_NAME = "<p>Bonjour [[PRO.NOM{default}]],</p><p>Vous êtes invité.</p>\n"
SENT_TO_PROSPECTS = ["accueil@lefevre.fr", "contact@gaelle.fr", "pas@adresse.fr"]


@pytest.fixture
def mailing(database, cli, tmp_path, prefect, channels, smtp, monkeypatch):
    """Prepare the MAIL operation (prospects and clients) with the given HTML body; returns a runner."""
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))

    def prepare(body: str, name: str = "invite.html") -> None:
        setup_operation(cli, tmp_path, body=name, extra="", files={name: body})
        execute("update party set email = 'jean@noel.fr' where code = 'P3'")
        add_smtp(cli, "emailing", smtp.port)

    return prepare


class TestEmptyFieldsAtSend:
    def test_a_client_with_a_prospect_field_fails_with_the_field_named(self, mailing, smtp):
        mailing(PROSPECT_NAME.format(default=""))
        report = run()["S1"]
        assert sorted(smtp.messages()) == SENT_TO_PROSPECTS  # nothing reached jean@noel.fr
        assert statuses()["P3"] == (
            "failed", "[[PRO.NOM]] is empty for P3; give a default: [[PRO.NOM|text when empty]]")
        assert statuses()["P1"] == ("ok_continue", None)
        assert "3 messages sent" in report["reason"]
        assert "2 failed ([[PRO.NOM]] empty, no default: 1, no e-mail address: 1)" in report["reason"]

    def test_a_default_fills_the_hole(self, mailing, smtp):
        mailing(PROSPECT_NAME.format(default="|Madame, Monsieur"))
        run()
        received = smtp.messages()
        assert sorted(received) == sorted(["jean@noel.fr", *SENT_TO_PROSPECTS])
        client = received["jean@noel.fr"]
        assert "<p>Bonjour Madame, Monsieur,</p>" in client.get_body(("html",)).get_content()
        assert "Bonjour Madame, Monsieur," in client.get_body(("plain",)).get_content()
        prospect = received["accueil@lefevre.fr"].get_body(("html",)).get_content()
        assert "Bonjour Boulangerie Lefèvre &amp; fils," in prospect  # a value is still escaped
        assert statuses()["P3"] == ("ok_continue", None)

    def test_a_blank_value_is_empty_too(self, mailing, smtp):
        mailing("Bonjour [[PCFIDX.NOM]] de [[VILLE]]\n", "invite.txt")
        execute("update party set city = '   ' where code = 'P1'")
        run()
        assert sorted(smtp.messages()) == ["contact@gaelle.fr", "jean@noel.fr", "pas@adresse.fr"]
        assert statuses()["P1"] == (
            "failed", "[[VILLE]] is empty for P1; give a default: [[VILLE|text when empty]]")

    @pytest.mark.parametrize("body, expected", [
        ("Ville : {{ party.city }}\n", None),
        ("Ville : {{ party.city|default('inconnue') }}\n", "Ville : inconnue\n"),
        ("Ville :{% if party.city %} {{ party.city }}{% endif %}\n", "Ville :\n"),
    ])
    def test_jinja_bodies(self, mailing, smtp, body, expected):
        mailing(body, "ville.j2")
        execute("update party set city = null where code = 'P1'")
        run()
        received = smtp.messages()
        assert "contact@gaelle.fr" in received  # the others go out whatever happens to P1
        if expected is None:
            assert "accueil@lefevre.fr" not in received
            assert statuses()["P1"] == ("failed", "{{ party.city }} is empty for P1; give a default: "
                                                  "{{ party.city|default('text when empty') }}")
        else:
            text = received["accueil@lefevre.fr"].get_body(("plain",)).get_content().replace("\r\n", "\n")
            assert text == expected
            assert statuses()["P1"] == ("ok_continue", None)

    def test_the_subject_follows_the_rule(self, mailing, smtp, cli, tmp_path):
        mailing("Bonjour\n", "invite.txt")
        spec = tmp_path / "specs" / "op.yaml"
        spec.write_text(spec.read_text(encoding="utf-8").replace("[[PCFIDX.NOM]]", "[[CLI.NOM|cher client]]"),
                        encoding="utf-8")
        assert cli("apply", spec).code == 0
        run()
        subjects = {to: str(m["Subject"]) for to, m in smtp.messages().items()}
        assert subjects["accueil@lefevre.fr"] == "Invitation — cher client"
        assert subjects["jean@noel.fr"] == "Invitation — Ébénisterie Noël"


class TestFax:
    """A fax is sent: it follows the rule, through `document.fields` defaults."""

    @pytest.mark.parametrize("target", ["PRO.NOM", "PRO.NOM|Madame, Monsieur"])
    def test_a_client_with_a_prospect_field(self, fax_operation, cli, tmp_path, target):
        from flows.run_operation import run_operation

        spec = tmp_path / "specs" / "fax.yaml"
        spec.write_text(spec.read_text(encoding="utf-8").replace("address_line: party.name",
                                                                 f'address_line: "{target}"'), encoding="utf-8")
        applied = cli("apply", spec)
        assert applied.code == 0, applied.err
        warned = "merge field address_line (PRO.NOM) has a value for prospect parties only" in applied.err
        report = run_operation("FAX")[0]
        received = fax_operation.messages()
        client = "+41446681800@fax.example.com"
        assert "+33142685300@fax.example.com" in received
        if target == "PRO.NOM":
            assert warned
            assert client not in received
            assert faxing.statuses()["F2"] == ("failed", 'merge field address_line is empty for F2; give a default: '
                                                         'document.fields: {address_line: "PRO.NOM|text when empty"}')
            assert "1 merge field address_line empty, no default" in report["reason"]
        else:
            assert not warned
            assert "Madame, Monsieur" in docx_text(next(received[client].iter_attachments()).get_content())
            assert faxing.statuses()["F2"] == ("ok_continue", None)


class TestLetters:
    """Merged letters are printed and read before posting: defaults apply, holes are reported."""

    def test_blanks_are_reported_and_defaults_fill_them(self, operation):
        out = operation / "out"
        outcome = merge("CATALOGUE", out, fields={"Societe": "party.name", "Ville": "PRO.VILLE"})
        assert "merged blank where empty, by merge field (parties): " in outcome.message
        assert "Ville (2)" in outcome.message  # the two clients
        assert outcome.statuses == {"ok_continue": 4}
        execute("update step_target set status = 'to_process', processed_at = null")
        outcome = merge("CATALOGUE", out / "again", fields={"Societe": "party.name", "Ville": "PRO.VILLE|vos locaux"})
        assert "Ville (" not in outcome.message
        c001 = section_texts(out / "again" / "OP-CATALOGUE" / "C001.docx")[0]
        assert "75016 vos locaux" in c001.splitlines()


class TestApplyWarning:
    """`apply` warns (and writes) when a kind's table meets an operation targeting other kinds."""

    def write(self, tmp_path, body: str, subject: str = "Invitation — [[PCFIDX.NOM]]",
              kinds: str = "[prospect, client]"):
        specs = tmp_path / "specs"
        specs.mkdir()
        (specs / "plan salon.pdf").write_bytes(PDF)
        (specs / "invite.html").write_text(body, encoding="utf-8")
        spec = SPEC.format(kind="emailing", body="invite.html", extra="").replace(
            "Invitation — [[PCFIDX.NOM]]", subject).replace("[prospect, client]", kinds)
        (specs / "op.yaml").write_text(spec, encoding="utf-8")
        return specs

    def test_a_prospect_field_in_an_operation_with_clients(self, database, cli, tmp_path):
        specs = self.write(tmp_path, "<p>Bonjour,</p>\n<p>[[PRO.NOM]] est invitée.</p>\n",
                           subject="Invitation — [[CLI.NOM]]")
        result = cli("apply", specs)
        assert result.code == 0, result.err
        err = " ".join(result.err.split())
        assert (f"warning: {specs / 'invite.html'}:2: [[PRO.NOM]] has a value for prospect parties only; "
                "operation MAIL also targets client, whose messages will fail on it; give a default: "
                "[[PRO.NOM|Madame, Monsieur]]") in err
        assert (f"warning: {specs / 'op.yaml'}:12: [[CLI.NOM]] has a value for client parties only; "
                "operation MAIL also targets prospect") in err
        assert scalar("select count(*) from operation where code = 'MAIL'") == 1  # written anyway
        assert "warning:" in " ".join(cli("apply", specs, "--check").err.split())

    @pytest.mark.parametrize("body, kinds", [
        ("<p>[[PRO.NOM|Madame, Monsieur]]</p>", "[prospect, client]"),
        ("<p>[[PRO.NOM|]]</p>", "[prospect, client]"),
        ("<p>[[PRO.NOM]]</p>", "[prospect]"),
        ("<p>[[PCFIDX.NOM]]</p>", "[prospect, client]"),
    ])
    def test_no_warning(self, database, cli, tmp_path, body, kinds):
        result = cli("apply", self.write(tmp_path, body, kinds=kinds))
        assert result.code == 0, result.err
        assert "warning:" not in result.err


class TestMarkers:
    """Markers and their defaults, without database or server."""

    @pytest.mark.parametrize("syntax, text, found", [
        ("html", "[[ PRO.NOM | Madame, Monsieur ]]", [("PRO.NOM", 3, 10, "Madame, Monsieur", 0, 32)]),
        ("html", "a [[T2.PRENOM|]] b", [("T2.PRENOM", 4, 13, "", 2, 16)]),
        ("text", "[[VILLE]]", [("VILLE", 2, 7, None, 0, 9)]),
        ("rtf", r"{\rtf1 [PRO.NOM|Cher abonn\'e9] [CLI.NOM]}",
         [("PRO.NOM", 8, 15, r"Cher abonn\'e9", 7, 31), ("CLI.NOM", 33, 40, None, 32, 41)]),
        ("rtf", r"{\rtf1 [PRO.NOM|{\b x}]}", []),  # a default holds no RTF group
    ])
    def test_template_fields(self, syntax, text, found):
        from campflow.core.template_fields import template_fields

        assert [tuple(vars(f).values()) for f in template_fields(text, syntax)] == found

    def test_html_default_is_template_text_and_follows_into_the_text_part(self):
        from campflow.render.bodies import FieldText, html_escape
        from campflow.render.plain_text import html_to_text

        html_body = FieldText.parse("<p>[[PRO.NOM|Cher&nbsp;client &amp; ami]] / [[VILLE]]</p>", "html", html_escape)
        text = html_body.derive(html_to_text)
        for piece in (html_body, text):
            piece.bind({"PRO.NOM": 0, "VILLE": 1})
        assert html_body.render([" ", "A&B"]) == "<p>Cher&nbsp;client &amp; ami / A&amp;B</p>"
        assert text.render(["", "A&B"]) == "Cher client & ami / A&B\n"

    def test_rtf_default_and_the_rtf_marker_in_the_error(self):
        from campflow.render.bodies import EmptyField, FieldText, rtf_escape
        from campflow.render.plain_text import rtf_to_text

        rtf = FieldText.parse(r"{\rtf1 Bonjour [PRO.NOM|Cher abonn\'e9], [party.city].}", "rtf", rtf_escape)
        text = rtf.derive(rtf_to_text)
        for piece in (rtf, text):
            piece.bind({"PRO.NOM": 0, "party.city": 1})
        assert rtf.render(["", "Nîmes"]) == r"{\rtf1 Bonjour Cher abonn\'e9, N\u238?mes.}"
        assert text.render(["", "Nîmes"]) == "Bonjour Cher abonné, Nîmes.\n"
        message = "[party.city] is empty; give a default: [party.city|text when empty]"
        with pytest.raises(EmptyField, match=re.escape(message)):
            rtf.render(["x", ""])

    def test_document_fields_default(self):
        from campflow.render.bodies import EmptyField
        from tasks.kinds.document_mailing import MergePlan

        plan = MergePlan(None, (), (("NOM", 0), ("VILLE", 1)),  # type: ignore[arg-type]
                         (("NOM", "PRO.NOM", "Madame, Monsieur"), ("VILLE", "party.city", None)))
        assert plan.filled(plan.values([None, "Nîmes"])) == {"NOM": "Madame, Monsieur", "VILLE": "Nîmes"}
        with pytest.raises(EmptyField) as info:
            plan.filled(plan.values(["Lefèvre", " "]))
        assert str(info.value.for_party("F2")) == ('merge field VILLE is empty for F2; give a default: '
                                                   'document.fields: {VILLE: "party.city|text when empty"}')
