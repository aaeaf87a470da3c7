"""The timeline's event and RPC tables give back exactly the rows added, whether they are
read while rows are still buffered or after they moved into the columns."""

from __future__ import annotations

from tracer.timeline import CLASSES, PENDING_ROWS, EventInfo, EventTable, RpcInfo, RpcTable


def test_event_rows_read_back_exactly_across_the_buffer() -> None:
    table = EventTable()
    n = 2 * PENDING_ROWS + 7
    expected = []
    for i in range(n):
        row = EventInfo(i % 200, f"EV{i % 13}", CLASSES[i % 4], 10**12 + i * 997, 40 + i % 300)
        table.add(row.vm, row.name, i % 4, row.arrival_ns, row.size)
        expected.append(row)
        if i % 1000 == 999:  # reads in between settle what is buffered so far
            assert len(table) == i + 1
            assert table.name(i) == row.name
    assert len(table) == n
    assert list(table) == expected


def test_rpc_rows_read_back_exactly_and_commands_set_on_a_buffered_row() -> None:
    table = RpcTable()
    n = PENDING_ROWS + 3
    for i in range(n):
        table.add(i % 7, f"virDomainOp{i % 5}", 5 * i, i % 3 == 0, ("query-status",) * (i % 2))
    table.set_commands(n - 1, ("stop", "cont"))  # its row is still buffered
    assert len(table) == n
    assert table[0] == RpcInfo(0, "virDomainOp0", 0, True, [])
    assert table[n - 2] == RpcInfo((n - 2) % 7, f"virDomainOp{(n - 2) % 5}", 5 * (n - 2),
                                   (n - 2) % 3 == 0, ["query-status"] * ((n - 2) % 2))
    assert table.command(n - 1, 1) == "cont"
    assert table.api(n - 1) == f"virDomainOp{(n - 1) % 5}"
