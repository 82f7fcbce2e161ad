"""Which offsets of the input topics may be committed.

An input message's offset may be committed once everything read from it has a durable outcome
(its click bundle or dead letter written, each of its events sent, on the retry topic, on the
DLQ or counted as skipped) and the same holds for every message before it on its partition. A
conversion waiting for its late click holds its partition's commits back (by at most
join_wait): a crash re-reads it, never skips it.
"""
from __future__ import annotations

from collections import deque

__all__ = ["Ticket", "Offsets"]


class Ticket:
    """One input message: how many of the things read from it still lack a durable outcome.
    It starts at one, the durable write of its poll; each event forwarded from it adds one."""

    __slots__ = ("tp", "offset", "open")

    def __init__(self, tp, offset: int) -> None:
        self.tp, self.offset, self.open = tp, offset, 1

    def hold(self) -> "Ticket":
        self.open += 1
        return self

    def settle(self) -> None:
        self.open -= 1


class Offsets:
    """Tickets per partition in offset order. `committable` gives, for each partition whose
    settled prefix grew, the offset to commit (the next one to read); it keeps giving it until
    `committed` says the broker took it (a commit refused while the broker is away is retried
    with the next one, even if that partition reads nothing more)."""

    def __init__(self) -> None:
        self._tickets: dict[object, deque[Ticket]] = {}
        self._due: dict[object, int] = {}  # settled further than the last commit the broker took

    def ticket(self, tp, offset: int) -> Ticket:
        t = Ticket(tp, offset)
        queue = self._tickets.get(tp)
        if queue is None:
            queue = self._tickets[tp] = deque()
        queue.append(t)
        return t

    def committable(self) -> dict:
        for tp, queue in self._tickets.items():
            last = None
            while queue and queue[0].open <= 0:
                last = queue.popleft()
            if last is not None:
                self._due[tp] = last.offset + 1
        return dict(self._due)

    def committed(self, offsets: dict) -> None:
        """The broker took these commits."""
        for tp, offset in offsets.items():
            if self._due.get(tp) == offset:
                del self._due[tp]

    def forget(self, tps) -> None:
        """Partitions revoked (or assigned afresh): their tickets no longer count; what is
        settled later for them is never committed here, their new owner re-reads it."""
        for tp in tps:
            self._tickets.pop(tp, None)
            self._due.pop(tp, None)

    def holding(self) -> int:
        """Messages not yet committable (a gauge of what a crash would re-read)."""
        return sum(map(len, self._tickets.values()))
