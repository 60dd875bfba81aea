"""`campflow phoning`: call a phoning step's parties one by one, or write its call sheet.

The session reads one line per prompt (a terminal or piped input alike); `q` or the end of
the input stops it at once, and nothing is saved for the call on screen: a call's answers
and status are saved together, in one transaction, when its outcome is chosen.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from campflow.cli.common import console, escape
from campflow.store import db
from campflow.store.phoning import (
    CALLBACK,
    NO_ANSWER,
    Answered,
    BadAnswer,
    CallClaims,
    CallQuestion,
    CallTaken,
    Card,
    PhoningStep,
    count_calls,
    find_phoning_step,
    next_call,
    parse_answer,
    parse_callback_at,
)
from campflow.store.phoning_calls import Call, missing_answers, outcome_statuses, record_call, shown_callback

SKIP = "skip"
OTHER = "other"
OUTCOMES = (("1", "ok_continue", "OK, continue"), ("2", "not_processed_continue", "not processed, continue"),
            ("3", CALLBACK, "call back at…"), ("4", NO_ANSWER, "no answer"), ("5", SKIP, "skip"),
            ("6", OTHER, "other status…"))
TO_OUTCOME = "!"  # typed at a question: go to the outcome menu (nobody to answer them)


def register(app: typer.Typer) -> None:
    app.command("phoning")(phoning)


def phoning(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    step: Annotated[str, typer.Argument(help="A phoning or phoning_contact step of the operation.")],
    operator: Annotated[str | None, typer.Option("--operator", help="Who calls; kept with each status "
                                                 "as its reason.")] = None,
    sheet: Annotated[Path | None, typer.Option("--sheet", help="Write the step's call sheet (.xlsx) to "
                                               "this file instead of calling.", dir_okay=False)] = None,
) -> None:
    """Call the parties of a phoning step one by one, as a phoning screen: the party's card, the
    questionnaire, then the outcome (OK / not processed / call back at… / no answer / skip).
    Due callbacks come first, then the parties never called; two operators never get the same
    party. Type q (or end the input) to stop; the party on screen is left as it was.

    Example: campflow phoning PROSPECTION-LYON-2026 APPEL --operator JDUPONT

    Example: campflow phoning PROSPECTION-LYON-2026 APPEL --sheet appels.xlsx
    """
    with db.session() as session:
        target = find_phoning_step(session, operation, step)
        if sheet is not None:
            from tasks.kinds.phoning import write_call_sheet

            written = write_call_sheet(session, target, sheet)
    if sheet is not None:
        console.print(f"call sheet of {written.describe()}: {escape(written.path)}")
        console.print(f"fill it, then: campflow answers import {target.operation_code} {target.step_code} "
                      f"{escape(written.path.name)}")
        return
    CallSession(target, operator).run()


class Quit(Exception):
    """The operator typed q, or the input ended."""


def ask(prompt: str) -> str:
    """One line from the operator; `q`, the end of the input and Ctrl-C quit."""
    try:
        typed = console.input(prompt)
    except (EOFError, KeyboardInterrupt):
        console.print()
        raise Quit from None
    if not sys.stdin.isatty():
        console.print(escape(typed), highlight=False)  # a piped session's output reads as a transcript
    typed = typed.strip()
    if typed.lower() == "q":
        raise Quit
    return typed


@dataclass
class CallSession:
    """One operator's calls in one step, until none is left or the operator quits."""

    step: PhoningStep
    operator: str | None
    saved: int = 0
    passed: list[tuple[int, int | None]] = field(default_factory=list)  # skipped or unanswered here

    def run(self) -> None:
        with db.session() as session:
            counts = count_calls(session, self.step)
        console.print(f"[bold]Phoning {escape(self.step.name)}[/] — {escape(self.step.label)}"
                      + (f" · operator {escape(self.operator)}" if self.operator else ""))
        console.print(f"{counts.due} to call now ({counts.callbacks_due} callbacks due), "
                      f"{counts.later} callbacks later · Enter keeps a shown answer or outcome, "
                      f"{TO_OUTCOME} goes to the outcome, q quits")
        with CallClaims(db.engine()) as claims:
            while True:
                with db.session() as session:
                    card = next_call(session, self.step, claims, self.passed)
                if card is None:
                    self._finish()
                    return
                try:
                    self.call(card)
                except Quit:
                    console.print(f"stopped: nothing saved for {escape(card.who)}; "
                                  f"{self.saved} call(s) saved in this session")
                    return
                finally:
                    claims.release(self.step.step_id, *card.call)  # after the call's commit

    def _finish(self) -> None:
        with db.session() as session:
            counts = count_calls(session, self.step)
        console.print(f"no party left to call in {escape(self.step.name)} ({self.saved} call(s) saved in this session)")
        if counts.due:
            console.print(f"{counts.due} skipped, unanswered or on another operator's screen still to call")
        if counts.later:
            console.print(f"{counts.later} callbacks later, the next at "
                          f"{shown_callback(self.step, counts.next_callback)} ({self.step.timezone})")

    def call(self, card: Card) -> None:
        """Show the card, ask the questions and the outcome, save them together."""
        show_card(self.step, card)
        answers = ask_questions(self.step.questions, card)
        while True:
            outcome = ask_outcome()
            if outcome == SKIP:
                self.passed.append(card.call)
                console.print(f"{escape(card.who)} skipped")
                return
            if outcome == OTHER and (outcome := ask_other_status(self.step)) is None:
                continue
            callback = ask_callback(self.step) if outcome == CALLBACK else None
            if outcome == CALLBACK and callback is None:
                continue
            missing = missing_answers(self.step, card, answers) if outcome == "ok_continue" else []
            if missing:
                console.print(f"[yellow]OK needs the required answers: {', '.join(q.code for q in missing)}[/]")
                answers |= ask_questions(tuple(missing), card)
                continue
            if self.save(card, Call(answers, outcome, callback, self.operator)):
                if outcome == NO_ANSWER:
                    self.passed.append(card.call)  # not offered again in this session
            return

    def save(self, card: Card, call: Call) -> bool:
        try:
            with db.session() as session:
                recorded = record_call(session, self.step, card, call)
        except CallTaken as taken:
            console.print(f"[yellow]{escape(taken)}[/]")
            return False
        self.saved += 1
        detail = f"{recorded.answers_written} answer(s)"
        if recorded.status == "to_process":
            detail += f", attempts {recorded.attempts}"
        if call.callback_at is not None:
            detail += f", call back {shown_callback(self.step, recorded.callback_at)} ({self.step.timezone})"
        console.print(f"[green]{escape(recorded.who)} saved: {recorded.status}[/] · {detail}")
        return True


