"""Isolation, as a matrix: every portal route × every role × another entity's ids (orders, lists,
operations, documents) and a confidential operation's → 404 (or the login page for the
anonymous), and no other entity's code, party name or value, and no confidential operation's
code or label, in any response body.

Each foreign id is first shown to work for its owner (a 200), so that a 404 means "not yours",
never "no such thing". One world is built (real lists sent by the real step, a child operation
created by a real approval) and every case is tried against it; the failures are listed together.
Every route the portal serves must appear in the matrix: a new route without its row fails here.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from campflow.network import orders, packages
from tests.conftest import scalar
from tests.portal import Portal, make_account, signed_in
from tests.test_local_approval import clock, network, sent  # noqa: F401

SPECS = """kind: Family
code: SECRET
label: Direction générale
groups: [DIRECTION]
---
kind: Collaborator
code: CHEF
name: Chef de la direction
groups: [DIRECTION]
---
kind: Collaborator
code: JDUPONT
name: Jean Dupont
groups: [VENTES]
---
kind: Operation
code: HUSH
label: Rachat confidentiel
family: SECRET
party_kinds: [prospect, client]
steps:
  - code: S1
    label: Validation confidentielle
    kind: local_approval
    local_approval: {distribution: STORES, deadline: 2027-01-10T18:00}
---
kind: Operation
code: CAMP
label: Journées magasin
steps:
  - {code: E1, label: Invitation, kind: other, next: []}
---
kind: Package
code: PKG-PARIS
label: Offre réservée Paris
operation: CAMP
owner: HQ
collaboration: by_form
visible_from: 2020-01-01T00:00
visible_until: 2099-12-31T00:00
audience: [PARIS]
form: [{code: MAGASIN, label: Nom du magasin, required: true}]
documents: [paris-brief.txt]
---
kind: Package
code: PKG-LYON
label: Offre réservée Lyon
operation: CAMP
owner: HQ
collaboration: simple
visible_from: 2020-01-01T00:00
visible_until: 2099-12-31T00:00
audience: [LYON]
documents: [lyon-brief.txt]
---
kind: Package
code: PKG-CAMP
label: Journées magasin
operation: CAMP
owner: HQ
collaboration: by_campaign
visible_from: 2020-01-01T00:00
visible_until: 2099-12-31T00:00
audience: [LYON, PARIS]
distribution: STORES
form: [{code: MAGASIN, label: Nom du magasin}]
"""
# what must never reach another entity's people: codes, party names, order values, labels
SECRETS = {
    "PARIS": ("PARIS", "Magasin de Paris", "P06", "P07", "P08", "Société Générale", "Ébénisterie Roux",
              "Garage Martin", "Offre réservée Paris", "PKG-PARIS", "Paris Opéra", "CAMP-PARIS", "paris-brief"),
    "LYON": ("LYON", "Magasin de Lyon", "P01", "P03", "Boulangerie Lefèvre", "Café des Arts",
             "Offre réservée Lyon", "PKG-LYON", "Lyon Bellecour", "CAMP-LYON", "lyon-brief"),
    "HUSH": ("HUSH", "Rachat confidentiel", "Validation confidentielle"),
}
ROLES = {  # login: (roles, entity, collaborator)
    "hq.op": (("central_operator",), "HQ", None),
    "claire": (("reviewer",), "HQ", None),
    "jd": (("collaborator",), None, "JDUPONT"),
    "lyon.op": (("local_operator",), "LYON", None),
    "paris.op": (("local_operator",), "PARIS", None),
    "chef": (("central_operator", "reviewer"), "HQ", "CHEF"),  # in the DIRECTION group: the owner of HUSH
}
LOCAL_OWNER = {"PARIS": "paris.op", "LYON": "lyon.op"}


@dataclass(frozen=True)
class Case:
    method: str
    route: str  # the route's path as the app declares it
    url: str
    form: dict | None = None


@pytest.fixture
def world(sent, cli, tmp_path):
    """The lists of LOCAL/A1 sent; HUSH (confidential) sent too; per store an order, a package and
    its document, a by_campaign child operation; an account per role."""
    from flows.run_operation import process_step

    (tmp_path / "paris-brief.txt").write_text("brief de Paris", encoding="utf-8")
    (tmp_path / "lyon-brief.txt").write_text("brief de Lyon", encoding="utf-8")
    (tmp_path / "world.yaml").write_text(SPECS, encoding="utf-8")
    for args in (("apply", tmp_path / "world.yaml"), ("targets", "add", "HUSH", "--where", "kind in (PRO, CLI)")):
        result = cli(*args)
        assert result.code == 0, (args, result.err)
    assert process_step("HUSH", "S1").state == "Completed"
    for code in ("PKG-PARIS", "PKG-LYON", "PKG-CAMP"):
        packages.act(orders.publish, code, as_="hq1")
    for login, (roles, entity, collaborator) in ROLES.items():
        make_account(login, *roles, entity=entity, collaborator=collaborator)
    ids = {}
    for entity, login, package, values in (("PARIS", "paris.op", "PKG-PARIS", {"MAGASIN": "Paris Opéra"}),
                                           ("LYON", "lyon.op", "PKG-LYON", {})):
        packages.act(orders.create_order, package, as_=login, values=values)
        camp = packages.act(orders.create_order, "PKG-CAMP", as_=login, values={"MAGASIN": f"x {entity}"})
        assert camp.summary
        order_id = scalar("""select o.id from package_order o join package p on p.id = o.package_id
                             join entity e on e.id = o.entity_id where p.code = 'PKG-CAMP' and e.code = :e""", e=entity)
        packages.act(orders.approve_order, order_id, as_="claire")
        ids[entity] = {"order": scalar("""select o.id from package_order o join package p on p.id = o.package_id
                                          where p.code = :p""", p=package),
                       "package": package, "child": f"CAMP-{entity}"}
    assert scalar("select count(*) from operation where code in ('CAMP-PARIS', 'CAMP-LYON')") == 2
    return ids


def cases_against(entity: str, ids: dict) -> Iterator[Case]:
    """Every route, aimed at `entity`'s things (what another store must never reach)."""
    order, package, child = ids["order"], ids["package"], ids["child"]
    own_list = "/lists/LOCAL/A1"
    yield Case("GET", "/orders/{order_id}", f"/orders/{order}")
    yield Case("POST", "/orders/{order_id}/edit", f"/orders/{order}/edit", {"v_MAGASIN": "pirate"})
    yield Case("POST", "/orders/{order_id}/cancel", f"/orders/{order}/cancel", {"comment": "pirate"})
    yield Case("POST", "/central/orders/{order_id}/approve", f"/central/orders/{order}/approve", {"comment": ""})
    yield Case("POST", "/central/orders/{order_id}/reject", f"/central/orders/{order}/reject", {"comment": "no"})
    yield Case("GET", "/packages/{code}", f"/packages/{package}")
    yield Case("POST", "/packages/{code}/order", f"/packages/{package}/order", {"v_MAGASIN": "pirate"})
    yield Case("GET", "/packages/{code}/documents/{number}", f"/packages/{package}/documents/1")
    yield Case("GET", "/operations/{code}", f"/operations/{child}")
    yield Case("POST", "/operations/{code}/run", f"/operations/{child}/run")
    yield Case("GET", "/lists/{operation}/{step}", f"{own_list}?entity={entity}")
    yield Case("GET", "/lists/{operation}/{step}/download", f"{own_list}/download?entity={entity}")
    for action in ("remove", "restore", "approve"):
        yield Case("POST", f"/lists/{{operation}}/{{step}}/{action}", f"{own_list}/{action}",
                   {"entity": entity, "item": "P06" if entity == "PARIS" else "P01"})
    yield Case("POST", "/lists/{operation}/{step}/upload", f"{own_list}/upload", {"entity": entity})


