"""The portal's local approval lists: a store removes and restores parties and contacts, approves,
downloads its list and uploads it back; the central entity follows every list; another
entity's list is a 404. Real PostgreSQL, the real step kind sending the lists, the FastAPI app
in process."""

from __future__ import annotations

import html
import io
import re
import zipfile

import openpyxl
import pytest

from tests.conftest import rows, scalar
from tests.portal import make_account, signed_in
from tests.test_local_approval import approvals, clock, network, removed_flags, sent  # noqa: F401

LYON_LIST = "/lists/LOCAL/A1"
PARIS_DATA = ("PARIS", "P06", "P07", "P08", "Société Générale", "Ébénisterie Roux", "Garage Martin",
              "Magasin de Paris")


@pytest.fixture
def accounts(sent):
    make_account("lyon.op", "local_operator", entity="LYON")
    make_account("paris.op", "local_operator", entity="PARIS")
    make_account("hq.op", "central_operator", entity="HQ")
    return sent


def contact_removed(party: str, contact: str) -> bool:
    return bool(scalar("""select count(*) from local_approval_contact lac join contact c on c.id = lac.contact_id
                          join party p on p.id = lac.party_id where p.code = :p and c.code = :c""", p=party, c=contact))


def audited() -> list[tuple]:
    return rows("select login, action, subject, outcome from audit_event where action like 'list_%' order by id")


def shown(response) -> str:
    """A page's text as the browser shows it (entities decoded)."""
    return html.unescape(response.text)


def struck(page: str, text: str) -> bool:
    return re.search(r'<span class="removed">\s*' + re.escape(text), page) is not None


