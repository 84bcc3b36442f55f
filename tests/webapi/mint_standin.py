"""Stand-ins for the original MInt programs, written from docs/mint-protocol.md: the workflow-side
client (`mi-system-wf.py`) and the site poller (`mi-system-remote.py`). They make the same calls
in the same order with the same payload shapes and quirks (`requests` with `json=`, a Bearer token,
`Content-Type: application/json` on GETs, a JSON body on get-calc-result, `["", "", ""]` for a
missing input, the two Japanese log names), minus the long sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

JP_STDOUT, JP_STDERR = "計算標準出力.txt", "計算標準エラー出力.txt"
PLACEHOLDER = {"content": "", "mimetype1": "", "mimetype2": ""}


class Proto:
    """The calls both programs share: root URL, headers, TLS verification, printed code/message."""

    def __init__(self, url: str, token: str, verify: str | bool) -> None:
        self.root = f"{url}/mi-distcomp-api/"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.verify = verify
        self.log: list[tuple[str, Any, str]] = []  # (call, code, message) as the programs print

    def call(self, method: str, name: str, **kw: Any) -> requests.Response:
        resp = requests.request(
            method, self.root + name, headers=self.headers, verify=self.verify, timeout=120, **kw
        )
        assert "Traceback" not in resp.text[:2000]
        if resp.headers.get("Content-Type", "").startswith("application/json"):
            first = resp.json()["errors"][0] if "errors" in resp.json() else {}
            if "errors" in resp.json():
                # Both programs print these two keys after their calls: they must exist.
                self.log.append((name, first["code"], first["message"]))
        return resp

    @staticmethod
    def first(resp: requests.Response) -> dict[str, Any]:
        doc: dict[str, Any] = resp.json()["errors"][0]
        return doc


@dataclass
class WfResult:
    exit_code: int
    accept_id: str | None = None
    status: str | None = None
    files: dict[str, dict[str, str]] = field(default_factory=dict)


class OriginalWorkflow(Proto):
    """`mi-system-wf.py`: register, allow, wait for the status, then the progress, fetch, write."""

    def __init__(self, url: str, site: str, token: str, verify: str | bool) -> None:
        super().__init__(url, token, verify)
        self.site = site

    def calc_info(
        self, command: str, inputs: dict[str, bytes | None], outputs: list[str], params: str
    ) -> dict[str, Any]:
        files = {}
        for name, data in inputs.items():
            if data is None:
                files[name] = ["", "", ""]  # a missing input: becomes an empty file
            else:
                files[name] = [base64.b64encode(data).decode(), "text/plain;", "charset=us-ascii"]
        results = {name: dict(PLACEHOLDER) for name in [*outputs, JP_STDOUT, JP_STDERR]}
        return {
            "command": command,
            "remote-site": self.site,
            "parameters": params,
            "parameter_files": files,
            "result_files": results,
        }

    def submit(
        self, command: str, inputs: dict[str, bytes | None], outputs: list[str], params: str = ""
    ) -> str | None:
        body = {"calc-info": self.calc_info(command, inputs, outputs, params)}
        resp = self.call("POST", "add-calcinfo", json=body)
        if resp.status_code != 200 or self.first(resp)["code"] != 200:
            return None
        accept_id: str = self.first(resp)["accept_id"]
        resp = self.call("POST", "allow-wait-calc", json={"accept_id": accept_id})
        if resp.status_code != 200 or self.first(resp)["code"] != 200:
            self.cancel(accept_id)
            return None
        return accept_id

    def cancel(self, accept_id: str) -> requests.Response:
        return self.call(
            "POST", "cancel-wait-calc", json={"accept_id": accept_id, "delete": "force"}
        )

    def wait_for(self, accept_id: str, route: str, wanted: tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = self.call("GET", route, params={"accept_id": accept_id})
            first = self.first(resp)
            value = first["message"].split(":")[1]  # the client splits at ':' unconditionally
            if first["code"] != 200:
                return f"error:{value}"
            if value in wanted:
                return str(value)
            time.sleep(0.05)
        raise TimeoutError(f"{route} did not reach {wanted}")

    def finish(self, accept_id: str, workdir: Path, timeout: float = 30) -> WfResult:
        status = self.wait_for(accept_id, "calc-status", ("completed", "abnormal"), timeout)
        if status.startswith("error:"):
            self.cancel(accept_id)
            return WfResult(1, accept_id, status)
        progress = self.wait_for(accept_id, "calc-progress", ("got return",), timeout)
        if progress.startswith("error:"):
            self.cancel(accept_id)
            return WfResult(1, accept_id, status)
        # The quirk: query parameter and a JSON body on the same GET.
        resp = self.call(
            "GET", "get-calc-result", params={"accept_id": accept_id}, json={"accept_id": accept_id}
        )
        first = self.first(resp)
        if resp.status_code != 200 or first["code"] != 200:
            self.cancel(accept_id)
            return WfResult(1, accept_id, status)
        files = first["result-info"]["result_files"]
        for name, entry in files.items():
            if entry["mimetype1"] != "Error":
                (workdir / name).write_bytes(base64.b64decode(entry["content"]))
        return WfResult(0 if status == "completed" else 1, accept_id, status, files)

    def run(
        self,
        command: str,
        inputs: dict[str, bytes | None],
        outputs: list[str],
        workdir: Path,
        params: str = "",
        timeout: float = 30,
    ) -> WfResult:
        accept_id = self.submit(command, inputs, outputs, params)
        if accept_id is None:
            return WfResult(1)
        return self.finish(accept_id, workdir, timeout)


class OriginalPoller(Proto):
    """`mi-system-remote.py`: poll calc-request, then params → start → run → end → results."""

    def __init__(
        self, site: str, url: str, token: str, calc_base: Path, verify: str | bool
    ) -> None:
        super().__init__(url, token, verify)
        self.site, self.calc_base = site, calc_base
        self.ignore_next = True  # the original ignores the first answer after start/each calc
        self.done: list[str] = []
        self.calc_infos: dict[str, dict[str, Any]] = {}

    def request(self) -> str | None:
        resp = self.call("GET", "calc-request", params={"site_id": self.site})
        if resp.status_code >= 400:
            return None  # the original retries later
        first = self.first(resp)
        if first["code"] != 200:
            return None  # "nothing to do"
        if self.ignore_next:
            self.ignore_next = False
            return None
        return str(first["accept_id"])

    def ids(self, accept_id: str) -> dict[str, str]:
        return {"accept_id": accept_id, "site_id": self.site}

    def params(self, accept_id: str) -> dict[str, Any] | None:
        resp = self.call("GET", "calc-params", params=self.ids(accept_id))
        if resp.status_code != 200 or "calc-info" not in resp.json():
            return None
        info: dict[str, Any] = resp.json()["calc-info"]
        self.calc_infos[accept_id] = info
        return info

    def run_program(self, accept_id: str, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        calc_dir = self.calc_base / accept_id
        calc_dir.mkdir(parents=True)
        for name, (content, _mime, _charset) in info["parameter_files"].items():
            (calc_dir / name).write_bytes(base64.b64decode(content))
        env = {**os.environ, "CALC_DIR": str(calc_dir)}
        with open(calc_dir / JP_STDOUT, "wb") as out, open(calc_dir / JP_STDERR, "wb") as err:
            # The original runs the command through a shell, no arguments, no timeout.
            code = subprocess.call(
                ["/bin/sh", "-c", info["command"]], cwd=calc_dir, env=env, stdout=out, stderr=err
            )
        results: dict[str, Any] = {}
        present = 0
        for name in info["result_files"]:
            path = calc_dir / name
            if path.is_file():
                present += name not in (JP_STDOUT, JP_STDERR)
                results[name] = {
                    "content": base64.b64encode(path.read_bytes()).decode(),
                    "mimetype1": "text/plain;",
                    "mimetype2": "charset=utf-8",
                }
            else:
                results[name] = {
                    "content": "",
                    "mimetype1": "Error",
                    "mimetype2": f"{name}: No such file or directory",
                }
        wanted = [n for n in info["result_files"] if n not in (JP_STDOUT, JP_STDERR)]
        ok = code == 0 and (present > 0 or not wanted)
        return ("calc end" if ok else "abnormal"), results

    def process(self, accept_id: str) -> bool:
        info = self.params(accept_id)
        if info is None:
            return False
        self.call("POST", "calc-params-complete", json=self.ids(accept_id))
        self.call("POST", "calc-start", json=self.ids(accept_id))
        result, files = self.run_program(accept_id, info)
        self.call("POST", "calc-end", json={**self.ids(accept_id), "result": result})
        self.call("POST", "send-results", json={**self.ids(accept_id), "result_files": files})
        self.call("POST", "end-send", json={**self.ids(accept_id), "result": "end send"})
        self.done.append(accept_id)
        self.ignore_next = True
        return True

    def poll_once(self) -> bool:
        accept_id = self.request()
        return accept_id is not None and self.process(accept_id)

    def serve(self, stop: threading.Event, interval: float = 0.05) -> None:
        while not stop.is_set():
            with contextlib.suppress(requests.ConnectionError):  # the original retries these
                self.poll_once()
            stop.wait(interval)


class PollerThread:
    """Run a OriginalPoller in the background for the length of a `with` block."""

    def __init__(self, poller: OriginalPoller) -> None:
        self.poller = poller
        self.stop = threading.Event()
        self.thread = threading.Thread(target=poller.serve, args=(self.stop,), daemon=True)

    def __enter__(self) -> OriginalPoller:
        self.thread.start()
        return self.poller

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
