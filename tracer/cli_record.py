"""``qmpreplay record``: record QMP sessions from real QEMU (a proxy, or QEMUs started here)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tracer.cli_common import fail

record_app = typer.Typer(help="Record QMP sessions from real QEMU.", no_args_is_help=True)


@record_app.command("proxy")
def proxy(
    upstream: Annotated[Path, typer.Option("--upstream", help="QEMU's QMP unix socket.")],
    listen: Annotated[Path, typer.Option(
        "--listen", help="Socket for the QMP client (mode 0600).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Session file to write.")],
    vm: Annotated[str | None, typer.Option(
        "--vm", help="VM name (default: the upstream socket's name without extension).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing --listen path.")] = False,
    no_redact: Annotated[bool, typer.Option(
        "--no-redact", help="Keep secrets in the session.")] = False,
) -> None:
    """Relay a QMP client to QEMU and record every message both ways until Ctrl-C or SIGTERM."""
    from tracer.proxy import ProxyError, record_proxy

    def ready() -> None:
        typer.echo(f"recording {upstream} to {output}; QMP clients connect to {listen}", err=True)

    try:
        recorder = asyncio.run(record_proxy(upstream, listen, output, vm=vm, force=force,
                                            redact=not no_redact, ready=ready))
    except ProxyError as exc:
        fail(str(exc))
    events = recorder.events
    typer.echo(f"recorded {recorder.messages} messages ({sum(events.values())} events of "
               f"{len(events)} types) from 1 VM to {output}")


@record_app.command("qemu")
def qemu(
    output: Annotated[Path, typer.Option("-o", "--output", help="Session file to write.")],
    vms: Annotated[int, typer.Option("--vms", min=1, max=64, help="QEMU processes to start.")] = 1,
    workload: Annotated[str, typer.Option(
        "--workload", help="Built-in workload: basic (~20 s) or full (every provokable event).")
    ] = "basic",
    no_redact: Annotated[bool, typer.Option(
        "--no-redact", help="Keep secrets in the session.")] = False,
) -> None:
    """Start real QEMUs (TCG), record them through proxies while a built-in workload drives them."""
    from tracer.qemu import QemuError, record_qemu
    from tracer.workloads import WORKLOADS

    if workload not in WORKLOADS:
        fail(f"unknown workload {workload!r} (choose from {', '.join(WORKLOADS)})")
    try:
        recorder, names = asyncio.run(record_qemu(output, vms=vms, workload=workload,
                                                  redact=not no_redact))
    except QemuError as exc:
        fail(str(exc))
    events = recorder.events
    typer.echo(f"recorded {recorder.messages} messages ({sum(events.values())} events of "
               f"{len(events)} types) from {len(names)} VMs to {output}")


def register(app: typer.Typer) -> None:
    """Add the ``record`` sub-commands to the main command line."""
    app.add_typer(record_app, name="record")
