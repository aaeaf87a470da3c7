"""The proxy recorder: a unix-socket relay between a QMP client and QEMU that records both ways.

Bytes are forwarded exactly as read, whatever the chunking; recording frames them on the
side. Server messages are CRLF lines. Client messages end when braces balance (QEMU's
parser is streaming and needs no newline), string- and escape-aware, single quotes
included; whitespace already read after a message belongs to it, whitespace read later
to the next one. Text that is not a JSON object or array (e.g. a bare word) ends at a
newline or at the next ``{``/``[``. A message longer than :data:`MAX_MESSAGE` (QEMU's 64 MiB
input limit plus room for its framing) is stored as ``unparsed`` pieces of that size.

QEMU's ``server=on`` chardev accepts one client at a time, so every client connection
gets its own upstream connection; a second client waits in QEMU's backlog until the first
leaves. Back-pressure: each side's reads wait for the other side's ``drain()``, with write
buffer high-water marks of :data:`HIGH_WATER`, so a client that stops reading makes the
proxy stop reading QEMU rather than buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tracer.redact import redact_command
from tracer.session import Direction, Header, SessionWriter, make_record

#: Bytes read from a socket at a time.
CHUNK = 64 * 1024
#: Write-buffer high-water mark of every proxied transport.
HIGH_WATER = 256 * 1024
#: Longest message framed whole; QEMU refuses client messages over 64 MiB.
MAX_MESSAGE = (64 << 20) + 4096

_WHITESPACE = b" \t\r\n"
_OUTSIDE_STRING = re.compile(rb"[{}\[\]\"']")
_IN_STRING = {ord('"'): re.compile(rb'[\\"]'), ord("'"): re.compile(rb"[\\']")}
_SCALAR_END = re.compile(rb"[\n{\[\"']")
_OPEN, _CLOSE = frozenset(b"{["), frozenset(b"}]")


class LineFramer:
    """Split QEMU's output into CRLF-terminated lines."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n", max(self._scan, start))
            if end < 0:
                break
            out.append(bytes(buf[start:end + 1]))
            start = end + 1
        while len(buf) - start >= MAX_MESSAGE:
            out.append(bytes(buf[start:start + MAX_MESSAGE]))
            start += MAX_MESSAGE
        del buf[:start]
        self._scan = len(buf)
        return out

    def rest(self) -> bytes:
        """What is left after the last complete line (a message cut by EOF)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        return rest


@dataclass(slots=True)
class BraceFramer:
    """Split a client's byte stream into messages the way QEMU's streaming parser does."""

    _buf: bytearray = field(default_factory=bytearray)
    _pos: int = 0
    _depth: int = 0
    _quote: int = 0  # the open string's quote byte, 0 outside strings
    _escape: bool = False
    _scalar: bool = False  # inside depth-0 text that is not an object or array

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while (end := self._next_end()) is not None:
            out.append(bytes(self._buf[:end]))
            del self._buf[:end]
            self._pos = 0
        while len(self._buf) >= MAX_MESSAGE:
            out.append(bytes(self._buf[:MAX_MESSAGE]))
            del self._buf[:MAX_MESSAGE]
            self._reset()
        return out

    def rest(self) -> bytes:
        """The unfinished message left at EOF."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._reset()
        return rest

    def _reset(self) -> None:
        self._pos = self._depth = self._quote = 0
        self._escape = self._scalar = False

    def _next_end(self) -> int | None:
        """Advance the scan; return where the current message ends, or None for 'not yet'."""
        buf = self._buf
        n = len(buf)
        while self._pos < n:
            pos = self._pos
            if self._escape:
                self._escape = False
                self._pos = pos + 1
            elif self._quote:
                m = _IN_STRING[self._quote].search(buf, pos)
                if m is None:
                    self._pos = n
                elif buf[m.start()] == 0x5C:  # backslash
                    self._escape = True
                    self._pos = m.start() + 1
                else:
                    self._quote = 0
                    self._pos = m.start() + 1
            elif self._depth:
                m = _OUTSIDE_STRING.search(buf, pos)
                if m is None:
                    self._pos = n
                    continue
                c = buf[m.start()]
                self._pos = m.start() + 1
                if c in _OPEN:
                    self._depth += 1
                elif c in _CLOSE:
                    self._depth -= 1
                    if not self._depth:
                        return self._finish(self._pos)
                else:
                    self._quote = c
            elif self._scalar:
                m = _SCALAR_END.search(buf, pos)
                if m is None:
                    self._pos = n
                    continue
                c = buf[m.start()]
                if c == 0x0A:
                    return self._finish(m.start() + 1)
                if c in _OPEN:
                    self._scalar = False
                    return m.start()
                self._quote = c
                self._pos = m.start() + 1
            else:
                c = buf[pos]
                self._pos = pos + 1
                if c in _WHITESPACE:
                    continue
                if c in _OPEN:
                    self._depth = 1
                else:
                    self._scalar = True
                    if c in (0x22, 0x27):
                        self._quote = c
        return None

    def _finish(self, end: int) -> int:
        """End a message at ``end``, taking along whitespace that is already here."""
        buf = self._buf
        while end < len(buf) and buf[end] in _WHITESPACE:
            end += 1
        self._reset()
        return end


