"""What a spec may read and how big it may be (docs/spec-safety.md).

Every path a spec names resolves inside its spec's folder (or CAMPFLOW_ALLOWED_DIRS); a run
reads a file only if it is still the one apply checked. Alias bombs, oversized files and
oversized texts are refused by `apply` and `apply --check` alike, with file:line.
Real PostgreSQL, real Prefect runs, a real SMTP server.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from campflow.core.kinds import StepContext
from campflow.errors import CampflowError
from campflow.network import orders, packages
from campflow.paths import PathRefused, read_stored
from campflow.render import mail
from campflow.specs.schema import FREE_FORM_NODES, LABEL_MAX
from campflow.specs.source import MAX_SPEC_BYTES
from campflow.store import db
from tasks.kinds import document_mailing
from tests.conftest import rows, scalar
from tests.test_emailing import add_smtp, failed_step_message, no_retry, setup_operation

WORD = Path(__file__).resolve().parent / "fixtures" / "word"
FIELDS = '{{Singleword: party.code, Hello world: party.name, "More than one space": party.city}}'


@dataclass(frozen=True)
class PathKey:
    """A key that names a file, the spec that holds it ({path}), and the file's suffix."""

    name: str
    spec: str
    suffix: str
    line: int  # the line an error about {path} names


def _operation(step: str) -> str:
    return "kind: Operation\ncode: OP\nlabel: Chemins\nsteps:\n  - code: S1\n    label: Étape\n" + step


PATH_KEYS = [
    PathKey("email.body", _operation("    kind: emailing\n    email:\n      subject: Bonjour\n"
                                     "      body: {path}\n"), ".html", 10),
    PathKey("email.text_body", _operation("    kind: emailing\n    email:\n      subject: Bonjour\n"
                                          "      html: <p>Bonjour</p>\n      text_body: {path}\n"), ".txt", 11),
    PathKey("email.attachments", _operation("    kind: emailing\n    email:\n      subject: Bonjour\n"
                                            "      text: Bonjour\n      attachments: [{path}]\n"), ".pdf", 11),
    PathKey("document_mailing template", _operation(f"    kind: document_mailing\n    document:\n"
                                                    f"      template: {{path}}\n      fields: {FIELDS}\n"),
            ".docx", 9),
    PathKey("faxing template", _operation(f"    kind: faxing\n    document:\n      template: {{path}}\n"
                                          f"      fields: {FIELDS}\n"), ".docx", 9),
    PathKey("package documents", "kind: Entity\ncode: HQ\nlabel: Siège\ntype: central\noperators: [marketing]\n---\n"
            "kind: Operation\ncode: REF\nlabel: Référence\n---\nkind: Package\ncode: PKG\nlabel: Paquet\n"
            "operation: REF\nowner: HQ\ncollaboration: simple\ndocuments: [{path}]\n", ".txt", 17),
]


def content(suffix: str) -> bytes:
    if suffix == ".docx":
        return (WORD / "test_spaces.docx").read_bytes()
    return b"<p>Bonjour</p>\n" if suffix == ".html" else b"Bonjour\n"


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """specs/ (a spec's folder) and secret/ beside it, each with a file of every suffix."""
    specs, secret = tmp_path / "specs", tmp_path / "secret"
    for folder in (specs, secret):
        folder.mkdir()
        for suffix in {key.suffix for key in PATH_KEYS}:
            (folder / f"file{suffix}").write_bytes(content(suffix))
    return specs, secret


def write(specs: Path, key: PathKey, path: str) -> Path:
    spec = specs / "spec.yaml"
    spec.write_text(key.spec.format(path=path), encoding="utf-8")
    return spec


OUTSIDE = {
    "dotdot": lambda specs, secret, suffix: f"../secret/file{suffix}",
    "absolute": lambda specs, secret, suffix: str(secret / f"file{suffix}"),
    "symlink": lambda specs, secret, suffix: _link(specs / f"link{suffix}", secret / f"file{suffix}"),
    "symlinked folder": lambda specs, secret, suffix: _link(specs / "sub", secret) + f"/file{suffix}",
}


def _link(link: Path, target: Path) -> str:
    link.symlink_to(target)
    return link.name


