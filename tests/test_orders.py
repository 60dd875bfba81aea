"""Orders of packages and their approval (SPEC §9): ordering within the dates, form values,
editing, cancelling, deciding, who may act, the e-mails, and the approve-order flow paused for the
Prefect UI's form."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from campflow.errors import CampflowError
from campflow.network import orders, packages
from campflow.network.accounts import portal_url
from tests.conftest import rows, scalar
from tests.test_packages import OPEN, UTC, approvals, mail, network, publish, snapshot  # noqa: F401

VALUES = {"MAGASIN": "Lyon Bellecour", "REMISE": "15 %"}


def order(package: str = "PKG-WINDOW", as_: str = "lyon", now: dt.datetime = OPEN, **kwargs) -> int:
    outcome = packages.act(orders.create_order, package, as_=as_, now=now, **kwargs)
    order_id, = outcome.order_ids
    return order_id


def status(order_id: int) -> str:
    return scalar("select status from package_order where id = :id", id=order_id)


def history(order_id: int) -> list[tuple]:
    return rows("select action, actor, comment from order_event where order_id = :id order by id", id=order_id)


def body(message) -> str:
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")


@pytest.fixture
def window(network):
    publish("PKG-WINDOW")
    return network


@pytest.fixture
def form(network):
    publish("PKG-FORM")
    return network


class TestOrdering:
    def test_an_order_within_visibility_is_pending(self, window):
        order_id = order()
        assert rows("select status, created_by, values from package_order") == [("pending", "lyon", {})]
        assert history(order_id) == [("created", "lyon", None)]

    @pytest.mark.parametrize("now, problem", [
        (dt.datetime(2029, 12, 31, 22, tzinfo=UTC), "package PKG-WINDOW is visible from 2030-01-01 00:00 "
                                                    "(Europe/Paris); order from then"),
        (dt.datetime(2030, 6, 1, tzinfo=UTC), "registration to package PKG-WINDOW closed on 2030-05-31 18:00"),
        (dt.datetime(2030, 7, 1, tzinfo=UTC), "package PKG-WINDOW was visible until 2030-06-30 00:00"),
    ])
    def test_outside_visibility_or_after_the_deadline_is_refused(self, window, now, problem):
        with pytest.raises(CampflowError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            order(now=now)
        assert scalar("select count(*) from package_order") == 0

    def test_an_entity_outside_the_audience_is_refused(self, window):
        with pytest.raises(CampflowError, match=r"package PKG-WINDOW is not offered to NANTES \(its audience: "
                                                r"LYON, PARIS\)"):
            order(as_="nantes")

    def test_an_unpublished_package_is_refused(self, network):
        with pytest.raises(CampflowError, match="package PKG-WINDOW is not published yet; .*"
                                                "`campflow packages publish PKG-WINDOW`"):
            order()

    def test_a_second_live_order_is_refused(self, window):
        first = order()
        with pytest.raises(CampflowError, match=f"LYON already has order {first} \\(pending\\) for PKG-WINDOW; "
                                                f"change it with `campflow orders edit {first}"):
            order()

    def test_the_central_entity_orders_on_behalf_of_a_named_local_one(self, window):
        with pytest.raises(CampflowError, match="pass --entity CODE"):
            order(as_="marketing")
        order_id = order(as_="marketing", entity="PARIS")
        assert rows("select e.code, o.created_by from package_order o join entity e on e.id = o.entity_id") == [
            ("PARIS", "marketing")]
        assert history(order_id) == [("created", "marketing", None)]

    def test_a_local_entity_cannot_order_for_another(self, window):
        with pytest.raises(CampflowError, match="lyon acts for LYON and may not read or change orders of PARIS"):
            order(entity="PARIS")

    def test_the_reviewers_are_told_where_to_decide(self, window, mail):
        order_id = order()
        message = mail.messages()["review@siege.test"]
        assert message["Subject"] == f"Order {order_id}: LYON orders PKG-WINDOW"
        text = body(message)
        assert f"on the order's page:\n  {portal_url(f'orders/{order_id}')}\n" in text
        assert f"All orders waiting for a decision: {portal_url('central/orders')}\n" in text
        assert f"campflow orders approve {order_id} " in text  # the reviewers are central operators with a shell


class TestFormValues:
    def test_values_are_typed(self, form):
        order_id = order("PKG-FORM", now=None, values={
            "magasin": " Lyon ", "REMISE": "15 %", "NB": "1200", "LE": "2030-03-15", "PRINT": "oui"})
        assert scalar("select values from package_order where id = :id", id=order_id) == {
            "MAGASIN": "Lyon", "REMISE": "15 %", "NB": 1200, "LE": "2030-03-15", "PRINT": True}

    @pytest.mark.parametrize("values, problem", [
        ({"REMISE": "15 %"}, r"field MAGASIN \(Nom du magasin\) is required: add --value MAGASIN=…"),
        ({"MAGASIN": "Lyon", "REMISE": "50 %"}, r"field REMISE \(Remise\): must be one of '10 %', '15 %'; got '50 %'"),
        (VALUES | {"NB": "beaucoup"}, r"field NB \(Exemplaires\): must be a number such as 12 or 12.5; got 'beaucoup'"),
        (VALUES | {"LE": "15/03/2030"}, r"field LE \(Date\): must be a date YYYY-MM-DD"),
        (VALUES | {"PRINT": "peut-être"}, r"field PRINT \(Imprimé\): must be yes or no; got 'peut-être'"),
        (VALUES | {"COULEUR": "bleu"}, r"package PKG-FORM has no field 'COULEUR'; its fields: MAGASIN, REMISE, NB"),
    ])
    def test_a_bad_value_is_refused_naming_the_field(self, form, values, problem):
        with pytest.raises(CampflowError, match=problem):
            order("PKG-FORM", now=None, values=values)
        assert scalar("select count(*) from package_order") == 0


class TestEditAndCancel:
    def test_editable_until_approved(self, form):
        order_id = order("PKG-FORM", now=None, values=VALUES)
        packages.act(orders.edit_order, order_id, as_="lyon", values={"remise": "10 %"})
        assert scalar("select values from package_order where id = :id", id=order_id) == VALUES | {"REMISE": "10 %"}
        with pytest.raises(CampflowError, match="field MAGASIN .* is required"):
            packages.act(orders.edit_order, order_id, as_="lyon", values={"MAGASIN": ""})
        packages.act(orders.approve_order, order_id, as_="marketing")
        before = snapshot()
        with pytest.raises(CampflowError, match=f"order {order_id} of LYON for PKG-FORM is approved; its values can "
                                                "no longer change"):
            packages.act(orders.edit_order, order_id, as_="lyon", values={"REMISE": "15 %"})
        assert snapshot() == before
        assert [action for action, _, _ in history(order_id)] == ["created", "edited", "approved"]

    def test_automatic_mode_changes_personalisation_without_approval(self, network, approvals):
        publish("PKG-AUTO")
        lyon = scalar("select o.id from package_order o join entity e on e.id = o.entity_id where e.code = 'LYON'")
        with pytest.raises(CampflowError, match=f"LYON is already registered to PKG-AUTO \\(order {lyon}, approved\\); "
                                                f"change its personalisation with `campflow orders edit {lyon}"):
            order("PKG-AUTO")
        packages.act(orders.edit_order, lyon, as_="lyon", values={"MAGASIN": "Lyon Part-Dieu"})
        assert (status(lyon), scalar("select values from package_order where id = :id", id=lyon)) == (
            "approved", {"MAGASIN": "Lyon Part-Dieu"})

    def test_by_campaign_approved_order_stays_editable(self, network, approvals):
        publish("PKG-CAMPAIGN")
        order_id = order("PKG-CAMPAIGN")
        packages.act(orders.approve_order, order_id, as_="marketing", now=OPEN)
        packages.act(orders.edit_order, order_id, as_="lyon", values={"MAGASIN": "Lyon"})
        assert status(order_id) == "approved"

    def test_cancel_a_pending_order_then_order_again(self, window, mail):
        order_id = order()
        packages.act(orders.cancel_order, order_id, as_="lyon", comment="plus de budget")
        assert status(order_id) == "cancelled"
        assert history(order_id)[-1] == ("cancelled", "lyon", "plus de budget")
        assert "plus de budget" in body(mail.messages()["review@siege.test"])
        assert order() != order_id

    def test_order_again_after_a_rejection_the_rejected_order_stays(self, window, approvals):
        rejected = order()
        with pytest.raises(CampflowError, match=f"LYON already has order {rejected} \\(pending\\)"):
            order()
        packages.act(orders.reject_order, rejected, as_="marketing", comment="Vitrine pas prête")
        again = order()
        assert again != rejected and (status(rejected), status(again)) == ("rejected", "pending")
        assert history(rejected) == [("created", "lyon", None), ("rejected", "marketing", "Vitrine pas prête")]
        with pytest.raises(CampflowError, match=f"LYON already has order {again} \\(pending\\)"):
            order()  # still one live order at a time

    def test_an_approved_manual_order_cannot_be_cancelled_by_the_local_entity(self, window):
        order_id = order()
        packages.act(orders.approve_order, order_id, as_="marketing", now=OPEN)
        with pytest.raises(CampflowError, match="can't be cancelled by the local entity"):
            packages.act(orders.cancel_order, order_id, as_="lyon")
        assert status(order_id) == "approved"

    def test_automatic_mode_unsubscribes(self, network, approvals):
        publish("PKG-AUTO")
        paris = scalar("select o.id from package_order o join entity e on e.id = o.entity_id where e.code = 'PARIS'")
        outcome = packages.act(orders.cancel_order, paris, as_="paris")
        assert outcome.summary == f"order {paris} of PARIS for PKG-AUTO unsubscribed"
        assert status(paris) == "cancelled"


class TestDecisions:
    def test_the_decision_is_mailed_with_the_comment(self, form, mail, approvals):
        order_id = order("PKG-FORM", now=None, values=VALUES)
        packages.act(orders.approve_order, order_id, as_="marketing", comment="Belle vitrine !")
        assert approvals == [(order_id, "approved", "marketing")]
        assert rows("select status, comment, decided_by from package_order") == [
            ("approved", "Belle vitrine !", "marketing")]
        assert history(order_id)[-1] == ("approved", "marketing", "Belle vitrine !")
        message = mail.messages()["lyon@store.test"]
        assert message["Subject"] == f"Order {order_id} for PKG-FORM: approved"
        text = body(message)
        assert "Comment: Belle vitrine !" in text
        assert f"Your part of the operation is ready (order {order_id})." in text

    def test_a_rejection_needs_a_comment_which_is_mailed(self, window, mail, approvals):
        order_id = order()
        with pytest.raises(CampflowError, match="needs a comment telling LYON why"):
            packages.act(orders.reject_order, order_id, as_="marketing")
        packages.act(orders.reject_order, order_id, as_="marketing", comment="Pas cette année")
        assert (status(order_id), approvals) == ("rejected", [])
        assert "Comment: Pas cette année" in body(mail.messages()["lyon@store.test"])

    def test_approving_twice_is_refused_and_changes_nothing(self, window, approvals):
        order_id = order()
        packages.act(orders.approve_order, order_id, as_="marketing")
        before = snapshot()
        with pytest.raises(CampflowError, match=f"order {order_id} of LYON is already approved by marketing on "
                                                r".*; nothing changed"):
            packages.act(orders.approve_order, order_id, as_="marketing")
        assert snapshot() == before and len(approvals) == 1

    @pytest.mark.parametrize("first", ["cancel", "reject"])
    def test_approving_a_cancelled_or_rejected_order_is_refused(self, window, approvals, first):
        order_id = order()
        if first == "cancel":
            packages.act(orders.cancel_order, order_id, as_="lyon")
        else:
            packages.act(orders.reject_order, order_id, as_="marketing", comment="non")
        before = snapshot()
        with pytest.raises(CampflowError, match=f"order {order_id} of LYON is already (cancelled|rejected)"):
            packages.act(orders.approve_order, order_id, as_="marketing")
        assert snapshot() == before and approvals == []

    def test_a_local_operator_cannot_decide(self, window):
        order_id = order()
        with pytest.raises(CampflowError, match="only the central entity's reviewers approve or reject orders; "
                                                "lyon acts for LYON"):
            packages.act(orders.approve_order, order_id, as_="lyon")
        assert status(order_id) == "pending"


class TestOtherEntities:
    @pytest.mark.parametrize("action, kwargs", [
        (orders.edit_order, {"values": {}}), (orders.cancel_order, {}),
    ])
    def test_a_local_entity_cannot_touch_another_entitys_order(self, window, action, kwargs):
        order_id = order(as_="paris")
        before = snapshot()
        with pytest.raises(CampflowError, match=f"lyon acts for LYON and may not read or change order {order_id} "
                                                "of PARIS"):
            packages.act(action, order_id, as_="lyon", **kwargs)
        assert snapshot() == before

    def test_lists_and_show_keep_to_the_entity(self, window, cli):
        lyon, paris = order(), order(as_="paris")
        mine = json.loads(cli("orders", "list", "--as", "lyon", "--json").out)
        assert [o["id"] for o in mine] == [lyon]
        everything = json.loads(cli("orders", "list", "--as", "marketing", "--status", "pending", "--json").out)
        assert [o["id"] for o in everything] == [lyon, paris]
        table = cli("orders", "list", "--as", "marketing")
        assert table.code == 0 and "PARIS" in table.out and "LYON" in table.out
        refused = cli("orders", "show", str(paris), "--as", "lyon")
        assert refused.code == 1 and "may not read or change order" in refused.err


class TestCli:
    def test_order_edit_approve_and_show_history(self, form, mail, cli, approvals):
        result = cli("orders", "create", "PKG-FORM", "--as", "lyon", "--value", "MAGASIN=Lyon",
                     "--value", "REMISE=10 %")
        assert result.code == 0, result.err
        order_id = scalar("select id from package_order")
        assert f"order {order_id}: LYON ordered PKG-FORM; pending" in result.out
        assert cli("orders", "edit", str(order_id), "--as", "lyon", "--value", "NB=3").code == 0
        bad = cli("orders", "edit", str(order_id), "--as", "lyon", "--value", "NB")
        assert bad.code == 1 and "--value takes FIELD=VALUE" in bad.err
        approved = cli("orders", "approve", str(order_id), "--as", "marketing", "--comment", "ok")
        assert approved.code == 0, approved.err
        again = cli("orders", "approve", str(order_id), "--as", "marketing")
        assert again.code == 1 and "is already approved" in again.err
        shown = json.loads(cli("orders", "show", str(order_id), "--as", "lyon", "--json").out)
        assert shown["values"] == {"MAGASIN": "Lyon", "REMISE": "10 %", "NB": 3}
        assert [(e["action"], e["actor"]) for e in shown["history"]] == [
            ("created", "lyon"), ("edited", "lyon"), ("approved", "marketing")]
        assert cli("orders", "show", str(order_id), "--as", "lyon").code == 0

    def test_reject_requires_a_comment(self, form, cli):
        order_id = order("PKG-FORM", now=None, values=VALUES)
        result = cli("orders", "reject", str(order_id), "--as", "marketing")
        assert result.code == 1
        assert f"rejecting order {order_id} needs a comment telling LYON why: --comment" in result.err
        assert status(order_id) == "pending"


# ---------------------------------------------------------------- the approve-order flow


def paused_run(timeout: float = 60):
    """The one paused approve-order flow run, once it is paused."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            found = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["approve-order"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))))
            if found:
                return found[0]
            time.sleep(0.3)
    raise AssertionError("no approve-order flow run paused")


