"""A FIFO for the model's queues (monitor inboxes, event queues, the RPC queue): a list
and the index of its head.

Compiled, :class:`collections.deque` is a foreign type: each append, popleft, index or
truth test on one is a method looked up by name, several per message. :class:`Fifo` is a
native class, so those are direct calls. Taken items stay in the list until it drains or
its taken half is cut off in one slice, so memory stays within twice the queue's length.
(The workload keeps a deque of ``(time, item)`` tuples: read from a generic class, a tuple
is checked element by element, which costs more than the deque's method lookups.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Generic, TypeVar

T = TypeVar("T")

#: Taken items kept before the list is compacted (if they are half of it or more).
COMPACT_AFTER: Final = 1024


class Fifo(Generic[T]):
    """First in, first out; ``fifo[i]`` is the ``i``-th from the head (negative: tail)."""

    __slots__ = ("_items", "_head")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def __getitem__(self, i: int) -> T:
        n = len(self._items) - self._head
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of a FIFO of {n}")
        return self._items[self._head + i]

    def __iter__(self) -> Iterator[T]:
        """Head to tail, lazily (a scan that stops early costs what it reads); the FIFO
        must not change meanwhile."""
        items = self._items
        for i in range(self._head, len(items)):
            yield items[i]

    def append(self, item: T) -> None:
        self._items.append(item)

    def popleft(self) -> T:
        items = self._items
        head = self._head
        if head >= len(items):
            raise IndexError("popleft from an empty FIFO")
        item = items[head]
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= COMPACT_AFTER and 2 * head >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    def insert(self, i: int, item: T) -> None:
        """Put ``item`` before the ``i``-th from the head."""
        self._items.insert(self._head + i, item)

    def remove(self, item: T) -> None:
        """Take out the first ``item`` (ValueError if there is none)."""
        del self._items[self._items.index(item, self._head)]

    def clear(self) -> None:
        self._items.clear()
        self._head = 0
