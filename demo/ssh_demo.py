"""SSH-mode demo: a private sshd on 127.0.0.1 as the "external host", and one sample step.

The host accepts only a key restricted to the extcomp-remote gate (as a real site would set it
up); the step pushes two input files, runs the sample entry script (program C), which calls the
site's sample program (program D) and deletes a secret file before the work dir is pulled back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runner import HostSpec, StepSpec, run_step
from runner.check import check_host
from runner.progress import Progress
from runner.record import StepStore
from tests.fixtures.sshd import start_sshd, stop_sshd

SAMPLE = {
    "structure.txt": "Fe 0.0 0.0 0.0\nFe 0.5 0.5 0.5\n",
    "conditions.txt": "temperature 1273 K\npressure 1 atm\ntime 3600 s\n",
}


def run(var_dir: Path) -> int:
    print("SSH mode demo")
    root = var_dir / "ssh"
    shutil.rmtree(root, ignore_errors=True)
    host = start_sshd(root / "host")
    try:
        print(
            f"  external host  private sshd on 127.0.0.1:{host.port} (pid {host.pid}), key "
            "restricted to the extcomp-remote gate"
        )
        spec_host = HostSpec.parse(host.target, key=host.gated_key, known_hosts=host.known_hosts)
        store = StepStore(root / "state")
        report = check_host(
            spec_host,
            helper=host.helper,
            entry="execute_remote-side_program_ssh.sh",
            remote_base=str(host.base),
            store=store,
        )
        for check, ok, detail in report.lines:
            print(f"  check {check:8} {'ok' if ok else 'FAIL'}  {detail}")
        if not report.ok:
            print("  the host is not ready; see the lines above")
            return 1
        inputs = root / "inputs"
        inputs.mkdir(parents=True)
        for name, text in SAMPLE.items():
            (inputs / name).write_text(text)
        spec = StepSpec(
            host=spec_host,
            results_dir=root / "results",
            inputs=tuple(sorted(inputs.iterdir())),
            args=("--model", "demo"),
            helper=host.helper,
            remote_base=str(host.base),
            name="demo",
        )
        result = run_step(spec, store=store, progress=Progress())
        print(f"  {result.summary()}")
        summary = spec.results_dir / "summary.txt"
        for line in summary.read_text().splitlines():
            print(f"    | {line}")
        leaked = sorted(p.name for p in spec.results_dir.rglob("*.secret"))
        print(
            f"  secret files pulled back: {leaked or 'none (deleted on the host, as configured)'}"
        )
        print(f"  results are in {spec.results_dir}")
        return result.exit_code
    finally:
        stop_sshd(host)
