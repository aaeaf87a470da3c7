"""Built-in workloads for ``record qemu``: what the management side does to each VM.

``basic`` drives every VM concurrently through cheap, deterministic management actions.
``full`` provokes every event family QEMU 7.2 emits without a guest OS on ``vm0`` (block
jobs on qcow2 images, the boot-sector guest's stage machine handled by a libvirt-like
reaction loop, a migration to ``vm0-dst`` and device and tray actions there), while any
further VMs run ``basic``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from qemu.qmp import Message

from tracer.qemu import Lab, Monitor, QemuError, guest_boot_sector

MiB = 1024 * 1024
#: Seconds between the status polls of :func:`basic_actions`.
POLL_INTERVAL = 0.5

#: The machine every workload starts from: q35 under TCG, paused, with USB and a CD drive.
BASE_ARGS = [
    "-S", "-machine", "q35,accel=tcg", "-m", "64", "-smp", "1", "-nodefaults",
    "-no-user-config", "-display", "none", "-device", "qemu-xhci,id=usb",
    "-device", "ide-cd,bus=ide.1,id=cd0",
]


def basic_names(vms: int) -> list[str]:
    return [f"vm{i}" for i in range(vms)]


def full_names(vms: int) -> list[str]:
    return [*basic_names(vms), "vm0-dst"]


async def basic(lab: Lab, vms: int) -> None:
    """Every VM runs :func:`basic_actions` at the same time, then quits."""
    lab.path("medium.raw").write_bytes(bytes(2 * MiB))
    await asyncio.gather(*(basic_vm(lab, name) for name in basic_names(vms)))


async def basic_vm(lab: Lab, name: str) -> None:
    """Start a plain VM, run :func:`basic_actions` on it and quit it."""
    monitor = await lab.start(name, BASE_ARGS)
    await basic_actions(monitor, str(lab.path("medium.raw")))
    await lab.quit(monitor)


async def basic_actions(m: Monitor, medium: str) -> None:
    """USB hot-unplug, tray and medium changes, run state, reset and a short mirror job.

    Device and tray actions come before the guest runs: SeaBIOS would race them (it polls
    the tablet, and its resets close the tray without an event)."""
    await m.run("query-status")
    await usb_unplug(m)
    await tray_and_medium(m, medium)
    await m.run_expect("cont", None, "RESUME")
    await poll(m)
    await m.run_expect("stop", None, "STOP")
    await poll(m)
    await m.run_expect("cont", None, "RESUME")
    await m.run_expect("system_reset", None, "RESET")
    await poll(m)
    await null_mirror(m)
    await poll(m)


async def poll(m: Monitor) -> None:
    """A management stack's periodic status poll, spacing the actions out like real use."""
    await asyncio.sleep(POLL_INTERVAL)
    await m.run("query-status")


async def usb_unplug(m: Monitor) -> None:
    """``device_del`` of a USB device needs no guest ACK: DEVICE_DELETED follows at once.

    Done before the guest runs: once SeaBIOS polls the tablet, the device stays referenced
    and DEVICE_DELETED does not come."""
    await m.run("device_add", {"driver": "usb-tablet", "id": "tablet0", "bus": "usb.0"})
    await m.run_expect("device_del", {"id": "tablet0"}, "DEVICE_DELETED",
                       match=lambda e: data(e).get("device") == "tablet0")


async def tray_and_medium(m: Monitor, medium: str) -> None:
    """Open and close the CD tray, insert a medium and eject it: DEVICE_TRAY_MOVED each time."""
    def tray(is_open: bool) -> Callable[[Message], bool]:
        return lambda e: data(e)["tray-open"] is is_open

    await m.run_expect("blockdev-open-tray", {"id": "cd0"}, "DEVICE_TRAY_MOVED", match=tray(True))
    await m.run_expect("blockdev-close-tray", {"id": "cd0"}, "DEVICE_TRAY_MOVED",
                       match=tray(False))
    await m.run_expect("blockdev-change-medium",
                       {"id": "cd0", "filename": medium, "format": "raw",
                        "read-only-mode": "read-only"},
                       "DEVICE_TRAY_MOVED", match=tray(False))
    await m.run_expect("eject", {"id": "cd0", "force": True}, "DEVICE_TRAY_MOVED", match=tray(True))


async def null_mirror(m: Monitor) -> None:
    """A mirror between two ``null-co`` nodes: READY, then ``block-job-complete``."""
    for node in ("null-src", "null-dst"):
        await m.run("blockdev-add", {"driver": "null-co", "node-name": node, "size": 16 * MiB})
    await mirror_to_ready(m, "null-src", "null-dst", "mirror-null")
    await m.run_expect("block-job-complete", {"device": "mirror-null"}, "BLOCK_JOB_COMPLETED",
                       match=job_is("mirror-null"))


