"""The replay's FIFO behaves like ``collections.deque`` for every operation it has."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.fifo import FIRST_SLOTS, Fifo

OPS = st.lists(st.tuples(st.sampled_from(["append", "popleft", "insert", "remove", "clear"]),
                         st.integers(-5, 50)), max_size=300)


@given(OPS)
def test_fifo_matches_deque(ops: list[tuple[str, int]]) -> None:
    fifo: Fifo[int] = Fifo()
    model: deque[int] = deque()
    for op, n in ops:
        if op == "append":
            fifo.append(n)
            model.append(n)
        elif op == "popleft" and model:
            assert fifo.popleft() == model.popleft()
        elif op == "insert":
            i = n % (len(model) + 1)
            fifo.insert(i, n)
            model.insert(i, n)
        elif op == "remove" and n in model:
            fifo.remove(n)
            model.remove(n)
        elif op == "clear" and n == 0:
            fifo.clear()
            model.clear()
        assert list(fifo) == list(model)
        assert len(fifo) == len(model) and bool(fifo) == bool(model)
        if model:
            assert fifo[0] == model[0] and fifo[-1] == model[-1]


def test_fifo_errors_like_deque() -> None:
    fifo: Fifo[int] = Fifo()
    with pytest.raises(IndexError):
        fifo.popleft()
    with pytest.raises(IndexError):
        fifo[0]
    fifo.append(1)
    with pytest.raises(ValueError):
        fifo.remove(2)


def test_a_fifo_keeps_no_item_it_handed_out_and_grows_to_its_peak_only() -> None:
    """Ten queued all along, 100,000 through: the slots stay at the first power of two
    above ten, and every slot outside the ten queued is empty."""
    fifo: Fifo[int] = Fifo()
    for i in range(10):
        fifo.append(i)
    for i in range(10, 100_010):
        fifo.append(i)
        assert fifo.popleft() == i - 10
    assert len(fifo._slots) == 2 * FIRST_SLOTS
    assert sorted(x for x in fifo._slots if x is not None) == list(fifo)
    assert list(fifo) == list(range(100_000, 100_010))