class TestPathsAtApply:
    @pytest.mark.parametrize("check", [True, False], ids=["--check", "apply"])
    @pytest.mark.parametrize("how", list(OUTSIDE))
    @pytest.mark.parametrize("key", PATH_KEYS, ids=[k.name for k in PATH_KEYS])
    def test_a_path_out_of_the_spec_folder_is_refused(self, database, cli, folders, key, how, check):
        specs, secret = folders
        spec = write(specs, key, OUTSIDE[how](specs, secret, key.suffix))
        result = cli("apply", spec, *(["--check"] if check else []))
        assert result.code == 1
        assert f"{spec}:{key.line}: " in result.err
        assert f"lies outside the spec's folder {specs}" in result.err and "CAMPFLOW_ALLOWED_DIRS" in result.err
        assert "Traceback" not in result.err
        assert scalar("select count(*) from operation") == 0

    @pytest.mark.parametrize("key", PATH_KEYS, ids=[k.name for k in PATH_KEYS])
    def test_a_path_inside_is_stored_resolved(self, database, cli, folders, key):
        specs, _ = folders
        (specs / "sub").mkdir()
        (specs / "sub" / f"file{key.suffix}").write_bytes(content(key.suffix))
        (specs / f"alias{key.suffix}").symlink_to(specs / "sub" / f"file{key.suffix}")  # a symlink inside is fine
        result = cli("apply", write(specs, key, f"alias{key.suffix}"))
        assert result.code == 0, result.err
        stored = str(specs / "sub" / f"file{key.suffix}")
        assert stored in str(rows("select settings from step") + rows("select documents from package"))

    @pytest.mark.parametrize("key", PATH_KEYS, ids=[k.name for k in PATH_KEYS])
    def test_an_allowed_folder_is_accepted(self, database, cli, folders, key, monkeypatch):
        specs, secret = folders
        monkeypatch.setenv("CAMPFLOW_ALLOWED_DIRS", f"/nowhere:{secret}")
        result = cli("apply", write(specs, key, f"../secret/file{key.suffix}"))
        assert result.code == 0, result.err

    def test_a_missing_file_is_named(self, database, cli, folders):
        specs, _ = folders
        spec = write(specs, PATH_KEYS[2], "absent.pdf")
        result = cli("apply", spec)
        assert result.code == 1
        assert f"{spec}:11: attachment absent.pdf not found" in result.err


class TestBody:
    def test_a_body_that_is_no_template_file_is_refused(self, database, cli, folders):
        specs, _ = folders
        spec = write(specs, PATH_KEYS[0], "../../etc/passwd")
        result = cli("apply", spec)
        assert result.code == 1
        assert (f"{spec}:10: steps.0.email.body: '../../etc/passwd' is not a template file (.html, .htm, .txt, "
                ".rtf, .j2); inline text goes under `text:` (plain) or `html:` (HTML) instead of `body:`") in result.err

    @pytest.mark.parametrize("given, error", [
        ("      body: file.html\n      text: Bonjour\n", "got body, text"),
        ("      text: Bonjour\n      html: <p>Bonjour</p>\n", "got text, html"),
        ("", "got none"),
    ])
    def test_exactly_one_of_body_text_html(self, database, cli, folders, given, error):
        specs, _ = folders
        spec = specs / "spec.yaml"
        spec.write_text(_operation(f"    kind: emailing\n    email:\n      subject: Bonjour\n{given}"), "utf-8")
        result = cli("apply", spec)
        assert result.code == 1
        assert f"{spec}:8: steps.0.email: email needs exactly one of body (a template file), text" in result.err
        assert error in result.err

    def test_inline_text_and_html_are_sent_as_given(self):
        plain = mail.compile_message({"subject": "S", "text": "Bonjour <b>[[party.name]]</b>"}, "step OP/S1")
        assert plain.html is None and plain.references == ("party.name",)
        html = mail.compile_message({"subject": "S", "html": "<p>Bonjour [[party.name]]</p>"}, "step OP/S1")
        assert html.html is not None

    @pytest.mark.parametrize("legacy, now", [
        ("Bonjour [[PCFIDX.NOM]]", "text: Bonjour [[PCFIDX.NOM]]"),
        ("<p>Bonjour</p>", "html: <p>Bonjour</p>"),
    ])
    def test_an_inline_body_stored_before_the_rule_exports_as_text_or_html(self, database, cli, folders, legacy, now):
        specs, _ = folders
        assert cli("apply", write(specs, PATH_KEYS[0], "file.html")).code == 0
        with db.engine().begin() as conn:
            conn.exec_driver_sql("update step set settings = jsonb_set(settings, '{email,body}', %s::jsonb)",
                                 (json.dumps(legacy),))
        result = cli("export", "OP")
        assert result.code == 0, result.err
        assert f"    {now}\n" in result.out and "body:" not in result.out

    def test_a_stored_inline_body_is_never_sent_as_text(self):
        with pytest.raises(CampflowError, match="step OP/S1: email.body '../../etc/passwd' is not a template file"):
            mail.compile_message({"subject": "S", "body": "../../etc/passwd"}, "step OP/S1")


