"""Synthetic times for sources that have none (iotests transcripts, libvirt ``.replies``).

Such sources keep only the order of messages. A replay still needs times, so the
importer assigns them from what QEMU 7.2 was measured to do (medians on QEMU 7.2, TCG) and
marks the session ``clock: synthetic``. The rule, per VM:

- a command is sent 1 ms after the previous message;
- an event arrives 0.2 ms after the previous message;
- a reply (or error) arrives at its command's send time plus the command's latency from
  :data:`REPLY_LATENCY_NS` (default 0.5 ms), but at least 0.2 ms after the previous
  message (events may come in between); a reply without a command arrives the default
  latency after the previous message. Commands are answered in the order they were sent.

The first message is at 0.
"""

from __future__ import annotations

from collections import deque

_MS = 1_000_000

#: Default reply latency: a cheap command's median round trip on QEMU 7.2 (unix socket, TCG).
DEFAULT_REPLY_NS = _MS // 2
COMMAND_GAP_NS = _MS
EVENT_GAP_NS = _MS // 5

#: Measured median reply latencies (ns) of commands slower or faster than the default.
REPLY_LATENCY_NS: dict[str, int] = {
    "qmp_capabilities": 340_000,
    "stop": 500_000,
    "cont": 310_000,
    "system_reset": 4_900_000,
    "system_powerdown": 570_000,
    "system_wakeup": 7_300_000,
    "query-block": 570_000,
    "blockdev-open-tray": 590_000,
    "migrate": 830_000,
    "migrate-set-parameters": 5_900_000,
    "device_del": 570_000,
    "blockdev-add": 1_000_000,
    "blockdev-del": 9_900_000,
    "blockdev-mirror": 2_800_000,
    "blockdev-backup": 11_400_000,
    "block-job-resume": 3_200_000,
    "block-job-complete": 1_600_000,
    "block-job-cancel": 1_900_000,
    "dump-guest-memory": 1_400_000,
}


def reply_latency_ns(command: str) -> int:
    return REPLY_LATENCY_NS.get(command, DEFAULT_REPLY_NS)


class SyntheticClock:
    """Assign the documented synthetic times to one VM's messages, in order."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._pending: deque[tuple[str, int]] = deque()

    def _after(self, gap: int) -> int:
        return 0 if self._last is None else self._last + gap

    def command(self, name: str) -> int:
        t = self._after(COMMAND_GAP_NS)
        self._pending.append((name, t))
        self._last = t
        return t

    def event(self) -> int:
        t = self._after(EVENT_GAP_NS)
        self._last = t
        return t

    def reply(self) -> int:
        if self._pending:
            name, sent = self._pending.popleft()
            t = max(sent + reply_latency_ns(name), self._after(EVENT_GAP_NS))
        else:
            t = self._after(DEFAULT_REPLY_NS)
        self._last = t
        return t