def confidential_cases() -> Iterator[Case]:
    """Every route that names an operation, aimed at HUSH (confidential: the DIRECTION group only)."""
    yield Case("GET", "/operations/{code}", "/operations/HUSH")
    yield Case("POST", "/operations/{code}/run", "/operations/HUSH/run")
    for entity in ("LYON", "PARIS"):
        yield Case("GET", "/lists/{operation}/{step}", f"/lists/HUSH/S1?entity={entity}")
        yield Case("GET", "/lists/{operation}/{step}/download", f"/lists/HUSH/S1/download?entity={entity}")
        for action in ("remove", "restore", "approve"):
            yield Case("POST", f"/lists/{{operation}}/{{step}}/{action}", f"/lists/HUSH/S1/{action}",
                       {"entity": entity, "item": "P01"})
        yield Case("POST", "/lists/{operation}/{step}/upload", "/lists/HUSH/S1/upload", {"entity": entity})
    yield Case("GET", "/lists/{operation}/{step}", "/lists/HUSH/S1")


# listings: (route, who reads it) — foreign data must be absent, whatever the status
LISTINGS = ("/", "/packages", "/orders", "/lists", "/operations", "/central/orders", "/central/packages",
            "/central/lists", "/central/audit")
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/password/{token}"),
          ("POST", "/password/{token}"), ("GET", "/forgot"), ("POST", "/forgot")}  # tested in test_portal_auth


