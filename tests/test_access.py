"""The one access rule on the CLI and the Prefect forms (campflow.store.access, docs/access.md).

A network (HQ, LYON, PARIS), a confidential family (STRAT, groups DIRECTION), collaborators with
groups, and accounts for every role. Each command × actor × an operation of another entity or a
confidential one: refused exactly as a code that does not exist ("no operation X"), or absent from
the lists, and nothing the actor may not see in the output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, text

from campflow.errors import CampflowError, closest
from campflow.store import db
from models import Entity, Order, Package
from tests.conftest import rows, scalar
from tests.portal import make_account

SPECS = """kind: Entity
code: HQ
label: Siège
type: central
operators: [chef]
---
kind: Entity
code: LYON
label: Magasin de Lyon
parent: HQ
---
kind: Entity
code: PARIS
label: Magasin de Paris
parent: HQ
---
kind: Family
code: STRAT
label: Stratégie
groups: [DIRECTION]
---
kind: Family
code: SALONS
label: Salons
---
kind: Collaborator
code: C-DIR
name: Claire Direction
groups: [DIRECTION]
---
kind: Collaborator
code: C-VENTE
name: Victor Ventes
groups: [VENTES]
---
kind: Operation
code: SECRET-PLAN
label: Plan confidentiel fusion
folder: Dossiers réservés
family: STRAT
steps:
  - {code: S1, label: Appel discret, kind: other, next: []}
---
kind: Operation
code: SECRET-NOTE
label: Note réservée au comité
groups: [DIRECTION]
steps:
  - {code: S1, label: Envoi, kind: other, next: []}
---
kind: Operation
code: STRAT-VENTES
label: Stratégie ouverte aux ventes
family: STRAT
groups: [VENTES]
steps:
  - {code: S1, label: Envoi, kind: other, next: []}
---
kind: Operation
code: SALON-PUBLIC
label: Salon ouvert à tous
folder: Salons
family: SALONS
steps:
  - {code: S1, label: Invitation, kind: other, next: []}
---
kind: Operation
code: ALPHA
label: Rentrée du magasin A
folder: Magasins
steps:
  - {code: S1, label: Courrier, kind: other, next: []}
---
kind: Operation
code: BETA
label: Rentrée du magasin B
folder: Magasins
steps:
  - {code: S1, label: Courrier, kind: other, next: []}
