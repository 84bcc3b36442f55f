#!/usr/bin/python
"""Documentation of the extcomp_helper action; action_plugins/extcomp_helper.py does the work."""

DOCUMENTATION = r"""
module: extcomp_helper
short_description: a helper command on the host, or the answer the runner already got for it
description:
  - Sends C(cmd) over the task's ssh connection as ansible.builtin.raw does (no Python on the
    host), unless the runner sent the same command beside ansible-playbook and left a
    successful answer in C(answer_file) within C(wait) seconds; then that answer is the result.
  - Only for commands that may run twice.
options:
  cmd:
    description: The helper command line (an allow-listed verb of extcomp-remote).
    type: str
    required: true
  answer_file:
    description: JSON file (rc, stdout, stderr) the runner writes when its own call ends.
    type: str
  wait:
    description: Seconds to wait for C(answer_file) before sending the command here.
    type: float
    default: 0
author: mint-extcomp
"""

EXAMPLES = r"""
- name: Create the work dir on the host
  extcomp_helper:
    cmd: "~/extcomp/bin/extcomp-remote mkdir 0c6f2f5e-2d9a-4c1e-9d0e-2f1b8f4f6a11"
    answer_file: /tmp/side-run001.json
    wait: 15
"""

RETURN = r"""
rc:
  description: The command's exit code.
  type: int
  returned: always
stdout:
  description: What the command printed (the helper's one JSON line).
  type: str
  returned: always
answered_beside:
  description: True when the runner's own answer was taken.
  type: bool
  returned: when the runner's answer was taken
"""

if __name__ == "__main__":
    raise SystemExit("extcomp_helper runs as an action plugin on the controller only")