def data(event: Message) -> dict[str, Any]:
    """An event's ``data`` member (empty when it has none)."""
    value = event.get("data", {})
    return value if isinstance(value, dict) else {}


def is_completed(event: Message) -> bool:
    return data(event).get("status") == "completed"


def job_is(job: str) -> Callable[[Message], bool]:
    return lambda e: data(e).get("device", data(e).get("id")) == job


async def mirror_to_ready(m: Monitor, source: str, target: str, job: str) -> None:
    await m.run_expect("blockdev-mirror", {"job-id": job, "device": source, "target": target,
                                           "sync": "full"}, "BLOCK_JOB_READY", match=job_is(job))


# --- full --------------------------------------------------------------------------------

def guest_args(lab: Lab, name: str) -> list[str]:
    """The boot-sector guest's machine (qmp.md §4.1): panic and watchdog devices, a disk
    whose first read of LBA 1 fails (a ``raw`` node over ``blkdebug``, so virtio-blk's own
    probing of sector 0 does not use up the error), ``-no-shutdown``."""
    def blockdev(node: dict[str, Any]) -> list[str]:
        return ["-blockdev", orjson.dumps(node).decode()]

    err_file = {"driver": "file", "filename": str(lab.path("err.raw")), "node-name": "err-file"}
    read_error = {"event": "read_aio", "errno": 5, "sector": 1, "once": True}
    return [
        *BASE_ARGS, "-no-shutdown", "-action", "panic=pause", "-action", "watchdog=pause",
        "-device", "pvpanic", "-device", "ib700",
        *blockdev({"driver": "file", "filename": str(lab.path("boot.raw")),
                   "node-name": "boot-file", "read-only": True}),
        *blockdev({"driver": "raw", "file": "boot-file", "node-name": "boot-fmt",
                   "read-only": True}),
        "-device", "virtio-blk-pci,drive=boot-fmt,id=virtio-disk0,bootindex=0",
        *blockdev({"driver": "blkdebug", "node-name": "err-dbg", "inject-error": [read_error],
                   "image": err_file}),
        *blockdev({"driver": "raw", "file": "err-dbg", "node-name": "err-fmt"}),
        "-device",
        "virtio-blk-pci,drive=err-fmt,id=virtio-disk2,bootindex=1,rerror=stop,werror=stop",
        "-chardev", f"file,id=dbg,path={lab.path(name + '.seabios.log')}",
        "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
    ]


async def make_images(lab: Lab) -> None:
    """The guest's disks, and qcow2 images for the block jobs (one with data to copy)."""
    lab.path("boot.raw").write_bytes(guest_boot_sector().ljust(MiB, b"\0"))
    lab.path("err.raw").write_bytes(bytes(MiB))
    lab.path("medium.raw").write_bytes(bytes(2 * MiB))
    for image in ("data", "mirror", "cancel", "backup", "overlay1", "overlay2"):
        await lab.tool("qemu-img", "qemu-utils", "create", "-q", "-f", "qcow2",
                       str(lab.path(f"{image}.qcow2")), "16M")
    await lab.tool("qemu-io", "qemu-utils", "-f", "qcow2", "-c", "write -q -P 0xab 0 4M",
                   str(lab.path("data.qcow2")))


async def block_jobs(lab: Lab, m: Monitor) -> None:
    """Mirror (READY/complete), mirror cancelled before READY, backup held PENDING until
    ``job-finalize``, stream and active commit, all on qcow2 nodes outside the guest."""
    for image in ("data", "mirror", "cancel", "backup", "overlay1", "overlay2"):
        backing = {"backing": None} if image.startswith("overlay") else {}
        await m.run("blockdev-add", {"driver": "qcow2", "node-name": image, **backing,
                                     "file": {"driver": "file",
                                              "filename": str(lab.path(f"{image}.qcow2"))}})
    await mirror_to_ready(m, "data", "mirror", "mirror0")
    await m.run_expect("block-job-complete", {"device": "mirror0"}, "BLOCK_JOB_COMPLETED",
                       match=job_is("mirror0"))

    since = m.mark()
    await m.run("blockdev-mirror", {"job-id": "cancel0", "device": "data", "target": "cancel",
                                    "sync": "full", "speed": 64 * 1024})
    await m.wait("JOB_STATUS_CHANGE", since,
                 match=lambda e: data(e) == {"id": "cancel0", "status": "running"})
    await m.run("query-block-jobs")
    await m.run_expect("block-job-cancel", {"device": "cancel0"}, "BLOCK_JOB_CANCELLED",
                       match=job_is("cancel0"))

    await m.run_expect("blockdev-backup", {"job-id": "backup0", "device": "data",
                                           "target": "backup", "sync": "full",
                                           "auto-finalize": False, "auto-dismiss": False},
                       "BLOCK_JOB_PENDING", match=job_is("backup0"))
    await m.run_expect("job-finalize", {"id": "backup0"}, "BLOCK_JOB_COMPLETED",
                       match=job_is("backup0"))
    await m.run("job-dismiss", {"id": "backup0"})

    await m.run("blockdev-snapshot", {"node": "data", "overlay": "overlay1"})
    await m.run_expect("block-stream", {"job-id": "stream0", "device": "overlay1"},
                       "BLOCK_JOB_COMPLETED", match=job_is("stream0"))
    await m.run("blockdev-snapshot", {"node": "overlay1", "overlay": "overlay2"})
    await m.run_expect("block-commit", {"job-id": "commit0", "device": "overlay2"},
                       "BLOCK_JOB_READY", match=job_is("commit0"))
    await m.run_expect("block-job-complete", {"device": "commit0"}, "BLOCK_JOB_COMPLETED",
                       match=job_is("commit0"))
    await m.run("query-block-jobs")