---
kind: Package
code: PK-SECRET
label: Kit confidentiel
operation: SECRET-PLAN
owner: HQ
collaboration: simple
audience: [LYON, PARIS]
---
kind: Package
code: PK-PUBLIC
label: Kit salon
operation: SALON-PUBLIC
owner: HQ
collaboration: simple
audience: [LYON, PARIS]
"""

ALL = {"SECRET-PLAN", "SECRET-NOTE", "STRAT-VENTES", "SALON-PUBLIC", "ALPHA", "BETA"}
OWNERS = {"ALPHA": "LYON", "BETA": "PARIS"}  # the others are the central entity's
LABELS = {"SECRET-PLAN": "Plan confidentiel fusion", "SECRET-NOTE": "Note réservée au comité",
          "STRAT-VENTES": "Stratégie ouverte aux ventes", "ALPHA": "Rentrée du magasin A",
          "BETA": "Rentrée du magasin B", "SALON-PUBLIC": "Salon ouvert à tous"}
# what each actor sees: the two walls (network, confidentiality); admin sees past both
SEES = {
    "dir": {"SECRET-PLAN", "SECRET-NOTE", "SALON-PUBLIC", "ALPHA", "BETA"},  # central operator in DIRECTION
    "vente": {"STRAT-VENTES", "SALON-PUBLIC", "ALPHA", "BETA"},  # central operator outside DIRECTION
    "chef": {"SALON-PUBLIC", "ALPHA", "BETA"},  # an operator listed by HQ, no account: in no group
    "collab": {"STRAT-VENTES", "SALON-PUBLIC", "ALPHA", "BETA"},  # a collaborator outside STRAT's groups
    "boss": ALL,  # admin
    "lyon": {"ALPHA"},
    "paris": {"BETA"},
}
ENTITY_CODES = {"lyon": "LYON", "paris": "PARIS"}
# the operations whose lists and children concern a local entity: its own and the central's it may see
INVOLVED = {**SEES, "lyon": {"ALPHA", "SALON-PUBLIC"}, "paris": {"BETA", "SALON-PUBLIC"}}


@pytest.fixture
def network(database, cli, tmp_path, monkeypatch):
    monkeypatch.delenv("CAMPFLOW_OPERATOR", raising=False)
    (tmp_path / "specs.yaml").write_text(SPECS, encoding="utf-8")
    applied = cli("apply", tmp_path / "specs.yaml")
    assert applied.code == 0, applied.err
    with db.session() as session:
        for code, owner in OWNERS.items():
            session.execute(OWN, {"code": code, "owner": owner})
        session.execute(PUBLISH)
    make_account("dir", "central_operator", "reviewer", collaborator="C-DIR")
    make_account("vente", "central_operator", "reviewer", collaborator="C-VENTE")
    make_account("collab", "collaborator", collaborator="C-VENTE")
    make_account("boss", "admin")
    make_account("lyon", "local_operator", entity="LYON")
    make_account("paris", "local_operator", entity="PARIS")
    return tmp_path


OWN = text("update operation set owner_entity_id = (select id from entity where code = :owner) where code = :code")
PUBLISH = text("update package set published_at = now() - interval '1 day'")


def order_of(package: str, entity: str, status: str = "pending") -> int:
    with db.session() as session:
        order = Order(package_id=session.scalar(select(Package.id).where(Package.code == package)),
                      entity_id=session.scalar(select(Entity.id).where(Entity.code == entity)), status=status,
                      values={}, created_by="test")
        session.add(order)
        session.flush()
        return order.id


def flat(text: str) -> str:
    return " ".join(text.split())


def missing(code: str, who: str, involved: bool = False) -> str:
    """What a code that does not exist says to `who`: the message its refusals must equal."""
    known = sorted((INVOLVED if involved else SEES)[who])
    return f"error: no operation {code}{closest(code, known) if known else '; none you may see'}"


def leaks(who: str, output: str, typed: str, involved: bool = False) -> list[str]:
    """What `who` may not see that the output shows (the code typed aside, which it echoes)."""
    shown = output.replace(typed, "")
    hidden = ALL - (INVOLVED if involved else SEES)[who]
    found = [c for c in hidden if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", shown)]
    found += [LABELS[c] for c in hidden if LABELS[c] in shown]
    found += ["Dossiers réservés"] if "SECRET-PLAN" in hidden and "Dossiers réservés" in shown else []
    if who in ENTITY_CODES:
        found += [e for e in ("LYON", "PARIS", "HQ") if e != ENTITY_CODES[who] and e in shown]
    return found


COMMANDS = {
    "ops show": lambda op, who: ("ops", "show", op, "--as", who),
    "export": lambda op, who: ("export", op, "--as", who),
    "targets list": lambda op, who: ("targets", "list", op, "--as", who),
    "targets add": lambda op, who: ("targets", "add", op, "--where", "kind = PRO", "--as", who),
    "run": lambda op, who: ("run", op, "--dry-run", "--as", who),
    "status set": lambda op, who: ("status", "set", op, "S1", "P1", "ok_continue", "--as", who),
    "approvals list": lambda op, who: ("approvals", "list", op, "--as", who),
    "ops children": lambda op, who: ("ops", "children", op, "--as", who),
}
# an operation the actor may not see, per actor: another entity's and a confidential one
HIDDEN = [(who, op) for who in ("dir", "vente", "chef", "collab", "lyon", "paris")
          for op in sorted(ALL - SEES[who])]


class TestCliMatrix:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_what_an_actor_may_not_see_reads_as_missing(self, network, cli, command):
        for who, op in HIDDEN:
            involved = command in ("approvals list", "ops children")
            if involved and op in INVOLVED[who]:
                continue  # a local entity takes part in the central's open operations (its list, its child)
            result = cli(*COMMANDS[command](op, who))
            assert result.code == 1, (command, who, op, result.out)
            assert flat(result.err) == flat(missing(op, who, involved)), (command, who, op)
            assert not leaks(who, result.out + result.err, op, involved), (command, who, op, result.err)
            # and the same as a code that does not exist, to the letter
            nope = cli(*COMMANDS[command](op + "X", who))
            assert nope.code == result.code and flat(nope.err) == flat(missing(op + "X", who, involved))

    def test_ops_tree_holds_only_what_each_actor_sees(self, network, cli):
        for who, seen in SEES.items():
            result = cli("ops", "tree", "--as", who, "--json")
            assert result.code == 0, result.err
            assert set(_codes(json.loads(result.out))) == seen, who
            table = cli("ops", "tree", "--as", who)
            assert not leaks(who, table.out, ""), (who, table.out)
        # folders with nothing visible are left out: their label may say what the operation is
        assert "Dossiers réservés" not in cli("ops", "tree", "--as", "vente").out
        assert "Dossiers réservés" in cli("ops", "tree", "--as", "dir").out

    def test_what_an_actor_sees_it_reads(self, network, cli):
        for who, seen in SEES.items():
            for op in seen:
                shown = cli("ops", "show", op, "--as", who, "--json")
                assert shown.code == 0, (who, op, shown.err)
                assert json.loads(shown.out)["code"] == op
                assert cli("export", op, "--as", who).code == 0
                assert cli("targets", "list", op, "--as", who).code == 0

    def test_naming_nobody_is_the_administrator_at_its_shell(self, network, cli):
        assert set(_codes(json.loads(cli("ops", "tree", "--json").out))) == ALL
        assert cli("ops", "show", "SECRET-PLAN").code == 0
        assert cli("export", "SECRET-NOTE").code == 0

    def test_central_operators_outside_the_groups_change_nothing_confidential(self, network, cli):
        exported = cli("export", "SECRET-PLAN", "-o", network / "secret.yaml")
        assert exported.code == 0
        refused = cli("apply", network / "secret.yaml", "--as", "vente")
        assert refused.code == 1 and "no operation SECRET-PLAN" in refused.err
        assert "Plan confidentiel" not in refused.err
        assert cli("apply", network / "secret.yaml", "--as", "dir").code == 0

    def test_a_reviewer_or_collaborator_reads_but_does_not_change(self, network, cli):
        make_account("rev", "reviewer", collaborator="C-DIR")
        assert cli("ops", "show", "SECRET-PLAN", "--as", "rev").code == 0
        refused = cli("targets", "add", "SECRET-PLAN", "--where", "kind = PRO", "--as", "rev")
        assert refused.code == 1
        assert "rev may not change operation SECRET-PLAN" in flat(refused.err)
        assert cli("run", "SALON-PUBLIC", "--as", "collab").code == 1

    def test_refusals_are_audited(self, network, cli):
        cli("ops", "show", "SECRET-PLAN", "--as", "vente")
        cli("export", "BETA", "--as", "lyon")
        cli("ops", "show", "NOPE", "--as", "vente")  # a code that does not exist is no refusal
        assert rows("select login, action, subject, outcome, source from audit_event where outcome = 'refused' "
                    "order by id") == [
            ("vente", "refused", "operation SECRET-PLAN", "refused", "cli"),
            ("lyon", "refused", "operation BETA", "refused", "cli")]


def _codes(nodes: list[dict]) -> list[str]:
    found = []
    for node in nodes:
        if node["type"] == "operation":
            found.append(node["code"])
        found += _codes(node.get("children", []))
    return found


class TestPackagesAndOrders:
    def test_a_confidential_package_is_listed_to_its_groups_only(self, network, cli):
        for who in ("dir", "boss"):
            codes = [p["code"] for p in json.loads(cli("packages", "list", "--as", who, "--json").out)]
            assert codes == ["PK-PUBLIC", "PK-SECRET"], who
        for who in ("vente", "chef", "lyon", "paris"):
            listed = cli("packages", "list", "--as", who, "--json")
            assert [p["code"] for p in json.loads(listed.out)] == ["PK-PUBLIC"], who
            shown = cli("packages", "show", "PK-SECRET", "--as", who)
            assert shown.code == 1, who
            assert flat(shown.err) == f"error: no package PK-SECRET{closest('PK-SECRET', ['PK-PUBLIC'])}", who
            assert "Kit confidentiel" not in shown.err and "SECRET-PLAN" not in shown.err

    def test_orders_of_a_confidential_package_are_hidden(self, network, cli):
        secret, public = order_of("PK-SECRET", "LYON"), order_of("PK-PUBLIC", "LYON")
        seen = [o["id"] for o in json.loads(cli("orders", "list", "--as", "vente", "--json").out)]
        assert seen == [public]
        assert [o["id"] for o in json.loads(cli("orders", "list", "--as", "dir", "--json").out)] == [secret, public]
        refused = cli("orders", "show", str(secret), "--as", "vente")
        nope = cli("orders", "show", "999", "--as", "vente")
        assert refused.code == nope.code == 1
        assert flat(refused.err) == f"error: no order {secret}; see `campflow orders list`"
        decided = cli("orders", "approve", str(secret), "--as", "vente")
        assert decided.code == 1 and flat(decided.err) == f"error: no order {secret}; see `campflow orders list`"
        assert scalar("select status from package_order where id = :id", id=secret) == "pending"

    def test_a_child_operation_keeps_the_references_groups(self, network, cli):
        from campflow.network.collaboration import on_approved

        (network / "pk.yaml").write_text("""kind: Package
