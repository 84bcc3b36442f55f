#!/usr/bin/python
"""Documentation of the extcomp_rsync action; action_plugins/extcomp_rsync.py does the work."""

DOCUMENTATION = r"""
module: extcomp_rsync
short_description: rsync a step's files over the task's own ssh connection
description:
  - Runs rsync on the controller with the same ssh options (port, user, key, pinned known_hosts,
    ControlMaster socket) as the task's ssh connection, so it needs no Python on the host and
    passes a forced-command gate that confines rsync to the work dirs.
options:
  direction:
    description: C(push) local sources into the work dir, or C(pull) the whole work dir back.
    type: str
    required: true
    choices: [push, pull]
  sources:
    description: Local files and dirs to push (each lands under its own name).
    type: list
    elements: str
  remote_dir:
    description: The work dir as rsync names it on the host (relative through the gate).
    type: str
    required: true
  dest:
    description: Local dir that receives the pulled work dir (pull only).
    type: str
  exclude:
    description: rsync exclude patterns for the pull.
    type: list
    elements: str
  progress_file:
    description: Where to write progress as JSON while rsync runs.
    type: str
  answer_file:
    description:
      - The answer of the same rsync, run by the runner beside ansible-playbook (JSON with rc,
        stdout, stderr, seconds). A successful answer is the task's result; without one the
        rsync runs here.
    type: str
  wait:
    description: Seconds to wait for O(answer_file) to appear.
    type: float
    default: 0
author: mint-extcomp
"""

RETURN = r"""
bytes:
  description: Total size of the files transferred.
  type: int
  returned: always
seconds:
  description: Wall time of the transfer.
  type: float
  returned: always
"""

if __name__ == "__main__":
    raise SystemExit("extcomp_rsync runs as an action plugin on the controller only")