class TestChanges:
    def test_remove_a_contact_and_a_party_restore_then_approve(self, accounts):
        lyon = signed_in("lyon.op")
        mine = lyon.get("/lists")
        assert mine.status_code == 200
        assert "LOCAL" in shown(mine) and "2027-01-10 18:00 (Europe/Paris)" in shown(mine)
        assert 'href="/lists/LOCAL/A1"' in shown(mine)
        page = lyon.get(LYON_LIST)
        assert page.status_code == 200
        for expected in ("P01", "Boulangerie Lefèvre", "C1 Hélène Lefèvre (DIRECTION)", "P03", "C2 Claire Morel"):
            assert expected in shown(page)
        assert not any(foreign in shown(page) for foreign in PARIS_DATA)

        assert lyon.post(f"{LYON_LIST}/remove", {"item": "P03/C2"}).status_code == 303
        assert contact_removed("P03", "C2") and removed_flags()["P03"] == (False, None)
        assert lyon.post(f"{LYON_LIST}/remove", {"item": "P02"}).status_code == 303
        assert removed_flags()["P02"] == (True, "lyon.op")
        page = lyon.get(LYON_LIST)
        assert "P02 removed from the list: 2 kept, 1 removed of 3" in shown(page)
        assert struck(page.text, "P02") and struck(page.text, "C2 Claire Morel")
        assert not struck(page.text, "P01")

        assert lyon.post(f"{LYON_LIST}/restore", {"item": "P02"}).status_code == 303
        assert removed_flags()["P02"] == (False, None)
        # the last contact of a party removed: the party goes too
        lyon.post(f"{LYON_LIST}/remove", {"item": "P01/C1"})
        assert removed_flags()["P01"] == (True, "lyon.op")
        assert "P01 had no contact left, so the party is removed" in shown(lyon.get(LYON_LIST))

        assert lyon.post(f"{LYON_LIST}/approve").status_code == 303
        assert approvals()["LYON"] == ("approved", 0)
        assert scalar("select approved_by from local_approval la join entity e on e.id = la.entity_id "
                      "where e.code = 'LYON'") == "lyon.op"
        page = lyon.get(LYON_LIST)
        assert "LYON's list approved: 2 parties kept, 1 removed, 1 contacts removed" in shown(page)
        assert "This list can no longer change" in shown(page) and "/approve" not in shown(page)
        # once approved, nothing changes any more: refused, audited
        lyon.post(f"{LYON_LIST}/restore", {"item": "P01"})
        assert "was already approved by lyon.op" in shown(lyon.get(LYON_LIST))
        assert removed_flags()["P01"] == (True, "lyon.op")
        assert audited() == [("lyon.op", "list_remove", "LOCAL/A1/LYON", "ok"),
                             ("lyon.op", "list_remove", "LOCAL/A1/LYON", "ok"),
                             ("lyon.op", "list_restore", "LOCAL/A1/LYON", "ok"),
                             ("lyon.op", "list_remove", "LOCAL/A1/LYON", "ok"),
                             ("lyon.op", "list_approve", "LOCAL/A1/LYON", "ok"),
                             ("lyon.op", "list_restore", "LOCAL/A1/LYON", "refused")]

    def test_a_party_or_contact_not_in_the_list_changes_nothing(self, accounts):
        lyon = signed_in("lyon.op")
        lyon.get(LYON_LIST)
        for item in ("P07", "P03/C9", ""):
            assert lyon.post(f"{LYON_LIST}/remove", {"item": item}).status_code == 303
        page = lyon.get(LYON_LIST).text
        assert "P07 is not in this list" in page and "P03/C9 is not in this list" in page
        assert "name a party (or PARTY/CONTACT for one of its contacts)" in page
        assert removed_flags()["P07"] == (False, None)
        assert scalar("select count(*) from local_approval_contact") == 0
        assert [o for *_, o in audited()] == ["refused"] * 3

    def test_the_central_entity_follows_every_list_and_acts_for_an_entity(self, accounts):
        hq = signed_in("hq.op")
        hq.get(LYON_LIST)
        lyon = signed_in("lyon.op")
        lyon.post(f"{LYON_LIST}/approve")
        progress = hq.get("/central/lists")
        assert progress.status_code == 200
        table = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", progress.text))
        assert "LOCAL Mailing local A1 LYON approved 3 3 0 2027-01-10 18:00 (Europe/Paris) lyon.op 2027-01-05 10:00" \
            in table
        assert "A1 NANTES pending 2 2 0" in table and "A1 PARIS pending 3 3 0" in table
        assert hq.get("/lists").headers["location"] == "/central/lists"
        choose = hq.get(LYON_LIST)
        assert 'href="/lists/LOCAL/A1?entity=NANTES"' in shown(choose)
        nantes = hq.get(f"{LYON_LIST}?entity=NANTES")
        assert "Librairie Nantaise" in shown(nantes)
        assert hq.post(f"{LYON_LIST}/remove", {"item": "P09", "entity": "NANTES"}).headers["location"] \
            == "/lists/LOCAL/A1?entity=NANTES"
        assert removed_flags()["P09"] == (True, "hq.op")
        hq.post(f"{LYON_LIST}/approve", {"entity": "NANTES"})
        assert approvals()["NANTES"] == ("approved", 0)
        # a local operator has no central page
        assert signed_in("lyon.op").get("/central/lists").status_code == 404


@pytest.fixture
def big(network, cli, smtp):
    """PARIS gets 123 parties (no limit for Paris), then the lists are sent."""
    from flows.run_operation import process_step

    lines = ["FICHE;TIERS;NOM;VILLE"] + [f"PRO;Q{n:03};Atelier numéro {n:03};Paris" for n in range(120)]
    (network / "more.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for args in (("parties", "import", network / "more.csv", "-q"),
                 ("targets", "add", "LOCAL", "--where", "kind in (PRO, CLI)")):
        result = cli(*args)
        assert result.code == 0, result.err
    assert process_step("LOCAL", "A1").state == "Completed"
    make_account("paris.op", "local_operator", entity="PARIS")
    make_account("lyon.op", "local_operator", entity="LYON")


