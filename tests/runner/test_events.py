"""What rsync and ssh print when a transfer fails maps to the right error (texts from real runs)."""

from __future__ import annotations

import pytest

from runner.errors import (
    AuthError,
    HostKeyError,
    RefusedError,
    StepError,
    TransferError,
    TransportError,
)
from runner.events import classify_failure

CUT_PULL = (
    "rsync: connection unexpectedly closed (13503748 bytes received so far) [receiver]\n"
    "rsync error: error in rsync protocol data stream (code 12) at io.c(232) [receiver=3.2.7]\n"
)


@pytest.mark.parametrize(
    ("rc", "stderr", "error"),
    [
        pytest.param(12, CUT_PULL, TransportError, id="stream-ended"),
        pytest.param(
            255,
            CUT_PULL + "rsync: [generator] write error: Broken pipe (32)\n",
            TransportError,
            id="ssh-255",
        ),
        pytest.param(
            30,
            "rsync error: timeout in data send/receive (code 30) at io.c(201) [sender=3.5.0]\n",
            TransportError,
            id="timeout",
        ),
        pytest.param(
            12,
            "Host key verification failed.\nrsync: connection unexpectedly closed "
            "(0 bytes received so far) [Receiver]\n",
            HostKeyError,
            id="host-key-on-reconnect",
        ),
        pytest.param(
            12,
            "root@h: Permission denied (publickey).\nrsync: connection unexpectedly closed\n",
            AuthError,
            id="key-refused-on-reconnect",
        ),
        pytest.param(
            12,
            'rsync: [receiver] write failed on "/w/big.bin": No space left on device (28)\n'
            "rsync error: error in rsync protocol data stream (code 12)\n",
            TransferError,
            id="disk-full",
        ),
        pytest.param(
            23,
            'rsync: [sender] send_files failed to open "/w/x": Permission denied (13)\n',
            TransferError,
            id="unreadable-file",
        ),
        pytest.param(
            12,
            "rrsync error: option --delete has been disabled on this server.\n",
            RefusedError,
            id="rrsync-refused",
        ),
    ],
)
@pytest.mark.parametrize("phase", ["push", "pull"])
def test_rsync_failures(phase: str, rc: int, stderr: str, error: type[StepError]) -> None:
    res = {"rc": rc, "stderr": stderr, "stdout": "  1,024  0%  0.00kB/s  0:00:00\n"}
    found = classify_failure(phase, res, "user@h:22")
    assert type(found) is error, found
    assert "\n" not in found.reason
    if error is TransportError:
        assert f"lost during {phase}" in found.reason
        assert "0.00kB/s" not in found.reason, "the reason is rsync's complaint, not progress"
