"""The proxy recorder: byte-exact relaying and recording, against real QEMU and a scripted peer."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.proxy import CHUNK, HIGH_WATER, BraceFramer, Proxy, Recorder
from tracer.session import Header, Record, SessionWriter, read_session, validate, wire_bytes

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(
    QEMU is None, reason="qemu-system-x86_64 (Debian qemu-system-x86) not installed")

#: ``qmpreplay`` with its ``record`` commands (and only those) registered.
RECORD_CLI = ("from replay.cli import app; from tracer import cli_record; "
              "cli_record.register(app); app()")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def wait_for_path(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


@pytest.fixture
def qemu_socket(tmp_path: Path) -> Iterator[Path]:
    """A real QEMU (``-machine none``) with its QMP socket, stopped after the test."""
    sock = tmp_path / "qemu.qmp"
    proc = subprocess.Popen(
        [str(QEMU), "-machine", "none", "-nodefaults", "-display", "none",
         "-vnc", f"unix:{tmp_path / 'vnc.sock'},password=on",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_path(sock)
        yield sock
    finally:
        proc.kill()
        proc.wait()


def session_records(path: Path) -> list[Record]:
    _, records = read_session(path)
    return list(records)


def joined(records: list[Record], direction: str) -> bytes:
    return b"".join(wire_bytes(r) for r in records if r["dir"] == direction)


async def proxied(upstream: Path, tmp: Path, client: Callable[[Path], Awaitable[Any]], *,
                  redact: bool = True, proxy_seen: list[Proxy] | None = None) -> tuple[Any, Path]:
    """Run ``client`` against a proxy in front of ``upstream``; return its result, the session."""
    session = tmp / "s.qmp.jsonl"
    listen = tmp / "proxy.sock"
    proxy = Proxy(upstream, listen, "vm0", force=True)
    proxy.bind()
    with SessionWriter(session, Header(source="proxy", clock="monotonic", vms=["vm0"],
                                       redacted=redact)) as writer:
        await proxy.start(Recorder(writer, redact=redact))
        if proxy_seen is not None:
            proxy_seen.append(proxy)
        try:
            result = await client(listen)
        finally:
            await proxy.close()
    return result, session


async def talk(listen: Path, chunks: list[bytes], pause: float = 0.0) -> bytes:
    """Send ``chunks`` one write each, then read everything until the proxy closes."""
    reader, writer = await asyncio.open_unix_connection(str(listen))
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
    received = await reader.read()
    writer.close()
    return received


def check_byte_exact(session: Path, sent: bytes, received: bytes) -> list[Record]:
    good, problems = validate(session)
    assert problems == []
    records = session_records(session)
    assert good == len(records)
    assert joined(records, "recv") == received
    assert joined(records, "send") == sent
    return records


@needs_qemu
def test_real_qemu_conversation_is_relayed_and_recorded_byte_for_byte(
        qemu_socket: Path, tmp_path: Path) -> None:
    split = b'{"execute": "query-status", "id": {"a": [1, "x}", null]}}\r\n'
    chunks = [
        b'{"execute": "qmp_capabilities"}',                       # no newline at all
        b'{"execute":"query-status","id":1}\n{"execute":"query-name","id":2}\n',
        *[split[i:i + 3] for i in range(0, len(split), 3)],        # one message, many writes
        b"{'execute': 'query-status', 'id': 'single-quoted'}\n",
        b'{"execute": "query-status", "id": "brace \\" } in string"}\n',
        b"not json at all\n",
        b'{"execute": "no-such-command", "id": 3}\n',
        b'{"execute": "quit"}\n',
    ]
    received, session = asyncio.run(proxied(qemu_socket, tmp_path,
                                            lambda p: talk(p, chunks, pause=0.01)))
    records = check_byte_exact(session, b"".join(chunks), received)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "connect" and kinds[-2:] == ["eof", "disconnect"]
    assert kinds.count("greeting") == 1
    sends = [r for r in records if r["dir"] == "send" and r["kind"] != "connect"]
    assert [r.get("name") for r in sends if r["kind"] == "command"] == [
        "qmp_capabilities", "query-status", "query-name", "query-status", "query-status",
        "query-status", "no-such-command", "quit"]
    assert [r["id"] for r in sends if "id" in r] == [1, 2, {"a": [1, "x}", None]},
                                                     "single-quoted", 'brace " } in string', 3]
    assert any(r["kind"] == "unparsed" and r["wire"] == "not json at all\n" for r in sends)
    assert any(r["kind"] == "error" for r in records)
    assert any(r.get("name") == "SHUTDOWN" for r in records)
    assert all(r.get("conn") == 0 for r in records)
    times = [r["t_ns"] for r in records]
    assert times == sorted(times)


@needs_qemu
def test_set_password_is_redacted_in_the_file_but_reaches_qemu(
        qemu_socket: Path, tmp_path: Path) -> None:
    secret = "s3cret-pw"
    command = ('{"execute": "set_password", "arguments": {"protocol": "vnc", '
               f'"password": "{secret}"}}, "id": "pw"}}\r\n').encode()
    chunks = [b'{"execute": "qmp_capabilities"}\n', command, b'{"execute": "quit"}\n']
    received, session = asyncio.run(proxied(qemu_socket, tmp_path, lambda p: talk(p, chunks)))
    assert b'{"return": {}, "id": "pw"}\r\n' in received  # QEMU got the real password
    assert secret.encode() not in session.read_bytes()
    stored = [r for r in session_records(session) if r.get("name") == "set_password"]
    assert len(stored) == 1 and stored[0]["redacted"] is True
    assert orjson.loads(stored[0]["wire"])["arguments"]["password"] == "<redacted>"
    assert stored[0]["wire"].endswith("\r\n")


def qmpreplay(*args: str) -> list[str]:
    return [sys.executable, "-c", RECORD_CLI, *args]


@needs_qemu
def test_cli_sigterm_leaves_valid_session_and_removes_its_0600_socket(
        qemu_socket: Path, tmp_path: Path) -> None:
    listen, session = tmp_path / "listen.sock", tmp_path / "cli.qmp.jsonl"
    proc = subprocess.Popen(qmpreplay("record", "proxy", "--upstream", str(qemu_socket),
                                      "--listen", str(listen), "-o", str(session)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_path(listen)
        assert stat.S_IMODE(os.stat(listen).st_mode) == 0o600
        chunks = [b'{"execute": "qmp_capabilities"}\n', b'{"execute": "query-status", "id": 7}\n']
        received = asyncio.run(talk_then_hold(listen, chunks, replies=2))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "recorded" in out and "from 1 VM" in out
    assert not listen.exists()
    header, _ = read_session(session)
    assert header.vms == ["qemu"] and header.source == "proxy" and header.clock == "monotonic"
    records = check_byte_exact(session, b"".join(chunks), received)
    assert records[-1]["kind"] == "disconnect"


async def talk_then_hold(listen: Path, chunks: list[bytes], replies: int) -> bytes:
    """Send ``chunks``, read the greeting and ``replies`` lines, and stay connected."""
    reader, writer = await asyncio.open_unix_connection(str(listen))
    received = await reader.readline()
    for chunk in chunks:
        writer.write(chunk)
    for _ in range(replies):
        received += await reader.readline()
    writer.close()
    await asyncio.sleep(0.2)  # let the proxy record the disconnect before the signal
    return received


@needs_qemu
def test_cli_kill9_leaves_at_most_a_truncated_last_line(qemu_socket: Path, tmp_path: Path) -> None:
    listen, session = tmp_path / "listen.sock", tmp_path / "k.qmp.jsonl"
    proc = subprocess.Popen(qmpreplay("record", "proxy", "--upstream", str(qemu_socket),
                                      "--listen", str(listen), "-o", str(session), "--vm", "k"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_path(listen)
        chunks = [b'{"execute": "qmp_capabilities"}\n'] + [
            b'{"execute": "query-status", "id": %d}\n' % i for i in range(20)]
        asyncio.run(talk_then_hold(listen, chunks, replies=21))
    finally:
        proc.kill()
        proc.wait()
    good, problems = validate(session)
    assert good >= 43  # connect + greeting + 21 commands + 21 replies
    lines = session.read_bytes().count(b"\n")
    assert all(p.message == "truncated last line" and p.line == lines + 1 for p in problems)


def test_cli_refuses_existing_listen_path_without_force(tmp_path: Path) -> None:
    upstream = tmp_path / "up.sock"
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(upstream))
    listen = tmp_path / "taken"
    listen.write_text("keep me")
    done = subprocess.run(qmpreplay("record", "proxy", "--upstream", str(upstream), "--listen",
                                    str(listen), "-o", str(tmp_path / "x.jsonl")),
                          capture_output=True, text=True, timeout=60)
    sock.close()
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "--force" in done.stderr and "Traceback" not in done.stderr
    assert listen.read_text() == "keep me"
    missing = subprocess.run(qmpreplay("record", "proxy", "--upstream", str(tmp_path / "none"),
                                       "--listen", str(tmp_path / "l"), "-o", str(tmp_path / "y")),
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: upstream socket")


# --- a scripted QMP peer on a real unix socket -------------------------------------------

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, '
            b'"capabilities": []}}\r\n')


async def with_peer(tmp: Path, handler: Handler,
                    body: Callable[[Path], Awaitable[Any]]) -> Any:
    """Serve ``handler`` as the upstream QMP peer while ``body`` runs."""
    upstream = tmp / "peer.sock"
    server = await asyncio.start_unix_server(handler, path=str(upstream))
    try:
        return await body(upstream)
    finally:
        server.close()


def scripted(lines: list[bytes], *, close: bool = True) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for line in lines:
            writer.write(line)
            await writer.drain()
        if close:
            writer.close()
    return handler


def test_64_mib_line_is_relayed_whole_and_recorded_as_one_message(tmp_path: Path) -> None:
    big = b'{"return": "' + b"x" * (64 * 1024 * 1024 - 16) + b'", "id": 1}\r\n'
    lines = [GREETING, big, b'{"return": {}}\r\n']

    async def body(upstream: Path) -> tuple[bytes, Path]:
        return await proxied(upstream, tmp_path, lambda p: talk(p, []))

    received, session = asyncio.run(with_peer(tmp_path, scripted(lines), body))
    assert received == b"".join(lines)
    records = check_byte_exact(session, b"", received)
    assert [r["kind"] for r in records] == ["connect", "greeting", "reply", "reply", "eof",
                                            "disconnect"]
    assert len(records[2]["wire"]) == len(big) and records[2]["id"] == 1


def test_malformed_lines_are_recorded_as_unparsed(tmp_path: Path) -> None:
    lines = [GREETING, b"garbage\r\n", b'{"return": \r\n', b"\xff\xfe binary\r\n",
             b'["not", "an", "object"]\r\n', b'{"event": "STOP", "timestamp": {}}\r\n']

    async def body(upstream: Path) -> tuple[bytes, Path]:
        return await proxied(upstream, tmp_path, lambda p: talk(p, []))

    received, session = asyncio.run(with_peer(tmp_path, scripted(lines), body))
    records = check_byte_exact(session, b"", received)
    recv = [r for r in records if r["dir"] == "recv" and r["kind"] != "eof"]
    assert [r["kind"] for r in recv] == ["greeting", "unparsed", "unparsed", "unparsed",
                                         "unparsed", "event"]
    assert "wire_b64" in recv[3]


def test_event_flood_is_relayed_completely(tmp_path: Path) -> None:
    flood = [b'{"event": "RTC_CHANGE", "data": {"offset": %d}, "timestamp": '
             b'{"seconds": 1, "microseconds": 2}}\r\n' % i for i in range(20000)]

    async def body(upstream: Path) -> tuple[bytes, Path]:
        return await proxied(upstream, tmp_path, lambda p: talk(p, []))

    received, session = asyncio.run(with_peer(tmp_path, scripted([GREETING, *flood]), body))
    records = check_byte_exact(session, b"", received)
    events = [r for r in records if r["kind"] == "event"]
    assert len(events) == 20000
    assert [orjson.loads(r["wire"])["data"]["offset"] for r in events[:3]] == [0, 1, 2]


def test_upstream_crash_mid_line_records_the_fragment_and_eof(tmp_path: Path) -> None:
    lines = [GREETING, b'{"return": {}, "id": 1}\r\n{"event": "STO']

    async def body(upstream: Path) -> tuple[bytes, Path]:
        return await proxied(upstream, tmp_path, lambda p: talk(p, [b'{"execute": "x", "id": 1}']))

    received, session = asyncio.run(with_peer(tmp_path, scripted(lines), body))
    assert received == b"".join(lines)
    records = check_byte_exact(session, b'{"execute": "x", "id": 1}', received)
    assert [r["kind"] for r in records if r["dir"] == "recv"] == ["greeting", "reply",
                                                                   "unparsed", "eof"]
    assert records[-1]["kind"] == "disconnect"


def test_client_that_stops_reading_makes_the_proxy_stop_reading(tmp_path: Path) -> None:
    event = b'{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\r\n' * 64
    cap = 64 * 1024 * 1024
    state = {"written": 0, "peak": 0, "at_block": -1}
    proxies: list[Proxy] = []

    async def main() -> tuple[bytes, Path]:
        blocked = asyncio.Event()

        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(GREETING)
            while state["written"] < cap:
                writer.write(event)
                state["written"] += len(event)
                try:
                    await asyncio.wait_for(writer.drain(), timeout=1.0)
                except TimeoutError:
                    break  # the peer's writes block: the proxy stopped reading
                state["peak"] = max(state["peak"], proxies[0].buffered_bytes())
            blocked.set()
            writer.close()

        async def idle_client(listen: Path) -> bytes:
            reader, writer = await asyncio.open_unix_connection(str(listen))
            await blocked.wait()  # never read while the peer floods
            state["at_block"] = proxies[0].buffered_bytes()
            got = await reader.read()
            writer.close()
            return got

        return await with_peer(tmp_path, flood, lambda up: proxied(
            up, tmp_path, idle_client, proxy_seen=proxies))

    received, session = asyncio.run(main())
    assert state["written"] < cap
    assert 0 <= state["at_block"] <= HIGH_WATER + CHUNK
    assert state["peak"] <= HIGH_WATER + CHUNK
    assert received == GREETING + event * (state["written"] // len(event))
    check_byte_exact(session, b"", received)


# --- chunking property ------------------------------------------------------------------

MESSAGES = st.one_of(
    st.builds(lambda n: b'{"return": {}, "id": %d}\r\n' % n, st.integers(0, 10**6)),
    st.builds(lambda s: orjson.dumps({"event": "X", "data": {"s": s}}) + b"\r\n",
              st.text(max_size=40)),
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"") + b"\r\n"),
    st.just(b"{'single': 'quoted'}\r\n"),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(MESSAGES, min_size=1, max_size=30),
       cuts=st.lists(st.integers(1, 50), max_size=40),
       tail=st.binary(max_size=10).map(lambda b: b.replace(b"\n", b"")))
def test_any_chunking_of_server_messages_is_relayed_and_recorded_exactly(
        tmp_path: Path, messages: list[bytes], cuts: list[int], tail: bytes) -> None:
    stream = b"".join(messages) + tail
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(stream[pos:pos + cut])
        pos += cut
    chunks.append(stream[pos:])
    chunks = [c for c in chunks if c]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()

    async def body(upstream: Path) -> tuple[bytes, Path]:
        return await proxied(upstream, tmp_path, lambda p: talk(p, []))

    received, session = asyncio.run(with_peer(tmp_path, handler, body))
    records = check_byte_exact(session, b"", received)
    assert received == stream
    recv = [wire_bytes(r) for r in records if r["dir"] == "recv" and r["kind"] != "eof"]
    assert recv == messages + ([tail] if tail else [])


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.sampled_from([
    b'{"execute": "a", "id": "x\\"}"}', b"{'execute': 'b', 'id': '}\\''}\n",
    b' {"execute": "c"}\r\n',
    b"[1, [2]]", b"bare words\n", b'{"k": ["{", "[", {"n": "]"}]}']), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 9), max_size=30))
def test_client_messages_are_framed_the_same_whatever_the_chunking(
        messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(messages)
    framer, out, pos = BraceFramer(), [], 0
    for cut in cuts:
        out += framer.feed(stream[pos:pos + cut])
        pos += cut
    out += framer.feed(stream[pos:])
    out.append(framer.rest())
    assert b"".join(out) == stream
    assert [m.strip() for m in out if m.strip()] == [m.strip() for m in messages]