class Recorder:
    """Turns wire messages into session records, with times relative to the session start."""

    def __init__(self, writer: SessionWriter, *, redact: bool, start_ns: int | None = None) -> None:
        self.writer = writer
        self.redact = redact
        self.start_ns = time.monotonic_ns() if start_ns is None else start_ns
        self.messages = 0
        self.events: Counter[str] = Counter()

    def now(self) -> int:
        return time.monotonic_ns() - self.start_ns

    def message(self, t_ns: int, vm: str, direction: Direction, wire: bytes, conn: int) -> None:
        """Record one QMP message (redacting a command's secrets when redaction is on)."""
        redacted = None
        if self.redact and direction == "send":
            try:
                redacted = redact_command(wire.decode("utf-8"))
            except UnicodeDecodeError:
                redacted = None
        rec = make_record(t_ns, vm, direction, wire, conn=conn, redacted_wire=redacted)
        if rec["kind"] == "event":
            self.events[rec["name"]] += 1
        self.messages += 1
        self.writer.write(rec)

    def mark(self, vm: str, direction: Direction, kind: str, conn: int) -> None:
        """Record a connection mark (``connect``, ``disconnect``, ``eof``): no wire text."""
        self.writer.write({"t_ns": self.now(), "vm": vm, "dir": direction, "kind": kind,
                           "wire": "", "conn": conn})


class ProxyError(Exception):
    """A proxy that cannot start: the message is one line for the user."""