class TestSearchAndPaging:
    def test_fifty_parties_a_page(self, big):
        paris = signed_in("paris.op")
        first = paris.get(LYON_LIST)
        assert "123 parties" in shown(first) and "page 1 of 3" in shown(first)
        assert first.text.count('<tr class="party') == 50
        assert "P06" in shown(first) and "Q046" in shown(first) and "Q047" not in shown(first)
        assert 'href="/lists/LOCAL/A1?page=2" rel="next"' in shown(first) and 'rel="prev"' not in shown(first)
        last = paris.get(f"{LYON_LIST}?page=3")
        assert last.text.count('<tr class="party') == 23 and "Q119" in shown(last) and 'rel="next"' not in shown(last)
        assert 'href="/lists/LOCAL/A1?page=2" rel="prev"' in shown(last)
        assert paris.get(f"{LYON_LIST}?page=9").text.count('<tr class="party') == 0

    def test_search_by_party_code_name_or_contact(self, big):
        paris = signed_in("paris.op")
        found = paris.get(f"{LYON_LIST}?q=garage")
        assert "1 party matching" in shown(found) and "Garage Martin" in shown(found)
        assert found.text.count('<tr class="party') == 1
        many = paris.get(f"{LYON_LIST}?q=numéro 1")
        assert "20 parties matching" in shown(many) and "page 1 of 1" in shown(many)
        assert paris.get(f"{LYON_LIST}?q=Q11").text.count('<tr class="party') == 10
        assert paris.get(f"{LYON_LIST}?q=100%25").text.count('<tr class="party') == 0  # % is a character
        lyon = signed_in("lyon.op")
        by_contact = lyon.get(f"{LYON_LIST}?q=claire morel")
        assert by_contact.text.count('<tr class="party') == 1 and "Café des Arts" in shown(by_contact)
        # searching never reaches another entity's list
        assert lyon.get(f"{LYON_LIST}?q=garage").text.count('<tr class="party') == 0


def upload(portal, content: bytes, name: str = "LOCAL-A1-LYON.xlsx", path: str = LYON_LIST, **form):
    portal.get(path)
    return portal.client.post(f"{path}/upload", data={"csrf_token": portal.token, **form},
                              files={"file": (name, content, "application/octet-stream")})


class TestSpreadsheet:
    def test_download_then_upload_with_keep_no(self, accounts, tmp_path):
        lyon = signed_in("lyon.op")
        got = lyon.get(f"{LYON_LIST}/download")
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("application/vnd.openxmlformats")
        assert 'filename="LOCAL-A1-LYON.xlsx"' in got.headers["content-disposition"]
        path = tmp_path / "LOCAL-A1-LYON.xlsx"
        path.write_bytes(got.content)
        book = openpyxl.load_workbook(path)
        sheet = book["Liste"]
        values = list(sheet.iter_rows(values_only=True))
        assert values[2][0] == "TIERS" and values[2][-1] == "KEEP"
        assert [(r[0], r[2], r[-1]) for r in values[3:]] == [("P01", "C1", "yes"), ("P02", None, "yes"),
                                                             ("P03", "C1", "yes"), ("P03", "C2", "yes")]
        sheet["K5"] = "no"  # P02
        sheet["K6"] = "non"  # P03/C1
        book.save(path)
        done = upload(lyon, path.read_bytes())
        assert done.status_code == 303 and done.headers["location"] == LYON_LIST
        page = lyon.get(LYON_LIST)
        assert "LYON's list read back and approved: 2 parties kept, 1 removed, 1 contacts removed" in shown(page)
        assert approvals()["LYON"] == ("approved", 0)
        assert removed_flags()["P02"] == (True, "lyon.op") and contact_removed("P03", "C1")
        assert not contact_removed("P03", "C2")
        # the list downloaded again says what was answered
        again = tmp_path / "again.xlsx"
        again.write_bytes(lyon.get(f"{LYON_LIST}/download").content)
        keep = [(r[0], r[2], r[-1]) for r in list(openpyxl.load_workbook(again)["Liste"].iter_rows(values_only=True))[3:]]
        assert keep == [("P01", "C1", "yes"), ("P02", None, "no"), ("P03", "C1", "no"), ("P03", "C2", "yes")]
        assert [a for _, a, _, _ in audited()] == ["list_download", "list_upload", "list_download"]

    @pytest.mark.parametrize("content", [
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        "TIERS;KEEP\nP02;no\n".encode(),
        b"PK\x03\x04 not really a zip",
    ], ids=["pdf", "text", "fake-zip"])
    def test_a_file_that_is_not_an_xlsx_is_refused(self, accounts, content):
        lyon = signed_in("lyon.op")
        refused = upload(lyon, content)
        assert refused.status_code == 303
        page = lyon.get(LYON_LIST)
        assert "The file was not taken; nothing changed" in shown(page) and "not an Excel workbook" in shown(page)
        assert approvals()["LYON"] == ("pending", 0) and removed_flags()["P02"] == (False, None)
        assert audited() == [("lyon.op", "list_upload", "LOCAL/A1/LYON", "refused")]

    def test_a_zip_that_is_no_workbook_and_an_oversized_file_are_refused(self, accounts):
        lyon = signed_in("lyon.op")
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("notes.txt", "hello")
        upload(lyon, archive.getvalue())
        assert "a zip archive but not an Excel workbook" in shown(lyon.get(LYON_LIST))
        upload(lyon, b"PK\x03\x04" + b"0" * (10 * 1024 * 1024 + 10))
        assert "larger than 10 MB" in shown(lyon.get(LYON_LIST))
        assert approvals()["LYON"] == ("pending", 0)

    def test_another_entitys_list_uploaded_is_refused(self, accounts):
        paris = signed_in("paris.op")
        theirs = paris.get(f"{LYON_LIST}/download").content
        lyon = signed_in("lyon.op")
        upload(lyon, theirs, "LOCAL-A1-PARIS.xlsx")
        page = lyon.get(LYON_LIST)
        assert "this file is not LYON's list of LOCAL/A1: none of its parties is in your list" in shown(page)
        assert approvals() == {"LYON": ("pending", 0), "PARIS": ("pending", 0), "NANTES": ("pending", 0)}
        assert not any(removed for removed, _ in removed_flags().values())