BOMB = """\
kind: Operation
code: BOMB
label: Bombe
steps:
  - code: S1
    label: Étape
    kind: other
{where}
"""
LAUGHS = textwrap.dedent("""\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]""")
BOMBS = {
    "options": "    options:\n" + textwrap.indent(LAUGHS, "      "),
    "condition value": ("    where:\n      conditions:\n        C1:\n          field: party.name\n          op: in\n"
                        "          value:\n" + textwrap.indent(LAUGHS, "            ") + "\n"
                        "      formula: C1"),
}


class TestBounds:
    @pytest.mark.parametrize("check", [True, False], ids=["--check", "apply"])
    @pytest.mark.parametrize("where", list(BOMBS))
    def test_an_alias_bomb_is_refused_at_once(self, database, cli, tmp_path, where, check):
        spec = tmp_path / "bomb.yaml"
        spec.write_text(BOMB.format(where=BOMBS[where]), encoding="utf-8")
        started = time.perf_counter()
        result = cli("apply", spec, *(["--check"] if check else []))
        assert time.perf_counter() - started < 1
        assert result.code == 1
        assert f"{spec}:" in result.err and "aliases expand this document to" in result.err
        assert "at most 100,000 nodes" in result.err
        assert scalar("select count(*) from operation") == 0

    def test_an_alias_bomb_options_block_is_764_bytes(self):
        assert len(BOMBS["options"].encode()) <= 800  # the issue's 764-byte document, give or take its indent

    def test_an_endless_alias_is_refused(self, database, cli, tmp_path):
        spec = tmp_path / "loop.yaml"
        spec.write_text(BOMB.format(where="    options: &loop {again: *loop}"), encoding="utf-8")
        result = cli("apply", spec, "--check")
        assert result.code == 1 and f"{spec}:8: an alias refers to the node that contains it" in result.err

    def test_a_few_aliases_are_fine(self, database, cli, tmp_path):
        spec = tmp_path / "ok.yaml"
        spec.write_text(BOMB.format(where="    options: {a: &x [1, 2], b: *x}"), encoding="utf-8")
        assert cli("apply", spec).code == 0

    @pytest.mark.parametrize("where, error", [
        ("    options: {many: [%s]}" % ", ".join(["1"] * (FREE_FORM_NODES + 1)), "options holds more than 1,000"),
        ("    options: {a: [[[[[[[[[1]]]]]]]]]}", "options is nested more than 8 levels deep"),
        ("    options: {a: %s}" % ("x" * 5000), "options holds a text of 5,000 characters"),
    ])
    def test_free_form_options_are_bounded(self, database, cli, tmp_path, where, error):
        spec = tmp_path / "options.yaml"
        spec.write_text(BOMB.format(where=where), encoding="utf-8")
        result = cli("apply", spec)
        assert result.code == 1
        assert f"{spec}:8: steps.0.options: {error}" in result.err

    @pytest.mark.parametrize("check", [True, False], ids=["--check", "apply"])
    def test_a_5_mb_label_is_refused(self, database, cli, tmp_path, check):
        spec = tmp_path / "label.yaml"
        spec.write_text(f"kind: Operation\ncode: BIG\nlabel: {'x' * 5_000_000}\n", encoding="utf-8")
        result = cli("apply", spec, *(["--check"] if check else []))
        assert result.code == 1
        assert f"{spec}:1: the file is larger than 1 MiB ({MAX_SPEC_BYTES:,} bytes)" in result.err

    @pytest.mark.parametrize("check", [True, False], ids=["--check", "apply"])
    def test_a_long_label_is_refused_with_its_line(self, database, cli, tmp_path, check):
        spec = tmp_path / "label.yaml"
        spec.write_text(f"kind: Operation\ncode: BIG\nlabel: {'x' * 600_000}\n", encoding="utf-8")
        result = cli("apply", spec, *(["--check"] if check else []))
        assert result.code == 1
        assert f"{spec}:3: label: String should have at most {LABEL_MAX} characters" in result.err

    def test_a_long_text_field_is_refused(self, database, cli, tmp_path):
        spec = tmp_path / "subject.yaml"
        spec.write_text(_operation(f"    kind: emailing\n    email:\n      subject: {'x' * 5000}\n"
                                   "      text: Bonjour\n"), encoding="utf-8")
        result = cli("apply", spec)
        assert result.code == 1
        assert f"{spec}:9: steps.0.email.subject: String should have at most 4000 characters" in result.err


