"""Template files in ISO-8859-1 (Divalto's) and other encodings: read as declared, else UTF-8,
else Windows-1252 with a warning at apply; sent as UTF-8 to a real SMTP server, never with U+FFFD."""

from __future__ import annotations

import pytest

from campflow.render.charsets import UndecodableTemplate, decode_template
from tests.conftest import scalar

PARTIES = """FICHE;TIERS;NOM;VILLE;EMAIL
PRO;P1;Boulangerie Lefèvre;Nîmes;accueil@lefevre.fr
"""
CONTACTS = """TIERS;CONTACT;NOM;PRENOM;FONCTION;EMAIL
P1;C1;Lefèvre;Hélène;DIRECTION;helene@lefevre.fr
"""
BODY = "<p>Chère [[T2.PRENOM]], vous êtes invitée à Nîmes — l’entrée coûte 5 €.</p>\n"
SPEC = """kind: Operation
code: LATIN
label: Invitations
party_kinds: [prospect]
steps:
  - code: S1
    label: Invitations
    kind: emailing
    email:
      subject: "Invitation — [[PCFIDX.NOM]]"
      body: {body}
      contacts: {{functions: [DIRECTION]}}
{extra}    next: []
"""
META = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1"></head><body>\n'


class TestDecoding:
    """The rules, on bytes alone."""

    @pytest.mark.parametrize(("data", "declared", "html", "encoding", "source"), [
        ("é".encode("utf-8"), None, False, "utf-8", "UTF-8 (default)"),
        (b"\xef\xbb\xbf" + "é".encode("utf-8"), "iso-8859-1", False, "utf-8", "byte-order mark"),
        (b"\xff\xfe" + "é".encode("utf-16-le"), None, False, "utf-16-le", "byte-order mark"),
        ("é".encode("latin-1"), "iso-8859-1", False, "cp1252", "email.encoding"),
        ((META + "é").encode("latin-1"), None, True, "cp1252", "<meta charset>"),
        (b'<meta charset="utf-8">' + "é".encode("latin-1"), "latin-1", True, "cp1252", "email.encoding"),
        ("é €".encode("cp1252"), None, False, "cp1252", "guessed"),
        ("é".encode("latin-1") + b"\x81", "iso-8859-1", False, "iso8859-1", "email.encoding"),
    ])
    def test_declared_then_utf8_then_windows_1252(self, data, declared, html, encoding, source):
        decoded = decode_template(data, "t.html", declared, html)
        assert (decoded.encoding, decoded.source) == (encoding, source)
        assert "é" in decoded.text and "\ufffd" not in decoded.text

    @pytest.mark.parametrize(("data", "declared", "message"), [
        (b"ok\n\xe9\x81", None, "t.html:2: neither UTF-8 nor Windows-1252 (byte 0x81)"),
        (b'<meta charset="utf-8">\n\n\xe9', None, "t.html:3: not utf-8 as its <meta charset> says (byte 0xE9)"),
        (b"\xe9", "utf-8", "t.html:1: not utf-8 as its email.encoding says"),
        (b'<meta charset="klingon">', None, "t.html:1: <meta charset=klingon> is not an encoding"),
        ("a\n\ufffd".encode("utf-8"), None, "t.html:2: holds U+FFFD"),
    ])
    def test_what_decodes_in_no_way_is_refused(self, data, declared, message):
        with pytest.raises(UndecodableTemplate) as refused:
            decode_template(data, "t.html", declared, html=True)
        assert message in str(refused.value)


def setup(cli, tmp_path, body: bytes, name: str = "invite.html", extra: str = ""):
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    (tmp_path / name).write_bytes(body)
    (tmp_path / "op.yaml").write_text(SPEC.format(body=name, extra=extra), encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv", "-q"),
                 ("contacts", "import", tmp_path / "contacts.csv", "-q")):
        assert cli(*args).code == 0
    return cli("apply", tmp_path / "op.yaml")


def send(cli, smtp):
    from flows.run_operation import run_operation

    assert cli("targets", "add", "LATIN", "--where", "kind in (PRO)").code == 0
    result = cli("channels", "add-smtp", "emailing", "--host", "127.0.0.1", "--port", str(smtp.port), "--plain",
                 "--sender", "Salon <salon@example.com>")
    assert result.code == 0, result.err
    run_operation("LATIN")
    message = smtp.messages()["helene@lefevre.fr"]
    return message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


class TestSentAsUtf8:
    """A real ISO-8859-1 file, applied, sent to the real SMTP server and decoded back."""

    @pytest.mark.parametrize(("body", "extra"), [
        ((META + BODY).encode("cp1252"), ""),  # declared in the HTML
        (BODY.encode("cp1252"), "      encoding: ISO-8859-1\n"),  # declared in the step
    ])
    def test_a_declared_iso_8859_1_template(self, database, cli, tmp_path, prefect, channels, smtp, body, extra):
        result = setup(cli, tmp_path, body, extra=extra)
        assert result.code == 0, result.err
        assert "warning" not in result.err
        html, plain = send(cli, smtp)
        assert "Chère Hélène, vous êtes invitée à Nîmes — l’entrée coûte 5 €." in html
        assert "Chère Hélène, vous êtes invitée à Nîmes" in plain
        assert "\ufffd" not in html + plain
        assert "charset=ISO-8859-1" not in html  # the meta now says what the part is: utf-8

    def test_an_undeclared_one_is_read_as_windows_1252_with_a_warning(self, database, cli, tmp_path, prefect,
                                                                     channels, smtp):
        result = setup(cli, tmp_path, BODY.encode("cp1252"))
        assert result.code == 0, result.err
        err = " ".join(result.err.split())
        assert f"{tmp_path / 'op.yaml'}:11: " in err
        assert "invite.html is not UTF-8: read as Windows-1252 (ISO-8859-1)" in err
        assert "encoding: iso-8859-1" in err
        html, _ = send(cli, smtp)
        assert "Chère Hélène, vous êtes invitée à Nîmes — l’entrée coûte 5 €." in html

    def test_a_utf8_file_declared_iso_8859_1_gets_a_warning(self, database, cli, tmp_path):
        result = setup(cli, tmp_path, BODY.encode("utf-8"), extra="      encoding: windows-1252\n")
        assert result.code == 0, result.err
        err = " ".join(result.err.split())
        assert "invite.html is valid UTF-8 but its email.encoding says ISO-8859-1 (Windows-1252)" in err

    @pytest.mark.parametrize(("body", "extra", "message"), [
        (b"<p>\xe9\x81</p>", "", "neither UTF-8 nor Windows-1252 (byte 0x81)"),
        (b"<p>\xe9</p>", "      encoding: utf-8\n", "not utf-8 as its email.encoding says (byte 0xE9)"),
        (b"<p>ok</p>", "      encoding: latin-42\n", "unknown encoding 'latin-42'"),
    ])
    def test_a_template_that_decodes_in_no_way_is_refused_at_apply(self, database, cli, tmp_path, body, extra,
                                                                   message):
        result = setup(cli, tmp_path, body, extra=extra)
        assert result.code == 1
        assert message in " ".join(result.err.split())
        assert "Traceback" not in result.err
        assert scalar("select count(*) from operation") == 0
