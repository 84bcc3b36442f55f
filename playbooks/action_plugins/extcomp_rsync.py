"""Action plugin: rsync a step's files over the task's own ssh connection, from the controller.

It runs in the ansible-playbook process (no module shipped anywhere, no Python on the host) and
builds rsync's `-e` command from the same connection options Ansible's ssh plugin uses, so rsync
rides the ControlMaster connection the raw tasks opened: one handshake per step. Progress goes to
a small JSON file the runner shows as a progress bar; the result carries bytes and seconds. A pull
that a lost connection cut short resumes: completed files are skipped, and the file in flight is
kept in a partial dir and finished from where it stopped.

A push or a pull may already have been done by the runner itself, beside ansible-playbook, with
the same rsync (runner.transfer): the push while ansible-playbook starts up, the pull of a
program that ended within the start's own answer. Its answer in `answer_file` (waited for up to
`wait` seconds) is then this task's result. Without a successful answer the rsync is run here;
rsync sends only what is not there yet, so running it twice costs a comparison, never a second
copy.
"""

from __future__ import annotations

import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from runner.answers import read_answer
from runner.transfer import rsync_argv, rsync_remote, run_rsync, total_bytes


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(
        (
            "direction",
            "sources",
            "remote_dir",
            "dest",
            "exclude",
            "progress_file",
            "answer_file",
            "wait",
        )
    )

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        direction = args.get("direction")
        remote_dir = str(args.get("remote_dir") or "")
        if direction not in ("push", "pull") or not remote_dir:
            raise AnsibleActionFail("extcomp_rsync needs direction push|pull and remote_dir")
        remote = rsync_remote(self._connection.get_option("host"), remote_dir)
        sources = [str(s) for s in args.get("sources") or []]
        dest = str(args.get("dest") or "")
        if direction == "push" and not sources:
            raise AnsibleActionFail("extcomp_rsync push needs sources")
        if direction == "pull":
            if not dest:
                raise AnsibleActionFail("extcomp_rsync pull needs dest")
            os.makedirs(dest, exist_ok=True)
        argv = rsync_argv(
            direction,
            self._ssh_command(),
            remote,
            sources=sources,
            dest=dest,
            exclude=[str(p) for p in args.get("exclude") or []],
        )
        answer = read_answer(str(args.get("answer_file") or ""), float(args.get("wait") or 0))
        if answer is not None and answer.get("rc") == 0:
            stdout = str(answer.get("stdout", ""))
            rc, stderr, moved = 0, "", total_bytes(stdout)
            seconds = float(answer.get("seconds") or 0.0)
            result["answered_beside"] = True
        else:
            done = run_rsync(argv, args.get("progress_file"), direction)
            rc, stdout, stderr, moved, seconds = (
                done.rc,
                done.stdout,
                done.stderr,
                done.bytes,
                done.seconds,
            )
        result.update(
            rc=rc,
            cmd=argv,
            stdout=stdout,
            stderr=stderr,
            direction=direction,
            bytes=moved,
            seconds=round(seconds, 3),
            changed=True,
        )
        if rc != 0:
            result["failed"] = True
            result["msg"] = f"rsync {direction} failed (rc {rc}): {stderr.strip()[-2000:]}"
        return result

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