def start_review(order_id: int) -> tuple[threading.Thread, dict]:
    from flows.network import approve_order

    outcome: dict = {}

    def run() -> None:
        outcome["state"] = approve_order(order_id, timeout_hours=0.05, return_state=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


class TestApproveOrderFlow:
    def test_the_ui_form_approves_the_order(self, form, mail, approvals):
        from prefect.client.orchestration import get_client
        from prefect.flow_runs import resume_flow_run
        from prefect.input.run_input import keyset_from_paused_state

        order_id = order("PKG-FORM", now=None, values=VALUES)
        thread, outcome = start_review(order_id)
        run = paused_run()
        with get_client(sync_client=True) as client:
            keyset = keyset_from_paused_state(run.state)
            description = client.read_flow_run_input(run.id, keyset["description"])
        assert f"## Order {order_id}: Magasin de Lyon (LYON)" in description
        assert "| MAGASIN | Lyon Bellecour |" in description and "**lyon** created" in description
        resume_flow_run(run.id, run_input={"decision": "approve", "comment": "ok", "reviewer": "marketing"})
        thread.join(60)
        state = outcome["state"]
        assert state.is_completed() and state.message == f"order {order_id} of LYON for PKG-FORM approved"
        assert rows("select status, comment, decided_by from package_order") == [("approved", "ok", "marketing")]
        assert approvals == [(order_id, "approved", "marketing")]
        assert "Comment: ok" in body(mail.messages()["lyon@store.test"])

    def test_a_decision_given_meanwhile_by_the_cli_is_not_taken_twice(self, window, cli):
        from prefect.flow_runs import resume_flow_run

        order_id = order()
        thread, outcome = start_review(order_id)
        run = paused_run()
        assert cli("orders", "approve", str(order_id), "--as", "marketing").code == 0
        resume_flow_run(run.id, run_input={"decision": "reject", "comment": "non", "reviewer": "marketing"})
        thread.join(60)
        state = outcome["state"]
        assert state.is_completed() and state.name == "Skipped"
        assert state.message.startswith(f"order {order_id} was already approved by marketing on ")
        assert status(order_id) == "approved"
        assert [action for action, _, _ in history(order_id)] == ["created", "approved"]

    def test_a_refused_answer_pauses_again_with_the_reason_above_the_form(self, window, mail):
        from prefect.client.orchestration import get_client
        from prefect.flow_runs import resume_flow_run
        from prefect.input.run_input import keyset_from_paused_state

        order_id = order()
        thread, outcome = start_review(order_id)
        for answer, reason in (({"decision": "approve", "reviewer": "lyon"},
                                "reviewer 'lyon' acts for LYON; only the central entity's operators decide orders"),
                               ({"decision": "reject", "reviewer": "marketing"},
                                f"rejecting order {order_id} needs a comment telling LYON why")):
            resume_flow_run(paused_run().id, run_input=answer)
            run = paused_run()  # paused again
            with get_client(sync_client=True) as client:
                description = json.loads(client.read_flow_run_input(
                    run.id, keyset_from_paused_state(run.state)["description"]))
            assert description.startswith(f"**Answer refused:** {reason}")
            assert status(order_id) == "pending" and [a for a, _, _ in history(order_id)] == ["created"]
        resume_flow_run(run.id, run_input={"decision": "reject", "comment": "Trop tard", "reviewer": "marketing"})
        thread.join(60)
        assert outcome["state"].is_completed()
        assert rows("select status, comment, decided_by from package_order") == [("rejected", "Trop tard", "marketing")]
        assert "Comment: Trop tard" in body(mail.messages()["lyon@store.test"])

    def test_an_order_already_decided_is_skipped_at_once(self, window):
        from flows.network import approve_order

        order_id = order()
        packages.act(orders.cancel_order, order_id, as_="lyon")
        state = approve_order(order_id, return_state=True)
        assert state.is_completed() and state.message == f"order {order_id} was already cancelled; nothing to decide"

    def test_orders_review_runs_the_flow_until_the_ui_answers(self, window, cli):
        from prefect.flow_runs import resume_flow_run

        order_id = order()
        results: dict = {}
        thread = threading.Thread(target=lambda: results.update(
            result=cli("orders", "review", str(order_id), "--timeout-hours", "0.05")), daemon=True)
        thread.start()
        run = paused_run()
        resume_flow_run(run.id, run_input={"decision": "reject", "comment": "Pas cette fois", "reviewer": "marketing"})
        thread.join(60)
        result = results["result"]
        assert result.code == 0, result.err
        assert f"order {order_id} of LYON for PKG-WINDOW rejected" in result.out
        assert rows("select status, comment from package_order") == [("rejected", "Pas cette fois")]


class TestOrdersAtTheSameMoment:
    """Many stores order one package at once: they do not wait for each other; the same store
    ordering twice at once gets one order and a clear refusal."""

    def _open_order(self, login: str):
        """An order placed in a transaction left open (the caller commits or rolls back)."""
        from campflow.store import db, identity

        session = db._session_factory()()
        session.begin()
        orders.create_order(session, "PKG-WINDOW", identity.actor(session, login), now=OPEN)
        session.flush()
        return session

    def test_another_store_orders_while_the_first_order_is_not_committed(self, window):
        first = self._open_order("lyon")
        try:
            done = threading.Event()
            worker = threading.Thread(target=lambda: (order(as_="paris"), done.set()))
            worker.start()
            assert done.wait(20), "PARIS's order waited for LYON's transaction"
            worker.join()
        finally:
            first.commit()
            first.close()
        assert rows("select e.code, o.status from package_order o join entity e on e.id = o.entity_id "
                    "order by e.code") == [("LYON", "pending"), ("PARIS", "pending")]

    def test_the_same_store_ordering_twice_at_once_gets_one_order(self, window):
        first = self._open_order("lyon")
        refused: list[str] = []

        def second() -> None:
            try:
                order(as_="lyon")
            except CampflowError as exc:
                refused.append(str(exc))

        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive(), "the second order did not wait for the first"
        first.commit()
        first.close()
        worker.join(20)
        assert len(refused) == 1 and "already has order" in refused[0], refused
        assert scalar("select count(*) from package_order") == 1
