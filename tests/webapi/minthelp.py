"""Helpers for the mint-mode tool tests: site programs, and our poller and `wf` as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JP_STDOUT, JP_STDERR = "計算標準出力.txt", "計算標準エラー出力.txt"

# Site programs, run by our poller through its allow-list (each is one executable file).
PROGRAMS = {
    "sample": """
import os, pathlib, sys
cwd = pathlib.Path.cwd()
assert os.environ["CALC_DIR"] == str(cwd), (os.environ.get("CALC_DIR"), cwd)
assert not any(k.startswith("EXTCOMP_") for k in os.environ), "secrets leaked"
text = (cwd / "in.txt").read_text() if (cwd / "in.txt").exists() else "none"
(cwd / "out.txt").write_text(text.upper())
print("hello from sample")
print("a warning", file=sys.stderr)
""",
    "fail": """
import pathlib, sys
pathlib.Path("out.txt").write_text("partial")
print("working")
print("boom: the solver diverged", file=sys.stderr)
sys.exit(3)
""",
    "nofile": """
print("made nothing")
""",
    "sleep": """
import os, pathlib, time
log = pathlib.Path(os.environ["MINT_TEST_DIR"]) / "runs.log"
with log.open("a") as fh:
    fh.write(f"{os.getpid()}\\n")
flag = pathlib.Path(os.environ["MINT_TEST_DIR"]) / "go"
while not flag.exists():
    time.sleep(0.05)
pathlib.Path("out.txt").write_text("slept")
""",
    "copy": """
import shutil
shutil.copyfile("big.bin", "out.bin")
""",
}


def write_programs(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, body in PROGRAMS.items():
        path = directory / name
        path.write_text(f"#!{sys.executable}\n{body.lstrip()}")
        path.chmod(0o755)
        paths[name] = path
    return paths


# Runs a module as __main__ and, at exit, writes its own VmHWM (KiB) to $MINT_PEAK_FILE: the
# process's peak RSS since exec (ru_maxrss of a child also counts the forked parent's pages).
_PEAK = (
    "import atexit, os, runpy, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(os.environ['MINT_PEAK_FILE'], 'w').write(line.split()[1])\n"
    "atexit.register(peak)\n"
    "sys.argv[0] = sys.argv[1]\n"
    "del sys.argv[1]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def _peak_kib(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTCOMP_")}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **(extra or {})}


@dataclass
class PollerProc:
    proc: subprocess.Popen[bytes]
    log: Path
    peak_file: Path

    @property
    def peak_kib(self) -> int:
        """The poller's own peak RSS (KiB), known once it exited normally."""
        return _peak_kib(self.peak_file)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"poller did not exit in time; log:\n{self.text()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_poller(
    url: str,
    site: str,
    token: str,
    base: Path,
    programs: dict[str, Path],
    *extra: str,
    allow: tuple[str, ...] = ("sample", "fail", "nofile", "sleep", "copy"),
    env: dict[str, str] | None = None,
) -> PollerProc:
    """`extcomp-poller --protocol mint SITE URL - …` with the token in a 0600 file."""
    base.mkdir(parents=True, exist_ok=True)
    token_file = base / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    argv = [
        sys.executable,
        "-c",
        _PEAK,
        "webapi.poller.cli",
        "--protocol",
        "mint",
        site,
        url,
        "-",
        f"calc_base:{base / 'work'}",
        "retry:3,0.3",
        "--token-file",
        str(token_file),
        "--state-dir",
        str(base / "state"),
        "--poll-interval",
        "0.1",
        *extra,
    ]
    for name in allow:
        argv += ["--allow", f"{name}={programs[name]}"]
    log = base / f"poller-{time.monotonic_ns()}.log"
    peak = log.with_suffix(".peak")
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=_env({**(env or {}), "MINT_PEAK_FILE": str(peak)}),
        )
    return PollerProc(proc, log, peak)


@dataclass
class WfResult:
    code: int
    stderr: str
    peak_kib: int


@dataclass
class WfProc:
    proc: subprocess.Popen[bytes]
    peak_file: Path


def start_wf(
    url: str,
    site: str,
    token: str,
    command: str,
    inputs: str,
    outputs: str,
    cwd: Path,
    *extra: str,
) -> WfProc:
    """`extcomp-api wf URL SITE - COMMAND IN OUT` with the token in the environment."""
    cwd.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-c",
        _PEAK,
        "webapi.cli",
        "wf",
        url,
        site,
        "-",
        command,
        inputs,
        outputs,
        "--poll-interval",
        "0.1",
        "--timeout",
        "90",
        *extra,
    ]
    peak = cwd.parent / f"wf-{time.monotonic_ns()}.peak"
    env = _env({"EXTCOMP_API_TOKEN": token, "MINT_PEAK_FILE": str(peak)})
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    return WfProc(proc, peak)


def finish_wf(wf: WfProc, timeout: float = 90) -> WfResult:
    try:
        _out, err = wf.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        wf.proc.kill()
        wf.proc.communicate()
        raise AssertionError("wf did not finish in time") from None
    return WfResult(wf.proc.returncode, err.decode("utf-8", "replace"), _peak_kib(wf.peak_file))


def run_wf(*args: str, cwd: Path, extra: tuple[str, ...] = ()) -> WfResult:
    url, site, token, command, inputs, outputs = args
    return finish_wf(start_wf(url, site, token, command, inputs, outputs, cwd, *extra))