class Proxy:
    """Listens on ``listen`` and relays every client to its own connection to ``upstream``."""

    def __init__(self, upstream: str | os.PathLike[str], listen: str | os.PathLike[str], vm: str,
                 *, force: bool = False) -> None:
        self.upstream = str(upstream)
        self.listen = Path(listen)
        self.vm = vm
        self.force = force
        self.recorder: Recorder
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._next_conn = 0
        self._transports: set[asyncio.WriteTransport] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def bind(self) -> None:
        """Bind the listening socket (mode 0600); refuse an existing path unless forced."""
        if os.path.lexists(self.listen):
            if not self.force:
                raise ProxyError(f"{self.listen} already exists (use --force to replace it)")
            self.listen.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.listen))
            # listen at once: a client that sees the path must not be refused while the
            # event loop is still starting (the kernel queues it until we accept)
            sock.listen(socket.SOMAXCONN)
        except OSError as exc:
            sock.close()
            raise ProxyError(f"cannot listen on {self.listen}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        self._inode = os.stat(self.listen).st_ino
        self._sock = sock

    async def start(self, recorder: Recorder) -> None:
        """Accept clients on the bound socket, recording through ``recorder``."""
        self.recorder = recorder
        self._server = await asyncio.start_unix_server(self._accept, sock=self._sock, limit=CHUNK)

    def buffered_bytes(self) -> int:
        """Bytes held in the proxy's write buffers now (bounded by the high-water marks)."""
        return sum(t.get_write_buffer_size() for t in self._transports)

    async def connections_ended(self) -> None:
        """Wait until every current connection has ended (and been recorded)."""
        if self._handlers:
            await asyncio.wait(set(self._handlers))

    async def close(self) -> None:
        """Stop listening, end every connection (recording it) and remove the socket."""
        if self._server is not None:
            self._server.close()
        elif self._sock is not None:
            self._sock.close()
        for transport in list(self._transports):
            transport.close()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(OSError):
            st = os.stat(self.listen)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._inode:
                self.listen.unlink()

    def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._relay(creader, cwriter))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def _track(self, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self._transports.add(transport)

    async def _relay(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        conn = self._next_conn
        self._next_conn += 1
        rec = self.recorder
        rec.mark(self.vm, "send", "connect", conn)
        self._track(cwriter)
        try:
            ureader, uwriter = await asyncio.open_unix_connection(self.upstream, limit=CHUNK)
        except OSError:
            rec.mark(self.vm, "recv", "eof", conn)
            cwriter.close()
            self._transports.discard(cwriter.transport)
            rec.mark(self.vm, "send", "disconnect", conn)
            return
        self._track(uwriter)
        lines, braces = LineFramer(), BraceFramer()
        up = asyncio.create_task(self._pump(ureader, cwriter, lines.feed, "recv", conn))
        down = asyncio.create_task(self._pump(creader, uwriter, braces.feed, "send", conn))
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for writer in (cwriter, uwriter):
            writer.close()
            self._transports.discard(writer.transport)
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        now = rec.now()
        if tail := lines.rest():
            rec.message(now, self.vm, "recv", tail, conn)
        if up in done:
            rec.mark(self.vm, "recv", "eof", conn)
        if tail := braces.rest():
            rec.message(now, self.vm, "send", tail, conn)
        rec.mark(self.vm, "send", "disconnect", conn)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    frame: Callable[[bytes], list[bytes]], direction: Direction, conn: int) -> None:
        """Forward until EOF: read, pass on, record the messages completed, wait for drain."""
        rec, vm = self.recorder, self.vm
        try:
            while data := await reader.read(CHUNK):
                t_ns = rec.now()
                writer.write(data)
                for message in frame(data):
                    rec.message(t_ns, vm, direction, message, conn)
                await writer.drain()
        except OSError:
            return


async def record_proxy(upstream: str | os.PathLike[str], listen: str | os.PathLike[str],
                       output: str | os.PathLike[str], *, vm: str | None = None,
                       force: bool = False, redact: bool = True,
                       ready: Callable[[], None] | None = None) -> Recorder:
    """Record one VM's QMP traffic through a proxy until SIGINT or SIGTERM."""
    upstream_path = Path(upstream)
    try:
        if not stat.S_ISSOCK(upstream_path.stat().st_mode):
            raise ProxyError(f"upstream {upstream_path} is not a unix socket")
    except FileNotFoundError:
        raise ProxyError(f"upstream socket {upstream_path} does not exist") from None
    name = vm or upstream_path.stem
    proxy = Proxy(upstream_path, listen, name, force=force)
    proxy.bind()
    header = Header(source="proxy", clock="monotonic", vms=[name], redacted=redact)
    try:
        writer = SessionWriter(output, header, flush=True)
    except OSError as exc:
        await proxy.close()
        raise ProxyError(f"cannot write {output}: {exc.strerror}") from None
    with writer:
        await proxy.start(Recorder(writer, redact=redact))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if ready is not None:
                ready()
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await proxy.close()
        return proxy.recorder
