"""A FIFO for the model's queues (monitor inboxes, event queues, the RPC queue, the
workload's items): a ring of slots in a list.

Compiled, :class:`collections.deque` is a foreign type: each append, popleft, index or
truth test on one is a method looked up by name, several per message. :class:`Fifo` is a
native class, so those are direct calls. Its list keeps its length (a power of two, grown
by doubling when full), so a queue that drains and fills again, as a monitor's inbox does
with every message, never frees and reallocates it; a taken item's slot is cleared, so the
FIFO holds no item it handed out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Generic, TypeVar, cast

T = TypeVar("T")

#: Slots of a new FIFO.
FIRST_SLOTS: Final = 8


class Fifo(Generic[T]):
    """First in, first out; ``fifo[i]`` is the ``i``-th from the head (negative: tail)."""

    __slots__ = ("_slots", "_head", "_count", "_mask")

    def __init__(self) -> None:
        self._slots: list[T | None] = [None] * FIRST_SLOTS
        self._head = 0
        self._count = 0
        self._mask = FIRST_SLOTS - 1

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __getitem__(self, i: int) -> T:
        n = self._count
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of a FIFO of {n}")
        return cast(T, self._slots[(self._head + i) & self._mask])

    def __iter__(self) -> Iterator[T]:
        """Head to tail, lazily (a scan that stops early costs what it reads); the FIFO
        must not change meanwhile."""
        slots, head, mask = self._slots, self._head, self._mask
        for i in range(self._count):
            yield cast(T, slots[(head + i) & mask])

    def append(self, item: T) -> None:
        if self._count > self._mask:
            self._grow()
        self._slots[(self._head + self._count) & self._mask] = item
        self._count += 1

    def popleft(self) -> T:
        if not self._count:
            raise IndexError("popleft from an empty FIFO")
        slots = self._slots
        head = self._head
        item = slots[head]
        slots[head] = None
        self._head = (head + 1) & self._mask
        self._count -= 1
        return cast(T, item)

    def insert(self, i: int, item: T) -> None:
        """Put ``item`` before the ``i``-th from the head (0 ≤ i ≤ len); the later ones move
        down a slot."""
        self.append(item)
        slots, head, mask = self._slots, self._head, self._mask
        for j in range(self._count - 1, i, -1):
            slots[(head + j) & mask] = slots[(head + j - 1) & mask]
        slots[(head + i) & mask] = item

    def remove(self, item: T) -> None:
        """Take out the first ``item`` (ValueError if there is none); the later ones move
        up a slot."""
        slots, head, mask, n = self._slots, self._head, self._mask, self._count
        for i in range(n):
            if slots[(head + i) & mask] == item:
                for j in range(i, n - 1):
                    slots[(head + j) & mask] = slots[(head + j + 1) & mask]
                slots[(head + n - 1) & mask] = None
                self._count = n - 1
                return
        raise ValueError("Fifo.remove(x): x not in FIFO")

    def clear(self) -> None:
        self._slots = [None] * FIRST_SLOTS
        self._head = 0
        self._count = 0
        self._mask = FIRST_SLOTS - 1

    def _grow(self) -> None:
        """Twice the slots, the items from the first on (full: the head is anywhere)."""
        slots, head = self._slots, self._head
        self._slots = slots[head:] + slots[:head] + [None] * len(slots)
        self._head = 0
        self._mask = 2 * len(slots) - 1