# ---------------------------------------------------------------- at run time


def swap(path: Path, target: Path) -> None:
    """Replace `path` by a symlink to `target`, as someone with write access to the folder could."""
    path.unlink()
    path.symlink_to(target)


class TestReadStored:
    def test_the_checked_file_is_read(self, tmp_path):
        (tmp_path / "a.txt").write_text("ok", encoding="utf-8")
        assert read_stored(tmp_path / "a.txt") == b"ok"

    @pytest.mark.parametrize("how", ["file", "folder"])
    def test_a_symlink_swapped_in_is_refused(self, tmp_path, how):
        (tmp_path / "specs").mkdir()
        (tmp_path / "specs" / "a.txt").write_text("ok", encoding="utf-8")
        stored = (tmp_path / "specs" / "a.txt").resolve()
        if how == "file":
            swap(stored, Path("/etc/passwd"))
        else:
            shutil.move(tmp_path / "specs", tmp_path / "moved")
            (tmp_path / "specs").symlink_to(Path("/etc"))
        with pytest.raises(PathRefused, match="is no longer the file the spec named"):
            read_stored(stored)

    def test_outside_its_roots_is_refused(self, tmp_path):
        (tmp_path / "a.txt").write_text("ok", encoding="utf-8")
        with pytest.raises(PathRefused, match="lies outside the spec's folder"):
            read_stored(tmp_path / "a.txt", roots=[tmp_path / "elsewhere"])


TEMPLATE_OP = """kind: Operation
code: MODELE
label: Modèle
template: true
steps:
  - code: INVIT
    label: Invitation
    kind: emailing
    email: {subject: Bonjour, body: file.html, attachments: [file.pdf]}
"""


class TestCopiesOfStoredOperations:
    """Operations made in code from a stored one keep the files of the spec they copy."""

    def test_ops_new_and_load_template_from_another_folder(self, database, cli, folders, tmp_path):
        specs, _ = folders
        (specs / "modele.yaml").write_text(TEMPLATE_OP, encoding="utf-8")
        other = tmp_path / "other"
        other.mkdir()
        (other / "own.html").write_text("<p>Salut</p>", encoding="utf-8")
        (other / "op.yaml").write_text(_operation("    kind: emailing\n    email: {subject: S, body: own.html}\n"),
                                       encoding="utf-8")
        for spec in (specs / "modele.yaml", other / "op.yaml"):
            assert cli("apply", spec).code == 0
        result = cli("ops", "new", "COPIE", "--from", "MODELE")
        assert result.code == 0, result.err
        result = cli("steps", "load-template", "OP", "--from", "MODELE/INVIT", "--as", "S2")
        assert result.code == 0, result.err
        bodies = {code: settings["email"]["body"] for code, settings in rows(
            "select s.code || '@' || o.code, s.settings from step s join operation o on o.id = s.operation_id")}
        assert bodies == {"INVIT@MODELE": str(specs / "file.html"), "INVIT@COPIE": str(specs / "file.html"),
                          "S1@OP": str(other / "own.html"), "S2@OP": str(specs / "file.html")}

    def test_a_copy_whose_file_became_a_symlink_out_is_refused(self, database, cli, folders):
        specs, secret = folders
        (specs / "modele.yaml").write_text(TEMPLATE_OP, encoding="utf-8")
        assert cli("apply", specs / "modele.yaml").code == 0
        swap(specs / "file.pdf", secret / "file.pdf")
        result = cli("ops", "new", "COPIE", "--from", "MODELE")
        assert result.code == 1
        assert f"<ops new COPIE>:0: attachment {specs / 'file.pdf'} (that is {secret / 'file.pdf'}) lies outside" \
            in result.err
        assert "Traceback" not in result.err


