"""``record qemu``: start real QEMUs (TCG), put the proxy recorder in front of each QMP
socket, and let a built-in workload drive them through ``qemu.qmp``.

Everything runs on one asyncio loop and every VM's messages go to one session file. All
processes and temporary files (sockets, disk images) are removed at the end, also on an
error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError
from qemu.qmp.message import Message

from tracer.proxy import Proxy, Recorder
from tracer.session import Header, SessionWriter

#: Seconds a QEMU gets to create its QMP socket, and to exit after ``quit`` or SIGTERM.
START_TIMEOUT = 20.0
EXIT_TIMEOUT = 5.0


class QemuError(Exception):
    """A recording that cannot go on: the message is one line for the user."""


def find_tool(name: str, package: str) -> str:
    """The path of a QEMU program, or a one-line error naming the Debian package to install."""
    path = shutil.which(name)
    if path is None:
        raise QemuError(f"{name} not found: install the Debian package {package}")
    return path


def guest_boot_sector() -> bytes:
    """The 512-byte boot-sector guest shipped with the package (source: guest/boot.asm)."""
    return resources.files("tracer").joinpath("guest/boot.bin").read_bytes()


class Monitor:
    """A VM's QMP client (through the proxy) that keeps every event it receives, in order.

    Waiting for an event looks at the events received since a mark taken before the
    command was sent: many events arrive before their command's reply.
    """

    def __init__(self, vm: str, client: QMPClient) -> None:
        self.vm = vm
        self.client = client
        self.events: list[Message] = []
        self._arrived = asyncio.Condition()
        self._listener = EventListener()
        client.register_listener(self._listener)
        self._collector = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self._listener:
            self.events.append(event)
            async with self._arrived:
                self._arrived.notify_all()

    def mark(self) -> int:
        """Where the events received from now on start."""
        return len(self.events)

    async def run(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Execute one command; an error reply stops the recording with a one-line message."""
        try:
            return await self.client.execute(command, arguments)
        except ExecuteError as exc:
            raise QemuError(f"{self.vm}: {command} failed: {exc.error.error.desc}") from None

    async def wait(self, names: str | set[str], since: int, timeout: float = 30.0,
                   match: Callable[[Message], bool] | None = None) -> tuple[Message, int]:
        """The first event in ``names`` at or after index ``since``, and the index after it."""
        wanted = {names} if isinstance(names, str) else names

        def found() -> int | None:
            for i in range(since, len(self.events)):
                event = self.events[i]
                if event["event"] in wanted and (match is None or match(event)):
                    return i
            return None

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout)
            except TimeoutError:
                names_text = " or ".join(sorted(wanted))
                raise QemuError(f"{self.vm}: no {names_text} within {timeout:g} s") from None
        i = found()
        assert i is not None
        return self.events[i], i + 1

    async def run_expect(self, command: str, arguments: dict[str, Any] | None, event: str,
                         timeout: float = 30.0,
                         match: Callable[[Message], bool] | None = None) -> Message:
        """Execute a command and wait for the event it causes."""
        since = self.mark()
        await self.run(command, arguments)
        found, _ = await self.wait(event, since, timeout, match)
        return found

    async def close(self) -> None:
        """Stop collecting and disconnect; QEMU may already have closed the socket (``quit``)."""
        self._collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._collector
        with contextlib.suppress(EOFError, ConnectionError):
            await self.client.disconnect()


@dataclass
class Machine:
    """One QEMU process, its proxy and its monitor."""

    name: str
    process: asyncio.subprocess.Process
    proxy: Proxy
    monitor: Monitor | None = None


class Lab:
    """Starts QEMUs in a temporary directory and tears all of it down in :meth:`close`."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.qemu = find_tool("qemu-system-x86_64", "qemu-system-x86")
        self.dir = Path(tempfile.mkdtemp(prefix="qmpreplay-"))
        self.machines: list[Machine] = []

    def path(self, name: str) -> Path:
        return self.dir / name

    async def tool(self, name: str, package: str, *args: str) -> None:
        """Run a helper program such as ``qemu-img``; a failure is a one-line error."""
        proc = await asyncio.create_subprocess_exec(
            find_tool(name, package), *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise QemuError(f"{name} {args[0]} failed: {last[0]}")

    async def start(self, name: str, args: list[str]) -> Monitor:
        """Start ``qemu-system-x86_64 args`` as VM ``name`` and connect to it through a proxy."""
        qmp = self.path(f"{name}.qmp")
        log = self.path(f"{name}.log")
        with open(log, "wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                self.qemu, "-name", name, *args, "-qmp", f"unix:{qmp},server=on,wait=off",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr, start_new_session=True)
        proxy = Proxy(qmp, self.path(f"{name}.proxy"), name)
        machine = Machine(name, process, proxy)
        self.machines.append(machine)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not qmp.exists():
            if process.returncode is not None or loop.time() > deadline:
                text = log.read_text(errors="replace").strip().splitlines()
                why = text[-1] if text else "no QMP socket"
                raise QemuError(f"{name}: qemu-system-x86_64 did not start: {why}")
            await asyncio.sleep(0.02)
        proxy.bind()
        await proxy.start(self.recorder)
        client = QMPClient(name)
        await client.connect(str(proxy.listen))
        machine.monitor = Monitor(name, client)
        return machine.monitor

    async def quit(self, monitor: Monitor) -> None:
        """``quit`` a VM and wait for its process to end."""
        machine = next(m for m in self.machines if m.monitor is monitor)
        since = monitor.mark()
        await monitor.run("quit")
        await monitor.wait("SHUTDOWN", since)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(machine.process.wait(), EXIT_TIMEOUT)
            await asyncio.wait_for(machine.proxy.connections_ended(), EXIT_TIMEOUT)
        await monitor.close()

    async def close(self) -> None:
        """Disconnect, stop every QEMU (SIGTERM, then SIGKILL), close proxies, remove files."""
        for machine in self.machines:
            if machine.monitor is not None:
                with contextlib.suppress(Exception):
                    await machine.monitor.close()
        for machine in self.machines:
            if machine.process.returncode is None:
                machine.process.terminate()
        for machine in self.machines:
            try:
                await asyncio.wait_for(machine.process.wait(), EXIT_TIMEOUT)
            except TimeoutError:
                machine.process.kill()
                await machine.process.wait()
            await machine.proxy.close()
        shutil.rmtree(self.dir, ignore_errors=True)


async def record_qemu(output: str | os.PathLike[str], *, vms: int, workload: str,
                      redact: bool = True) -> tuple[Recorder, list[str]]:
    """Record a built-in workload on ``vms`` fresh QEMUs into one session file."""
    from tracer.workloads import WORKLOADS

    run, vm_names = WORKLOADS[workload]
    names = vm_names(vms)
    header = Header(source="proxy", clock="monotonic", vms=names, redacted=redact)
    find_tool("qemu-system-x86_64", "qemu-system-x86")
    try:
        writer = SessionWriter(output, header, flush=True)
    except OSError as exc:
        raise QemuError(f"cannot write {output}: {exc.strerror}") from None
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    with writer:
        recorder = Recorder(writer, redact=redact)
        lab = Lab(recorder)
        try:
            await run(lab, vms)
        except (OSError, QMPError) as exc:
            raise QemuError(f"lost a QEMU monitor: {exc}") from None
        finally:
            await lab.close()
            loop.remove_signal_handler(signal.SIGTERM)
    return recorder, names
