from pathlib import Path

from runner.driver import run_step
from runner.steps import HostSpec, StepSpec


def test_sample_step_runs(ssh_host, tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("hello world\nsecond line\n")
    spec = StepSpec(
        host=HostSpec.parse(ssh_host.target, key=ssh_host.key, known_hosts=ssh_host.known_hosts),
        results_dir=tmp_path / "out",
        inputs=(inp,),
        args=("a", "b"),
        helper=ssh_host.helper,
        remote_base=str(ssh_host.base),
    )
    result = run_step(spec)
    print(result)
    assert result.exit_code == 0
    assert (tmp_path / "out" / "summary.txt").read_text().startswith("in.txt\t2 lines")
    assert "arguments: a b" in (tmp_path / "out" / "remote_program_exec.log").read_text()
