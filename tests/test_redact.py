"""Secret redaction of stored command text."""

from __future__ import annotations

import orjson
import pytest

from tracer.redact import REDACTED, redact_command


@pytest.mark.parametrize(("wire", "path"), [
    ('{"execute": "set_password", "arguments": {"protocol": "vnc", "password": "pw"}}\r\n',
     ["arguments", "password"]),
    ('{"execute":"change-vnc-password","arguments":{"password":"pw"},"id":4}\n',
     ["arguments", "password"]),
    ('{"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s0", "data": "pw"}}',
     ["arguments", "data"]),
    ('{"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s0", '
     '"props": {"data": "pw"}}}\n', ["arguments", "props", "data"]),
    ('{"execute": "blockdev-add", "arguments": {"driver": "ssh", "node-name": "n", '
     '"server": {"host": "h"}, "password": "pw"}}\n', ["arguments", "password"]),
    ('{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "n", "file": '
     '{"driver": "luks", "encrypt": [{"passphrase": "pw"}]}}}\n',
     ["arguments", "file", "encrypt", 0, "passphrase"]),
    ("{'exec-oob': 'set_password', 'arguments': {'protocol': 'vnc', 'password': 'pw'}}\r\n",
     ["arguments", "password"]),
])
def test_secrets_are_replaced_and_the_line_ending_kept(wire: str, path: list[str | int]) -> None:
    out = redact_command(wire)
    assert out is not None
    assert "pw" not in out.replace("password", "").replace("passphrase", "")
    value = orjson.loads(out)
    for key in path:
        value = value[key]
    assert value == REDACTED
    assert out[len(out.rstrip()):] == wire[len(wire.rstrip()):]


def test_everything_but_the_secret_is_kept() -> None:
    wire = ('{"execute": "set_password", "arguments": {"protocol": "vnc", "password": "x"}, '
            '"id": [1]}\n')
    assert orjson.loads(redact_command(wire) or "") == {
        "execute": "set_password", "arguments": {"protocol": "vnc", "password": REDACTED},
        "id": [1]}


@pytest.mark.parametrize("wire", [
    '{"execute": "query-status"}\r\n',
    '{"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "m", '
    '"size": 1, "data": "not a secret"}}\n',
    '{"execute": "blockdev-add", "arguments": {"driver": "luks", "key-secret": "sec0"}}\n',
    '{"execute": "device_add", "arguments": {"driver": "x", "password": "kept"}}\n',
    '{"execute": "set_password"}\n',
    "not json\n",
    "[1, 2]\n",
])
def test_messages_without_secrets_are_left_alone(wire: str) -> None:
    assert redact_command(wire) is None