class TestIsolation:
    def test_paris_list_is_not_found_for_lyon(self, accounts):
        lyon = signed_in("lyon.op")
        lyon.get(LYON_LIST)
        token = lyon.token
        answers = [lyon.get(f"{LYON_LIST}?entity=PARIS"), lyon.get(f"{LYON_LIST}/download?entity=PARIS"),
                   lyon.post(f"{LYON_LIST}/remove", {"item": "P06", "entity": "PARIS"}, csrf=token),
                   lyon.post(f"{LYON_LIST}/approve", {"entity": "PARIS"}, csrf=token),
                   upload(lyon, b"PK\x03\x04", entity="PARIS"),
                   lyon.get("/central/lists")]
        for answer in answers:
            assert answer.status_code == 404, answer.request.url
            assert not any(foreign in shown(answer) for foreign in PARIS_DATA), answer.request.url
        assert approvals()["PARIS"] == ("pending", 0) and removed_flags()["P06"] == (False, None)
        assert scalar("select count(*) from audit_event where action = 'refused' and login = 'lyon.op'") >= 4
        # a party of PARIS named in LYON's own list: not in it, nothing changed
        lyon.post(f"{LYON_LIST}/remove", {"item": "P06"})
        assert removed_flags()["P06"] == (False, None)

    def test_no_list_no_step_no_operation_are_alike(self, accounts):
        lyon = signed_in("lyon.op")
        for path in ("/lists/LOCAL/R1", "/lists/LOCAL/EXPORT", "/lists/NOPE/A1", "/lists/LOCAL/ZZ"):
            assert lyon.get(path).status_code == 404, path

    def test_a_confidential_operations_lists_are_hidden_outside_its_groups(self, accounts):
        from campflow.store import db

        with db.engine().begin() as conn:
            conn.exec_driver_sql("update operation set groups = '{DIRECTION}' where code = 'LOCAL'")
        lyon = signed_in("lyon.op")
        assert "LOCAL" not in shown(lyon.get("/lists"))
        assert lyon.get(LYON_LIST).status_code == 404
        assert lyon.get(f"{LYON_LIST}/download").status_code == 404
        hq = signed_in("hq.op")  # a central operator outside the groups is no exception
        assert "Mailing local" not in shown(hq.get("/central/lists"))
        assert hq.get(f"{LYON_LIST}?entity=LYON").status_code == 404
        make_account("boss", "admin", entity="HQ")
        assert "Mailing local" in shown(signed_in("boss").get("/central/lists"))
