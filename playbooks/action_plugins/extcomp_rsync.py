"""Action plugin: rsync a step's files over the task's own ssh connection, from the controller.

It runs in the ansible-playbook process (no module shipped anywhere, no Python on the host) and
builds rsync's `-e` command from the same connection options Ansible's ssh plugin uses, so rsync
rides the ControlMaster connection the raw tasks opened: one handshake per step. Progress goes to
a small JSON file the runner shows as a progress bar; the result carries bytes and seconds. A pull
that a lost connection cut short resumes: completed files are skipped, and the file in flight is
kept in a partial dir and finished from where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_PROGRESS_RE = re.compile(rb"^\s*([\d,]+)\s+(\d+)%\s+(\S+)\s+(\S+)")
_TOTAL_RE = re.compile(r"Total transferred file size: ([\d,]+) bytes")
_PROGRESS_EVERY_S = 0.2
_PARTIAL_DIR = ".extcomp-rsync-partial"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(
        ("direction", "sources", "remote_dir", "dest", "exclude", "progress_file")
    )

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        direction = args.get("direction")
        remote_dir = str(args.get("remote_dir") or "")
        if direction not in ("push", "pull") or not remote_dir:
            raise AnsibleActionFail("extcomp_rsync needs direction push|pull and remote_dir")
        remote = f"{self._remote_host()}:{remote_dir.rstrip('/')}/"
        argv = [
            "rsync",
            "-a",
            "--stats",
            "--info=progress2",
            "--no-inc-recursive",
            "-e",
            shlex.join(self._ssh_command()),
        ]
        for pattern in args.get("exclude") or []:
            argv += ["--exclude", str(pattern)]
        if direction == "push":
            sources = [str(s).rstrip("/") or "/" for s in args.get("sources") or []]
            if not sources:
                raise AnsibleActionFail("extcomp_rsync push needs sources")
            argv += ["--", *sources, remote]
        else:
            dest = str(args.get("dest") or "")
            if not dest:
                raise AnsibleActionFail("extcomp_rsync pull needs dest")
            os.makedirs(dest, exist_ok=True)
            # A pull cut by a lost connection keeps the file it was receiving here; the next
            # attempt sends only what is missing. rsync excludes the dir from the transfer itself
            # and removes it once the pull is complete.
            argv += [f"--partial-dir={_PARTIAL_DIR}", "--", remote, dest.rstrip("/") + "/"]
        started = time.monotonic()
        rc, stdout, stderr = self._run_rsync(argv, args.get("progress_file"), direction)
        seconds = time.monotonic() - started
        total = _TOTAL_RE.search(stdout)
        result.update(
            rc=rc,
            cmd=argv,
            stdout=stdout,
            stderr=stderr,
            direction=direction,
            bytes=int(total.group(1).replace(",", "")) if total else 0,
            seconds=round(seconds, 3),
            changed=True,
        )
        if rc != 0:
            result["failed"] = True
            result["msg"] = f"rsync {direction} failed (rc {rc}): {stderr.strip()[-2000:]}"
        return result

    def _remote_host(self) -> str:
        host = self._connection.get_option("host")
        return f"[{host}]" if ":" in host else host

    def _ssh_command(self) -> list[str]:
        """The ssh argv Ansible's ssh plugin would use, for rsync's -e."""
        conn = self._connection
        cmd = [conn.get_option("ssh_executable") or "ssh"]
        cmd += shlex.split(conn.get_option("ssh_args") or "")
        if conn.get_option("host_key_checking") is False:
            cmd += ["-o", "StrictHostKeyChecking=no"]
        if conn.get_option("port"):
            cmd += ["-o", f"Port={conn.get_option('port')}"]
        key = conn.get_option("private_key_file")
        if key:
            cmd += ["-o", f"IdentityFile={os.path.expanduser(key)}"]
        cmd += ["-o", "KbdInteractiveAuthentication=no", "-o", "PasswordAuthentication=no"]
        if conn.get_option("remote_user"):
            cmd += ["-o", f"User={conn.get_option('remote_user')}"]
        cmd += ["-o", f"ConnectTimeout={conn.get_option('timeout')}"]
        for opt in ("ssh_common_args", "ssh_extra_args"):
            cmd += shlex.split(conn.get_option(opt) or "")
        return cmd

    def _run_rsync(self, argv, progress_file, direction):
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out = bytearray()
        last = 0.0
        # rsync's progress2 line is rewritten with \r; split on both \r and \n.
        buf = b""
        while chunk := proc.stdout.read1(65536):
            out += chunk
            if not progress_file:
                continue
            buf = (buf + chunk).replace(b"\n", b"\r")
            *lines, buf = buf.split(b"\r")
            now = time.monotonic()
            for line in reversed(lines):
                match = _PROGRESS_RE.match(line)
                if match and now - last >= _PROGRESS_EVERY_S:
                    _write_progress(progress_file, direction, match)
                    last = now
                    break
        stderr = proc.stderr.read()
        rc = proc.wait()
        text = out.decode("utf-8", "replace")
        return rc, text, stderr.decode("utf-8", "replace")


def _write_progress(path, direction, match):
    data = {
        "direction": direction,
        "bytes": int(match.group(1).replace(b",", b"")),
        "percent": int(match.group(2)),
        "rate": match.group(3).decode(),
        "eta": match.group(4).decode(),
    }
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".progress.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
