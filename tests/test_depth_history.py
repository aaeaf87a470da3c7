"""A queue's depth history (what the unbounded-growth finding reads) against a brute-force
model of its definition: buckets from the first change, doubling in width until at most
1024 cover the run; a bucket's value is the largest depth the queue had in it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from replay.engine import Engine
from replay.queue import BUCKETS, STORED, Gauge

FIRST_WIDTH = 16_000_000

CHANGES = st.lists(st.tuples(st.sampled_from([0, 1_000, 3_000_000, 40_000_000, 2_000_000_000,
                                              90_000_000_000]),
                             st.sampled_from([1, 1, 3, -1, -2])), min_size=1, max_size=400)


def model(changes: list[tuple[int, int]], width: int, start: int, end: int,
          windows: int) -> list[int]:
    """Window maxima computed from every change, bucket by bucket, up to the last change or
    to ``end``, whichever is later (a queue keeps its depth after its last change)."""
    t0 = changes[0][0]
    values: dict[int, int] = {}
    depth = None
    i = 0
    for b in range(max(changes[-1][0] - t0, end - t0) // width + 1):
        value = depth  # the depth the bucket began with (none before the first change)
        while i < len(changes) and changes[i][0] < t0 + (b + 1) * width:
            depth = changes[i][1]
            value = depth if value is None else max(value, depth)
            i += 1
        assert value is not None
        values[b] = value
    out = [0] * windows
    for b, value in values.items():
        w = min(windows - 1, max(0, (t0 + b * width - start) * windows // (end - start)))
        out[w] = max(out[w], value)
    return out


@settings(max_examples=300)
@given(CHANGES, st.integers(-10**9, 10**9), st.integers(1, 10**11), st.sampled_from([1, 3, 10]))
def test_window_maxima_match_the_definition(steps: list[tuple[int, int]], start_shift: int,
                                            length: int, windows: int) -> None:
    engine = Engine()
    gauge = Gauge(engine, 0, -1)
    changes = []
    t = 5_000_000_000
    for gap, delta in steps:
        t += gap
        engine.now = t
        for _ in range(delta if delta > 0 else min(-delta, gauge.depth)):
            if delta > 0:
                gauge.add(10)
            else:
                gauge.sub(10)
            changes.append((t, gauge.depth))
    if not changes:
        return
    history = gauge.history
    span = changes[-1][0] - changes[0][0]
    assert span // history.width < BUCKETS
    assert history.width == FIRST_WIDTH or span // (history.width // 2) >= BUCKETS
    start = changes[0][0] + start_shift
    end = max(start + 1, t + length - 5 * 10**10)
    assert history.window_maxima(start, end, windows) == model(changes, history.width, start,
                                                               end, windows)


def test_a_queue_that_stays_full_keeps_its_depth_to_the_end() -> None:
    engine = Engine()
    gauge = Gauge(engine, 0, -1)
    for i in range(640):  # fills over the first 0.64 s of a 1.6 s session, never drains
        engine.now = i * 1_000_000
        gauge.add(1)
    assert gauge.history.window_maxima(0, 1_600_000_000) == [
        160, 320, 480, 640, 640, 640, 640, 640, 640, 640]


def test_memory_stays_bounded() -> None:
    engine = Engine()
    gauge = Gauge(engine, 0, -1)
    for i in range(200_000):
        engine.now = i * 7_000_000
        gauge.add(1)
    history = gauge.history
    assert len(history.stored) // STORED < BUCKETS
    # a queue that only grows: every tenth of the run has a larger maximum than the last
    w = history.window_maxima(0, engine.now)
    assert w == sorted(w) and w[-1] == 200_000 and 4 * w[0] < w[-1]