class TestPathsAtRunTime:
    @pytest.mark.parametrize("name", ["plan salon.pdf", "invite.html", "plain.txt"])
    def test_an_email_file_swapped_for_a_symlink_fails_the_step(self, database, cli, tmp_path, prefect, channels,
                                                                 smtp, monkeypatch, name):
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        no_retry(monkeypatch)
        setup_operation(cli, tmp_path, extra="      text_body: plain.txt\n", files={"plain.txt": "Bonjour\n"})
        swap(tmp_path / "specs" / name, Path("/etc/passwd"))
        add_smtp(cli, "emailing", smtp.port)
        message = failed_step_message(runs=1)
        assert "step MAIL/S1: " in message and str(tmp_path / "specs" / name) in message
        assert "is no longer the file the spec named" in message and "nothing was sent" in message
        assert smtp.received == []

    def test_the_operator_sees_one_error_line_naming_the_step_and_the_path(self, database, cli, tmp_path, prefect,
                                                                          channels, smtp, monkeypatch):
        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        no_retry(monkeypatch)
        setup_operation(cli, tmp_path)
        swap(tmp_path / "specs" / "plan salon.pdf", Path("/etc/passwd"))
        add_smtp(cli, "emailing", smtp.port)
        result = cli("run", "MAIL")
        assert result.code == 1
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "S1" in errors[0] and "MAIL" in errors[0]
        assert f"attachment refused: {tmp_path / 'specs' / 'plan salon.pdf'} is no longer the file" in errors[0]
        assert "Traceback" not in result.out + result.err
        assert smtp.received == []

    def test_a_word_template_swapped_for_a_symlink_is_not_merged(self, database, cli, folders):
        specs, secret = folders
        assert cli("apply", write(specs, PATH_KEYS[3], "file.docx")).code == 0
        swap(specs / "file.docx", secret / "file.docx")
        with db.session() as session:
            step_id, stored = rows("select id, settings from step where code = 'S1'")[0]
            ctx = StepContext(scalar("select id from operation"), "OP", step_id, "S1", "document_mailing",
                              stored, specs / "out")
            with pytest.raises(CampflowError, match=f"step OP/S1: template refused: {specs / 'file.docx'} is no "
                                                    "longer the file the spec named"):
                document_mailing.plan_merge(session, ctx)

    def test_a_notification_never_attaches_through_a_symlink(self, database, prefect, tmp_path):
        from campflow.network.notify import notify

        (tmp_path / "brief.txt").symlink_to(Path("/etc/passwd"))
        with pytest.raises(CampflowError, match=f"cannot attach {tmp_path / 'brief.txt'}: .*; nothing was sent"):
            notify(["lyon@store.test"], "Paquet", "Bonjour", [tmp_path / "brief.txt"])

    def test_a_package_document_swapped_for_a_symlink_is_not_published(self, database, prefect, cli, folders):
        specs, secret = folders
        spec = write(specs, PATH_KEYS[5], "file.txt").read_text(encoding="utf-8").replace(
            "collaboration: simple", "collaboration: simple\naudience: [LYON]")
        (specs / "spec.yaml").write_text(spec + "---\nkind: Entity\ncode: LYON\nlabel: Lyon\nparent: HQ\n"
                                         "emails: [lyon@store.test]\n", encoding="utf-8")
        assert cli("apply", specs / "spec.yaml").code == 0
        swap(specs / "file.txt", secret / "file.txt")
        with pytest.raises(CampflowError, match="document refused: .* is no longer the file the spec named"):
            packages.act(orders.publish, "PKG", as_="marketing", now=dt.datetime(2030, 1, 2, tzinfo=dt.UTC))
