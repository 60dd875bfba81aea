"""The send window: messages claimed a few at a time, so a crash leaves few of unknown fate.

A step registers each batch of messages in the outbox as `pending` (campflow.store.outbox `register`)
and hands it to the window. A keeper thread then claims the messages (`sending`, committed)
only as the sender's connections can take them, and settles each one as its outcome comes
back, in the same transaction as the next claims (`OutboxWriter.advance`). No more than
`window` messages are ever claimed and not yet settled: a process killed mid-send leaves at
most that many of unknown fate (the sender's window: 4 per SMTP connection, the one on the wire
and those claimed ahead so that no connection waits for a commit; 500 for a file channel). The
rest of the batch is still `pending`, never handed to a server: a plain re-run sends it, and
nothing twice.

The step's thread builds the next batch meanwhile; `put` waits while a whole batch is still
unclaimed, so no more than two batches are held in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from campflow.delivery.senders import Delivery, Outgoing
from campflow.store.outbox import OutboxWriter

log = logging.getLogger(__name__)


class Pending(NamedTuple):
    """A registered message: its outbox id, the message, its Message-ID."""

    id: int
    outgoing: Outgoing
    message_id: str | None


class SendWindow:
    """Sends registered messages through a sender, at most `size` of them claimed and unsettled."""

    def __init__(self, outbox: OutboxWriter, sender: Any, keep: Callable[[Outgoing, Delivery], None] | None = None,
                 backlog: int = 500) -> None:
        self.outbox = outbox
        self.sender = sender
        self.size = sender.window
        self.keep = keep  # called with each settled message's outcome first (.eml copies)
        self.backlog = backlog  # unclaimed messages beyond which `put` waits
        self.events: queue.SimpleQueue[tuple] = queue.SimpleQueue()  # for the keeper
        self.ready: queue.SimpleQueue[tuple[int, Outgoing] | None] = queue.SimpleQueue()  # for the senders
        self.stop = threading.Event()
        self.room = threading.Condition()
        self.unclaimed = 0
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._keep, name="outbox-window", daemon=True)]
        self.threads += [threading.Thread(target=self._serve, name=f"send-{n}", daemon=True)
                         for n in range(sender.workers)]
        for thread in self.threads:
            thread.start()

    def put(self, messages: Sequence[Pending]) -> None:
        """Hand over registered messages; waits while a whole batch is still unclaimed."""
        with self.room:
            self.room.wait_for(lambda: self.unclaimed < self.backlog or not self.threads[0].is_alive())
            if self.error is not None:
                raise self.error
            self.unclaimed += len(messages)
        self.events.put(("messages", messages))

    def finish(self) -> None:
        """Wait until every message handed over is settled; raise the first error of the sending."""
        self._end()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """After an error elsewhere: claim nothing more, wait for the messages in hand, settle them."""
        if self.threads[0].is_alive():
            self.stop.set()
            self._end()
            if self.error is not None:  # the first error is the one raised
                log.warning("while stopping after an error: %s", self.error)

    def _end(self) -> None:
        self.events.put(("end",))
        for thread in self.threads:
            thread.join()

    def _serve(self) -> None:
        try:
            self.sender.serve(self.ready.get, lambda key, outcome: self.events.put(("done", key, outcome)),
                              self.stop)
            self.events.put(("quit", None))
        except BaseException as exc:
            self.events.put(("quit", exc))

    def _keep(self) -> None:
        """The keeper's loop: one transaction per turn settles what came back and claims as much."""
        waiting: deque[Pending] = deque()  # registered, not claimed yet
        window: dict[int, Pending] = {}  # claimed, not settled yet
        senders, ended = self.sender.workers, False
        try:
            while not (ended or senders == 0) or window or (waiting and not self.stop.is_set()):
                back: list[tuple[int, Delivery | None]] = []
                # nothing in flight yet messages to claim (some were not claimable): no event to wait for
                for event in self._next_events(block=bool(window) or not waiting or self.stop.is_set()):
                    if event[0] == "messages":
                        waiting.extend(event[1])
                    elif event[0] == "done":
                        back.append(event[1:])
                    elif event[0] == "quit":
                        senders -= 1
                        self._fail(event[1])
                    else:
                        ended = True
                if senders == 0:  # no connection left: what they never took was never attempted
                    back += self._untaken()
                if self.stop.is_set():
                    self._claimed(len(waiting))
                    waiting.clear()  # they stay `pending`
                taken = [waiting.popleft() for _ in range(min(self.size - len(window) + len(back), len(waiting)))]
                self._turn(window, back, taken)
                if senders == 0 and not window:
                    break
        except BaseException as exc:
            self._fail(exc)
        finally:
            for _ in range(self.sender.workers):
                self.ready.put(None)
            with self.room:
                self.room.notify_all()

    def _next_events(self, block: bool) -> list[tuple]:
        events = [self.events.get()] if block else []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def _turn(self, window: dict[int, Pending], back: list[tuple[int, Delivery | None]],
              taken: list[Pending]) -> None:
        """Settle what came back and claim `taken`, in one transaction; hand the claimed to the senders."""
        settled = [window.pop(key) for key, _ in back]
        outcomes = [outcome for _, outcome in back]
        if self.keep is not None:
            for message, outcome in zip(settled, outcomes):
                if outcome is not None:
                    self.keep(message.outgoing, outcome)
        settlement = self.outbox.settlement([m.id for m in settled], outcomes, [m.message_id for m in settled])
        if not taken and settlement.params is None:
            return
        claimed = self.outbox.advance(settlement, [m.id for m in taken])
        self._claimed(len(taken))
        for message in taken:
            if message.id in claimed:
                window[message.id] = message
                self.ready.put((message.id, message.outgoing))

    def _untaken(self) -> list[tuple[int, None]]:
        back = []
        while True:
            try:
                item = self.ready.get_nowait()
            except queue.Empty:
                return back
            if item is not None:
                back.append((item[0], None))

    def _claimed(self, count: int) -> None:
        with self.room:
            self.unclaimed -= count
            self.room.notify_all()

    def _fail(self, error: BaseException | None) -> None:
        if error is None:
            return
        self.stop.set()
        if self.error is None:
            self.error = error
