"""The network's notifications as templates (SPEC §9, §12): the default texts link to the portal,
a package's spec overrides them for that package only, a bad template is refused at apply with
its file and line, and a template runs in the sandbox."""

from __future__ import annotations

import email
import json
import re
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import text

from campflow.network import orders, packages
from campflow.network.accounts import portal_url
from campflow.network.texts import default_text, names, render_notice
from campflow.render.notice_texts import NOTICES, PACKAGE_NOTICES, check_template
from campflow.store import db
from tests.conftest import rows, scalar
from tests.test_local_approval import clock, network  # noqa: F401  (the lists' fixtures)
from tests.test_packages import BRIEF, NETWORK, OPEN, PUBLISHED_AT, mail  # noqa: F401

OWN_PACKAGE = """\
kind: Package
code: PKG-OWN
label: Vitrines de printemps
operation: REF
owner: HQ
collaboration: simple
timezone: Europe/Paris
visible_from: 2030-01-01T00:00
visible_until: 2030-06-30T00:00
registration_deadline: 2030-05-31T18:00
audience: [LYON, PARIS]
notices:
{notices}
"""
PUBLISHED = """\
Subject: Nouveau : {{ package.label }} pour {{ entity.label }}

Bonjour {{ entity.label }},

Le siège vous propose {{ package.label }} jusqu'au {{ package.registration_deadline }} ({{ package.timezone }}).
Commandez ici : {{ package.link }}
"""
DECIDED = """\
Subject: Votre commande {{ order.id }} est {{ "acceptée" if order.status == "approved" else "refusée" }}
{#- a comment line #}

{% if order.comment %}Le mot du siège : {{ order.comment }}
{% endif %}Suivez-la ici : {{ order.link }}
"""


def write(folder: Path, name: str, text: str) -> str:
    (folder / "notices").mkdir(exist_ok=True)
    (folder / "notices" / name).write_text(text, encoding="utf-8")
    return f"notices/{name}"


def own_spec(folder: Path, notices: dict[str, str]) -> Path:
    path = folder / "own.yaml"
    lines = "\n".join(f"  {name}: {value}" for name, value in notices.items())
    path.write_text(OWN_PACKAGE.format(notices=lines), encoding="utf-8")
    return path


def received(smtp) -> list[tuple[str, str, str]]:
    """Every message the SMTP sink got: (recipient, subject, plain body with \\n)."""
    out = []
    for _, to, content in smtp.received:
        message = email.message_from_bytes(content, policy=policy.default)
        out.append((to[0], message["Subject"], message.get_body(("plain",)).get_content().replace("\r\n", "\n")))
    return out


@pytest.fixture
def stores(database, prefect, cli, tmp_path):
    """HQ, LYON, PARIS, NANTES and their packages (as in test_packages)."""
    (tmp_path / "brief.txt").write_text(BRIEF, encoding="utf-8")
    (tmp_path / "network.yaml").write_text(NETWORK, encoding="utf-8")
    result = cli("apply", tmp_path / "network.yaml")
    assert result.code == 0, result.err
    return tmp_path


class TestDefaults:
    def test_every_notice_has_a_default_that_passes_its_own_check(self):
        assert set(names()) == set(NOTICES)
        for name in NOTICES:
            text = default_text(name)
            assert text.startswith("Subject: "), name
            assert check_template(name, text, f"{name}.txt", tuple(NOTICES)) == [], name

    @pytest.mark.parametrize("name, links", [
        ("package_published", ["http://portal.example/packages/PKG-SAMPLE", "http://portal.example/orders/12"]),
        ("order_to_review", ["http://portal.example/orders/12", "http://portal.example/central/orders"]),
        ("order_registered", ["http://portal.example/orders/12"]),
        ("order_decided", ["http://portal.example/orders/12", "http://portal.example/packages/PKG-SAMPLE"]),
        ("order_cancelled", ["http://portal.example/orders/12"]),
        ("list_to_approve", ["http://portal.example/lists/OP-SAMPLE/A1"]),
        ("list_reminder", ["http://portal.example/lists/OP-SAMPLE/A1"]),
    ])
    def test_the_default_texts_link_to_the_portal(self, name, links):
        bodies = "".join(render_notice(name, None, **values)[1] for values in NOTICES[name])
        for link in links:
            assert link in bodies
        if not name.startswith("order_to_review"):  # only the central reviewers get a command line
            assert "campflow " not in bodies

    def test_the_real_mails_link_to_the_pages_of_the_order_and_the_reviewers(self, stores, mail):
        packages.act(orders.publish, "PKG-WINDOW", as_="marketing", now=PUBLISHED_AT)
        outcome = packages.act(orders.create_order, "PKG-WINDOW", as_="lyon", now=OPEN)
        order_id, = outcome.order_ids
        packages.act(orders.reject_order, order_id, as_="marketing", comment="Pas de budget <cette> année")
        mails = {(to, subject): body for to, subject, body in received(mail)}
        review = mails["review@siege.test", f"Order {order_id}: LYON orders PKG-WINDOW"]
        assert f"  {portal_url(f'orders/{order_id}')}\n" in review
        assert f"All orders waiting for a decision: {portal_url('central/orders')}\n" in review
        decided = mails["lyon@store.test", f"Order {order_id} for PKG-WINDOW: rejected"]
        assert "Comment: Pas de budget <cette> année\n" in decided  # plain text: nothing escaped, nothing lost
        assert f"See it on its page: {portal_url(f'orders/{order_id}')}\n" in decided
        assert f"order the package again while it is open: {portal_url('packages/PKG-WINDOW')}\n" in decided


