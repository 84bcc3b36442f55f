"""Action plugin: one helper command on the host, or the answer the runner already got for it.

Like ansible.builtin.raw (the command line goes to the host over the task's ssh connection; no
Python is shipped), except that the runner may have sent the very same command itself while
ansible-playbook was starting up, over the master connection it opens meanwhile, and left the
answer in `answer_file` (JSON: rc, stdout, stderr). A successful answer is this task's result,
with no second round trip; without one (none within `wait` seconds, or a failure) the command is
sent here, so that every error is reported the way raw reports it. The command must be one that
may run twice (the runner uses it for `mkdir`, which answers `created: false` the second time).

One failure is taken as it is: ssh's own 255 (it could not reach or log in to the host) when the
connection may not retry (`reconnection_retries` 0, a host never reached before). Sending again
would only wait out the connect timeout a second time; the task fails unreachable with ssh's
message, as the ssh connection plugin would have failed it.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

from runner.answers import read_answer


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("cmd", "answer_file", "wait"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        cmd = str(args.get("cmd") or "")
        if not cmd:
            raise AnsibleActionFail("extcomp_helper needs cmd")
        data = read_answer(str(args.get("answer_file") or ""), float(args.get("wait") or 0))
        if data is not None and data.get("rc") == 255 and self._no_retries():
            stderr = str(data.get("stderr", "")).rstrip()
            raise AnsibleConnectionFailure(f"Failed to connect to the host via ssh: {stderr}")
        answer = _success(data)
        if answer is not None:
            result.update(answer, answered_beside=True)
        else:
            result.update(self._low_level_execute_command(cmd, executable=False))
        result["changed"] = True
        if result.get("rc") != 0:
            result["failed"] = True
            result["msg"] = "non-zero return code"
        return result

    def _no_retries(self) -> bool:
        try:
            return int(self._connection.get_option("reconnection_retries")) == 0
        except (KeyError, TypeError, ValueError, AttributeError):
            return False


def _success(data: dict[str, object] | None) -> dict[str, object] | None:
    """The task's result from a successful answer, or None."""
    if data is None or data.get("rc") != 0:
        return None
    stdout = str(data.get("stdout", ""))
    return {"rc": 0, "stdout": stdout, "stdout_lines": stdout.splitlines(), "stderr": ""}