def served_routes() -> set[tuple[str, str]]:
    from campflow.portal.app import create_app

    found = set()
    for entry in create_app().routes:
        for route in getattr(getattr(entry, "original_router", None), "routes", [entry]):
            for method in getattr(route, "methods", None) or ():
                found.add((method, route.path))
    return found


def request(portal: Portal, case: Case):
    if case.method == "GET":
        return portal.get(case.url)
    if case.route.endswith("/upload"):
        return portal.client.post(case.url, data={"csrf_token": portal.token, **(case.form or {})},
                                  files={"file": ("list.xlsx", b"PK\x03\x04 not really", "application/octet-stream")})
    return portal.post(case.url, case.form or {})


def leaks(body: str, secrets: tuple[str, ...]) -> list[str]:
    text = html.unescape(body)
    return [s for s in secrets if s in text]


def test_every_route_is_in_the_matrix():
    ids = {"order": 1, "package": "P", "child": "C"}
    covered = {(c.method, c.route) for c in cases_against("PARIS", ids)} | {("GET", r) for r in LISTINGS} | PUBLIC
    assert served_routes() - covered == set()
    assert {(c.method, c.route) for c in confidential_cases()} <= covered


def test_isolation_matrix(world):
    failures: list[str] = []
    sessions = {login: signed_in(login) for login in ROLES}
    sessions["anonymous"] = Portal()
    sessions["anonymous"].get("/login")

    # 1. the owners reach their things (so that a 404 below means "not yours")
    for entity, owner in LOCAL_OWNER.items():
        for case in cases_against(entity, world[entity]):
            if case.method == "GET" and "entity=" not in case.url:
                response = request(sessions[owner], case)
                if response.status_code != 200:
                    failures.append(f"owner {owner} {case.url}: {response.status_code}")
    for url in ("/operations/HUSH", "/lists/HUSH/S1?entity=LYON", "/lists/HUSH/S1/download?entity=PARIS"):
        if (status := sessions["chef"].get(url).status_code) != 200:
            failures.append(f"chef (DIRECTION) {url}: {status}")
    for url in ("/lists/LOCAL/A1?entity=PARIS", "/orders/{}".format(world["PARIS"]["order"])):
        if (status := sessions["hq.op"].get(url).status_code) != 200:
            failures.append(f"hq.op {url}: {status}")

    # 2. listings hold no foreign data (before any refusal lands in the audit log)
    readers = {"lyon.op": SECRETS["PARIS"] + SECRETS["HUSH"], "paris.op": SECRETS["LYON"] + SECRETS["HUSH"],
               "hq.op": SECRETS["HUSH"], "claire": SECRETS["HUSH"], "jd": SECRETS["HUSH"],
               "anonymous": SECRETS["PARIS"] + SECRETS["LYON"] + SECRETS["HUSH"]}
    for login, secrets in readers.items():
        for url in LISTINGS:
            response = sessions[login].get(url)
            if found := leaks(response.text, secrets):
                failures.append(f"{login} GET {url} ({response.status_code}) shows {found}")

    # 3. another store's ids: 404 for the other store, the login page for the anonymous
    for attacker, victim in (("lyon.op", "PARIS"), ("paris.op", "LYON"), ("anonymous", "PARIS")):
        for case in cases_against(victim, world[victim]):
            response = request(sessions[attacker], case)
            expected = 303 if attacker == "anonymous" else 404
            if response.status_code != expected or (
                    attacker == "anonymous" and not response.headers.get("location", "").startswith("/login")):
                failures.append(f"{attacker} {case.method} {case.url}: {response.status_code}, expected {expected}")
            if found := leaks(response.text, SECRETS[victim]):
                failures.append(f"{attacker} {case.method} {case.url} shows {found}")

    # 4. the confidential operation: 404 for everyone outside its group, central people included
    for attacker in ("hq.op", "claire", "jd", "lyon.op", "paris.op"):
        for case in confidential_cases():
            response = request(sessions[attacker], case)
            if response.status_code != 404:
                failures.append(f"{attacker} {case.method} {case.url}: {response.status_code}, expected 404")
            if found := leaks(response.text, SECRETS["HUSH"]):
                failures.append(f"{attacker} {case.method} {case.url} shows {found}")

    # nothing was changed by any refused request
    assert scalar("select count(*) from package_order where status = 'cancelled'") == 0
    assert scalar("select count(*) from package_order where values::text like '%pirate%'") == 0
    assert scalar("select count(*) from local_approval where status <> 'pending'") == 0
    assert scalar("select count(*) from local_approval_party where removed") == 0
    assert failures == [], "\n".join(failures)
    assert scalar("select count(*) from audit_event where outcome = 'refused'") > 0