class TestOverrides:
    def test_an_override_changes_the_subject_and_body_of_that_package_only(self, stores, cli, mail):
        spec = own_spec(stores, {"package_published": write(stores, "published.txt", PUBLISHED),
                                 "order_decided": write(stores, "decided.txt", DECIDED)})
        result = cli("apply", spec)
        assert result.code == 0, result.err
        stored = scalar("select notices from package where code = 'PKG-OWN'")
        assert stored == {"package_published": PUBLISHED, "order_decided": DECIDED}
        assert scalar("select notices from package where code = 'PKG-WINDOW'") == {}

        packages.act(orders.publish, "PKG-OWN", as_="marketing", now=PUBLISHED_AT)
        packages.act(orders.publish, "PKG-WINDOW", as_="marketing", now=PUBLISHED_AT)
        own_order, = packages.act(orders.create_order, "PKG-OWN", as_="lyon", now=OPEN).order_ids
        window_order, = packages.act(orders.create_order, "PKG-WINDOW", as_="lyon", now=OPEN).order_ids
        packages.act(orders.approve_order, own_order, as_="marketing", comment="Bravo")
        packages.act(orders.approve_order, window_order, as_="marketing", comment="Bravo")

        lyon = [(subject, body) for to, subject, body in received(mail) if to == "lyon@store.test"]
        subjects = [subject for subject, _ in lyon]
        assert subjects == ["Nouveau : Vitrines de printemps pour Magasin de Lyon",
                            "Package PKG-WINDOW — Soldes d'hiver",
                            f"Votre commande {own_order} est acceptée",
                            f"Order {window_order} for PKG-WINDOW: approved"]
        assert lyon[0][1] == ("Bonjour Magasin de Lyon,\n\nLe siège vous propose Vitrines de printemps jusqu'au "
                              "2030-05-31 18:00 (Europe/Paris).\n"
                              f"Commandez ici : {portal_url('packages/PKG-OWN')}\n")
        assert lyon[2][1] == f"Le mot du siège : Bravo\nSuivez-la ici : {portal_url(f'orders/{own_order}')}\n"
        assert lyon[1][1].startswith("Hello Magasin de Lyon,\n")  # PKG-WINDOW: the default text
        # what the package does not override keeps the default, for this package too
        review = [s for to, s, _ in received(mail) if to == "review@siege.test"]
        assert f"Order {own_order}: LYON orders PKG-OWN" in review

    def test_applying_again_without_notices_goes_back_to_the_defaults(self, stores, cli):
        spec = own_spec(stores, {"order_decided": write(stores, "decided.txt", DECIDED)})
        assert cli("apply", spec).code == 0
        spec.write_text(spec.read_text(encoding="utf-8").replace("notices:\n  order_decided: notices/decided.txt\n",
                                                                 ""), encoding="utf-8")
        result = cli("apply", spec)
        assert result.code == 0, result.err
        assert scalar("select notices from package where code = 'PKG-OWN'") == {}

    def test_the_list_to_approve_uses_the_package_of_its_operation(self, network, cli, smtp):  # noqa: F811
        from flows.run_operation import process_step

        template = ("Subject: [{{ operation.code }}] À valider avant le {{ deadline }} : {{ parties }} tiers\n\n"
                "{{ entity.label }}, votre liste : {{ link }}\n")
        (network / "package.yaml").write_text(
            "kind: Package\ncode: PKG-LISTS\nlabel: Listes\noperation: LOCAL\nowner: HQ\n"
            "collaboration: by_target_approval\nnotices: {list_to_approve: lists.txt}\n", encoding="utf-8")
        (network / "lists.txt").write_text(template, encoding="utf-8")
        result = cli("apply", network / "package.yaml")
        assert result.code == 0, result.err
        assert process_step("LOCAL", "A1").state == "Completed"
        lyon = [(s, b) for to, s, b in received(smtp) if to == "lyon@stores.example"]
        assert lyon == [("[LOCAL] À valider avant le 2027-01-10 18:00 (Europe/Paris) : 3 tiers",
                         f"Magasin de Lyon, votre liste : {portal_url('lists/LOCAL/A1')}\n")]