code: PK-NOTE
label: Note
operation: SECRET-NOTE
owner: HQ
collaboration: by_campaign
audience: [LYON]
""", encoding="utf-8")
        assert cli("apply", network / "pk.yaml").code == 0
        order_id = order_of("PK-NOTE", "LYON", "approved")
        with db.session() as session:
            on_approved(session, session.get_one(Order, order_id), "dir")
        assert scalar("select groups from operation where code = 'SECRET-NOTE-LYON'") == ["DIRECTION"]
        assert cli("ops", "show", "SECRET-NOTE-LYON", "--as", "dir").code == 0
        assert flat(cli("ops", "show", "SECRET-NOTE-LYON", "--as", "lyon").err) == flat(
            missing("SECRET-NOTE-LYON", "lyon"))


class TestSpecs:
    def test_groups_round_trip_and_inherit(self, network, cli):
        exported = yaml.safe_load(cli("export", "SECRET-NOTE").out)
        assert exported["groups"] == ["DIRECTION"]
        assert "groups" not in yaml.safe_load(cli("export", "SECRET-PLAN").out)  # its family's
        path = network / "note.yaml"
        path.write_text(yaml.safe_dump(exported, allow_unicode=True), encoding="utf-8")
        assert "unchanged" in cli("apply", path).out
        # an operation's own groups open it to them, its family's no longer apply
        assert "STRAT-VENTES" in set(_codes(json.loads(cli("ops", "tree", "--as", "vente", "--json").out)))
        assert "STRAT-VENTES" not in set(_codes(json.loads(cli("ops", "tree", "--as", "dir", "--json").out)))

    def test_an_empty_group_name_is_refused(self, network, cli):
        path = network / "bad.yaml"
        path.write_text("kind: Operation\ncode: BAD\nlabel: Bad\ngroups: [' ']\n", encoding="utf-8")
        refused = cli("apply", path, "--check")
        assert refused.code == 1 and "a group name is empty" in refused.err


class TestForms:
    def test_approve_order_refuses_a_reviewer_outside_the_groups_and_audits_it(self, network):
        from flows.network import OrderDecision, _decide

        secret = order_of("PK-SECRET", "LYON")
        make_account("gone", "reviewer", collaborator="C-DIR")
        with db.session() as session:
            from campflow.store.accounts import find

            find(session, "gone").disabled = True
        for login, why in (("vente", "reviewer 'vente' is in none of the groups"),
                           ("collab", "collab may not decide order"),
                           ("lyon", "reviewer 'lyon' acts for LYON; only the central entity's operators decide"),
                           ("gone", "account 'gone' is disabled"),
                           ("nobody", "operator 'nobody' acts for no entity")):
            with pytest.raises(CampflowError, match=re.escape(why)):
                _decide(secret, OrderDecision(decision="approve", comment="", reviewer=login))
        assert scalar("select status from package_order where id = :id", id=secret) == "pending"
        assert rows("select login, subject, source from audit_event where outcome = 'refused' order by id") == [
            (login, f"order {secret}", "flow") for login in ("vente", "collab", "lyon", "gone", "nobody")]
        outcome = _decide(secret, OrderDecision(decision="approve", comment="", reviewer="dir"))
        assert outcome is not None and scalar("select status from package_order where id = :id", id=secret) \
            == "approved"

    def test_the_local_approval_form_refuses_a_disabled_login(self, network):
        from flows.local_approval import ListApproval, apply_answer

        with db.session() as session:
            from campflow.store.accounts import find

            find(session, "lyon").disabled = True
        with pytest.raises(CampflowError, match="account 'lyon' is disabled"):
            apply_answer("SALON-PUBLIC", "S1", "LYON", ListApproval(remove=[], approve=True, operator="lyon"))
        assert rows("select login, source, outcome from audit_event where outcome = 'refused'") == [
            ("lyon", "flow", "refused")]


def test_docs_name_the_rule():
    text = (Path(__file__).resolve().parent.parent / "docs" / "access.md").read_text(encoding="utf-8")
    for role in ("admin", "central_operator", "reviewer", "local_operator", "partner", "collaborator"):
        assert f"`{role}`" in text
    assert "campflow/store/access.py" in text