async def guest_stages(m: Monitor, timeout: float = 120.0) -> None:
    """Let the boot-sector guest run and react to its events like libvirt does, until it
    has answered ``system_powerdown`` by shutting down (qmp.md §4.2)."""
    cursor = m.mark()
    await m.run_expect("cont", None, "RESUME")
    powered_down = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    guest_events = {"GUEST_PANICKED", "WATCHDOG", "BLOCK_IO_ERROR", "SUSPEND", "SHUTDOWN",
                    "GUEST_CRASHLOADED"}
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise QemuError(f"{m.vm}: the guest did not reach its last stage in {timeout:g} s")
        event, cursor = await m.wait(guest_events, cursor, timeout=left)
        name = event["event"]
        if name in ("GUEST_PANICKED", "WATCHDOG", "BLOCK_IO_ERROR", "SHUTDOWN"):
            _, cursor = await m.wait("STOP", cursor)
        if name in ("GUEST_PANICKED", "WATCHDOG"):
            await m.run("query-status")
            await m.run("system_reset")
            await m.run("cont")
        elif name == "BLOCK_IO_ERROR":
            await m.run("query-block")
            await m.run("cont")
        elif name == "SUSPEND":
            await m.run("system_wakeup")
        elif name == "GUEST_CRASHLOADED":
            await m.run("query-status")
            await m.run_expect("system_powerdown", None, "POWERDOWN")
            powered_down = True
        elif powered_down:
            return
        else:
            await m.run("system_reset")
            await m.run("cont")


async def migrate(lab: Lab, src: Monitor, dst: Monitor) -> None:
    """Migrate ``src`` to ``dst`` over a unix socket with migration events on."""
    uri = f"unix:{lab.path('migration.sock')}"
    events_on = {"capabilities": [{"capability": "events", "state": True}]}
    await dst.run("migrate-set-capabilities", events_on)
    dst_since = dst.mark()
    await dst.run("migrate-incoming", {"uri": uri})
    await src.run("migrate-set-capabilities", events_on)
    await src.run("migrate-set-parameters", {"max-bandwidth": 256 * MiB})
    src_since = src.mark()
    await src.run("migrate", {"uri": uri})
    while True:
        status = await src.run("query-migrate")
        if status.get("status") in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.05)
    if status["status"] != "completed":
        raise QemuError(f"{src.vm}: migration {status['status']}")
    await src.wait("MIGRATION", src_since, match=is_completed)
    await dst.wait("MIGRATION", dst_since, match=is_completed)


async def full(lab: Lab, vms: int) -> None:
    """``vm0`` provokes every event family (qmp.md §4); ``vm1``... run :func:`basic` meanwhile."""
    await make_images(lab)
    others = [name for name in basic_names(vms) if name != "vm0"]

    async def vm0() -> None:
        src = await lab.start("vm0", guest_args(lab, "vm0"))
        await src.run("query-status")
        await block_jobs(lab, src)
        await guest_stages(src)
        await src.run("system_reset")
        dst = await lab.start("vm0-dst", [*guest_args(lab, "vm0-dst"), "-incoming", "defer"])
        await dst.run("query-status")
        await usb_unplug(dst)
        await migrate(lab, src, dst)
        await lab.quit(src)
        await tray_and_medium(dst, str(lab.path("medium.raw")))
        await dst.run_expect("cont", None, "RESUME")
        await dst.run("query-status")
        await dst.run_expect("stop", None, "STOP")
        await dst.run_expect("cont", None, "RESUME")
        await lab.quit(dst)

    await asyncio.gather(vm0(), *(basic_vm(lab, name) for name in others))


WORKLOADS: dict[str, tuple[Callable[[Lab, int], Awaitable[None]], Callable[[int], list[str]]]] = {
    "basic": (basic, basic_names),
    "full": (full, full_names),
}