class TestRefused:
    @pytest.mark.parametrize("name, text, problem", [
        ("order_decided", "Subject: x\n\nLine two\n{% if order.status %}\n{{ order.id }\n",
         r"decided.txt:5: template syntax: unexpected '}'"),
        ("order_decided", "Subject: x\n\nHello\n\n{{ customer.name }}\n",
         r"decided.txt:5: notification order_decided gives no variable 'customer'; it gives consequence, entity, "
         "order, package, portal"),
        ("order_decided", "Subject: x\n\n{% if order.status == 'rejected' %}\n{{ order.reason }}\n{% endif %}\n",
         r"decided.txt:4: 'dict object' has no attribute 'reason'"),
        ("order_decided", "Your order\n\nis {{ order.status }}\n",
         r"decided.txt:1: a notification template starts with a `Subject: …` line"),
        ("order_approved", "Subject: x\n", r"notice order_approved: .*decided.txt: no notification 'order_approved' "
                                           "to override; the notifications are package_published, "),
        ("invitation", "Subject: x\n", r"no notification 'invitation' to override"),
        ("order_decided", "Subject: x\n\n{{ ''.__class__.__mro__ }}\n",
         r"decided.txt:3: access to attribute '__class__' of 'str' object is unsafe"),
        ("order_decided", "Subject: x\n\n\n{{ order.link.__class__.__init__.__globals__ }}\n",
         r"decided.txt:4: access to attribute '__\w+__' of '\w+' object is unsafe"),
    ])
    def test_a_bad_template_is_refused_at_apply_with_its_file_and_line(self, stores, cli, name, text, problem):
        write(stores, "decided.txt", text)
        result = cli("apply", own_spec(stores, {name: "notices/decided.txt"}))
        assert result.code == 1
        assert f"own.yaml:13: notice {name}: " in result.err
        assert re.search(problem, result.err), result.err
        assert str(stores / "notices" / "decided.txt") in result.err
        assert "nothing was written" in result.err
        assert scalar("select count(*) from package where code = 'PKG-OWN'") == 0

    def test_a_path_outside_the_spec_folder_is_refused(self, stores, cli, tmp_path_factory):
        elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
        elsewhere.write_text("Subject: x\n", encoding="utf-8")
        result = cli("apply", own_spec(stores, {"order_decided": str(elsewhere)}))
        assert result.code == 1
        assert "notice order_decided: " in result.err and "lies outside the spec's folder" in result.err
        result = cli("apply", own_spec(stores, {"order_decided": "../../etc/passwd"}))
        assert result.code == 1 and "lies outside the spec's folder" in result.err
        result = cli("apply", own_spec(stores, {"order_decided": "notices/missing.txt"}))
        assert result.code == 1 and "notices/missing.txt not found" in result.err
        assert scalar("select count(*) from package where code = 'PKG-OWN'") == 0

    def test_a_template_too_large_is_refused(self, stores, cli):
        write(stores, "decided.txt", "Subject: x\n\n" + "x" * 70_000)
        result = cli("apply", own_spec(stores, {"order_decided": "notices/decided.txt"}))
        assert result.code == 1 and "at most 64000 characters" in result.err

    def test_a_bad_template_leaves_the_package_as_it_was(self, stores, cli):
        spec = own_spec(stores, {"order_decided": write(stores, "decided.txt", DECIDED)})
        assert cli("apply", spec).code == 0
        write(stores, "decided.txt", "Subject: x\n\n{{ nope }}\n")
        spec.write_text(spec.read_text(encoding="utf-8").replace("Vitrines de printemps", "Autre"), encoding="utf-8")
        assert cli("apply", spec).code == 1
        assert rows("select label, notices from package where code = 'PKG-OWN'") == [
            ("Vitrines de printemps", {"order_decided": DECIDED})]


class TestSandbox:
    def test_python_internals_stay_out_of_reach_when_sent(self, stores, mail):
        """A template stored without the apply check (written in the database by hand) still runs in
        the sandbox: the reach into Python fails, and the default text goes out instead."""
        evil = "Subject: {{ ''.__class__.__mro__[1].__subclasses__() }}\n\n{{ package.__class__ }}\n"
        with db.engine().begin() as conn:
            conn.execute(text("update package set notices = cast(:n as jsonb) where code = 'PKG-WINDOW'"),
                         {"n": json.dumps({"package_published": evil})})
        packages.act(orders.publish, "PKG-WINDOW", as_="marketing", now=PUBLISHED_AT)
        for _, subject, body in received(mail):
            assert subject == "Package PKG-WINDOW — Soldes d'hiver"
            assert "class" not in body and "subclasses" not in body

    def test_a_value_never_carries_a_line_into_the_subject(self):
        values = NOTICES["order_decided"][0] | {"entity": {"code": "LYON", "label": "Lyon\r\nBcc: someone@else"}}
        subject, body = render_notice("order_decided", {"order_decided": "Subject: Hi {{ entity.label }}\n\nok\n"},
                                      **values)
        assert (subject, body) == ("Hi Lyon Bcc: someone@else", "ok\n")

    def test_the_check_refuses_what_the_sandbox_forbids(self):
        for template in ("Subject: {{ ''.__class__ }}\n", "Subject: x\n\n{{ order.__init__ }}\n",
                         "Subject: x\n\n{{ portal.format.__globals__ }}\n"):
            problems = check_template("order_decided", template, "f.txt")
            assert problems and "unsafe" in problems[0], template
        assert PACKAGE_NOTICES == ("package_published", "order_to_review", "order_registered", "order_decided",
                                   "order_cancelled", "list_to_approve", "list_reminder", "list_report")