# -- the screen ---------------------------------------------------------------------------


def show_card(step: PhoningStep, card: Card) -> None:
    """The party's card: how to reach it, its contacts, its attempts and previous answers."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Phone", Text(" · ".join(filter(None, (card.phone and f"tel {card.phone}",
                                                       card.fax and f"fax {card.fax}", card.email))) or "—"))
    grid.add_row("Address", Text(", ".join(filter(None, (card.address, " ".join(
        filter(None, (card.postal_code, card.city)))))) or "—"))
    calls = f"{card.attempts} attempt(s) before" if card.attempts else "first call"
    if card.callback_at is not None:
        calls += f" · callback due {shown_callback(step, card.callback_at)} ({step.timezone})"
    grid.add_row("Calls", Text(calls))
    if card.contact is not None:
        grid.add_row("Ask for", Text(_contact_text(card.contact), style="bold"))
    contacts = Table(box=None, padding=(0, 1), show_header=False)
    for contact in card.contacts:
        mark = "▶" if card.contact is not None and contact.id == card.contact.id else " "
        contacts.add_row(mark, Text(contact.code), Text(contact.name or "—"), Text(contact.function or ""),
                         Text(contact.phone or ""), Text(contact.email or ""))
    parts: list = [grid]
    if card.contacts:
        parts += [Text("Contacts", style="bold"), contacts]
    answered = [(q, card.answers[q.id]) for q in step.questions if q.id in card.answers]
    if answered:
        parts.append(Text("Previous answers", style="bold"))
        parts += [Text(f"  {q.code}: {a.shown(q)}") for q, a in answered]
    title = Text(f"{card.party_code} · {card.name} ({card.kind})", style="bold cyan")
    console.print(Panel(Group(*parts), title=title, title_align="left"))


def _contact_text(contact) -> str:
    return " · ".join(filter(None, (f"{contact.code} {contact.name}".strip(), contact.function, contact.phone)))


def ask_questions(questions: tuple[CallQuestion, ...], card: Card) -> dict[int, Answered]:
    """Ask each question; Enter keeps the previous answer, `!` stops asking."""
    answers: dict[int, Answered] = {}
    for question in questions:
        answer = ask_question(question, card.answers.get(question.id))
        if answer is TO_OUTCOME:
            break
        if isinstance(answer, Answered):
            answers[question.id] = answer
    return answers


def ask_question(question: CallQuestion, previous: Answered | None) -> Answered | str | None:
    """One question until it gets a fitting answer; None keeps what was there."""
    hint = {"bool": "oui/non", "number": "a number", "date": "a date, 12/03/2026",
            "multi_choice": "one or more, e.g. 1,3"}.get(question.type, "")
    console.print(f"[bold]{escape(question.code)}[/] {escape(question.label)}"
                  + (" [red](required)[/]" if question.required else "") + (f" [dim]({hint})[/]" if hint else ""))
    if question.choices and question.type in ("choice", "multi_choice"):
        console.print("  " + "   ".join(f"{n} {escape(c)}" for n, c in enumerate(question.choices, start=1)))
    shown = f" [{previous.shown(question)}]" if previous is not None else ""
    while True:
        typed = ask(f"  {escape(question.code)}{escape(shown)} > ")
        if typed == TO_OUTCOME:
            return TO_OUTCOME
        if not typed:
            if previous is not None or not question.required:
                return None
            console.print(f"  [yellow]{escape(question.code)} is required; answer it, "
                          f"or {TO_OUTCOME} to go to the outcome[/]")
            continue
        try:
            return parse_answer(question, typed)
        except BadAnswer as bad:
            console.print(f"  [red]{escape(bad)}[/]")


def ask_outcome() -> str:
    """The call's outcome; Enter takes the default, OK continue ("OK on continue" in Divalto)."""
    menu = " · ".join(f"{key} {label}" for key, _, label in OUTCOMES)
    default_key, _, default_label = OUTCOMES[0]
    while True:
        console.print(f"[bold]Outcome[/]: {escape(menu)} · q quit")
        typed = ask(f"  outcome {escape(f'[{default_key} {default_label}]')} > ") or default_key
        chosen = next((value for key, value, _ in OUTCOMES if typed == key), None)
        if chosen is not None:
            return chosen
        console.print(f"  [red]{escape(repr(typed))} is not an outcome; type 1 to 6, or q[/]")


def ask_other_status(step: PhoningStep) -> str | None:
    """A final status other than the two of the menu (failed, excluded, a custom one)."""
    statuses = list(outcome_statuses(step))
    console.print("  " + "   ".join(f"{n} {escape(s)}" for n, s in enumerate(statuses, start=1)))
    while True:
        typed = ask("  status (Enter: back) > ")
        if not typed:
            return None
        found = next((s for n, s in enumerate(statuses, start=1) if typed in (str(n), s)), None)
        if found is not None:
            return found
        console.print(f"  [red]{escape(repr(typed))} is not one of them[/]")


def ask_callback(step: PhoningStep) -> dt.datetime | None:
    """A date and time to come, read in the operation's time zone; Enter goes back."""
    while True:
        typed = ask(f"  call back at (12/03/2026 14:30, {escape(step.timezone)}; Enter: back) > ")
        if not typed:
            return None
        try:
            with db.session() as session:
                return parse_callback_at(session, step, typed)
        except BadAnswer as bad:
            console.print(f"  [red]{escape(bad)}[/]")
