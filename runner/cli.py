"""The `extcomp-ssh` command: run a step on an external host over SSH, or a part of one."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from runner import driver, metrics, sshgate
from runner.check import check_host
from runner.errors import EXIT_CODES, StepError, UsageError
from runner.mint_exec import entry_name, mint_spec, parse_words
from runner.progress import Progress
from runner.record import StepRecord, StepStore
from runner.stepfile import spec_from_args
from runner.steps import DEFAULT_ENTRY, DEFAULT_HELPER, HostSpec, Phase, StepResult
from runner.sweep import sweep_host

log = logging.getLogger("extcomp-ssh")

EPILOG = "exit codes:\n  0-255  the remote program's own exit code, when it ran\n" + "\n".join(
    f"  {code:<5}  {text}" for code, text in sorted(EXIT_CODES.items())
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _host_flags(p: argparse.ArgumentParser, *, with_host: bool = True) -> None:
    g = p.add_argument_group("host")
    if with_host:
        g.add_argument("--host", help="alias, host, user@host or user@host:port")
    g.add_argument("--key", help="private key file (default: ssh's own choice)")
    g.add_argument("--known-hosts", dest="known_hosts", help="pinned known_hosts file")
    g.add_argument("--inventory", help="Ansible inventory that defines --host")
    g.add_argument("--helper", help=f"helper path on the host (default {DEFAULT_HELPER})")
    g.add_argument(
        "--remote-base",
        dest="remote_base",
        help="work-dir base on the host (default: the site's, set by its key line; else /tmp)",
    )


def _step_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("step_file", nargs="?", help="YAML step file (flags override its keys)")
    _host_flags(p)
    p.add_argument("--name", help="step name, used in the step id (default: step)")
    p.add_argument(
        "--input", action="append", default=[], metavar="PATH", help="file or dir to push (repeat)"
    )
    p.add_argument("--results", metavar="DIR", help="local dir that receives the work dir")
    p.add_argument("--entry", help=f"entry script on the host (default {DEFAULT_ENTRY})")
    p.add_argument("--timeout", type=float, help="kill the remote program after this many s")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="rsync pattern not to pull back (repeat)",
    )
    p.add_argument("--keep", action="store_true", help="keep the remote work dir")
    p.add_argument("--force", action="store_true", help="replace a non-empty results dir")
    p.add_argument(
        "--reconnect-attempts",
        dest="reconnect_attempts",
        type=int,
        help="reconnections after a lost connection (default 8)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(args=[])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="extcomp-ssh",
        description=__doc__ + "\n\nArguments after `--` go to "
        "the entry script: extcomp-ssh run --host H --input f -- ARG...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument(
        "--metrics-textfile-dir",
        dest="metrics_textfile_dir",
        metavar="DIR",
        help="write one Prometheus textfile per step there (node-exporter's textfile dir; "
        f"default ${metrics.ENV}, else none)",
    )
    parser.add_argument(
        "--ssh-min-interval",
        dest="ssh_min_interval",
        metavar="S",
        help=f"at least S seconds between new ssh connections to one host, shared by all "
        f"steps of this account (default ${sshgate.ENV}, else "
        f"{sshgate.DEFAULT_MIN_INTERVAL_S:g}; 0 = off)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _step_flags(sub.add_parser("run", help="run a whole step: push, run, pull, clean"))
    _step_flags(sub.add_parser("push", help="create the work dir and push inputs (prints the id)"))
    for name, text in (
        ("exec", "start the entry script of a pushed step and wait for it"),
        ("pull", "pull a step's work dir into its results dir"),
        ("clean", "remove a step's work dir from the host (stops its program)"),
        ("resume", "finish a step from its record, from where it stopped"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("step_id")
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
    st = sub.add_parser("status", help="show a step's record (and the host's view)")
    st.add_argument("step_id")
    st.add_argument("--remote", action="store_true", help="also ask the host")
    st.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="list recorded steps")
    ls.add_argument("--json", action="store_true")
    me = sub.add_parser("mint-exec", help="the original MInt SSH sample's command line")
    me.add_argument(
        "words",
        nargs="+",
        metavar="KEY:VALUE",
        help="client_name:HOST client_cmd:ENTRY client_files:F1,F2",
    )
    _host_flags(me, with_host=False)
    me.add_argument("--timeout", type=float, help="kill the remote program after this many s")
    ck = sub.add_parser(
        "check",
        help="can we connect; are the helper, rsync, entry script there",
        description="Exits 0 when ready, else with the code a step would exit with for the "
        "first failed check (see the table in extcomp-ssh --help): 255 unreachable, 252 host "
        "key, 253 auth, 254 refused by the gate, 127 helper/rsync/entry missing, 126 entry "
        "not executable, 125 work-dir base unusable.",
    )
    ck.add_argument("target", metavar="HOST", help="alias, host, user@host or user@host:port")
    _host_flags(ck, with_host=False)
    ck.add_argument("--entry", default=DEFAULT_ENTRY)
    ck.add_argument("--json", action="store_true")
    sw = sub.add_parser(
        "sweep",
        help="list and remove a host's orphaned work dirs",
        description="Remove the work dirs under the host's base whose last activity is older "
        "than --older-than days and whose program does not run (steps that never cleaned up), "
        "through the same gate as a step. Never a running step's dir, never through a symlink, "
        "never outside the base. Try --dry-run first.",
    )
    sw.add_argument("target", metavar="HOST", help="alias, host, user@host or user@host:port")
    sw.add_argument(
        "--older-than",
        dest="older_than",
        type=float,
        required=True,
        metavar="DAYS",
        help="only dirs idle for more than DAYS days (fractions allowed)",
    )
    sw.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    _host_flags(sw, with_host=False)
    sw.add_argument("--json", action="store_true")
    return parser


def _progress(store: StepStore, step_id: str | None = None) -> Progress:
    progress = Progress()
    if step_id is not None:
        progress.progress_file = store.step_dir(step_id) / "progress.json"
    return progress


def _emit_result(result: StepResult, as_json: bool) -> int:
    if as_json:
        data = asdict(result)
        data["results_dir"] = str(result.results_dir) if result.results_dir else None
        print(json.dumps(data, sort_keys=True))
    else:
        print(result.summary(), file=sys.stderr)
    return result.exit_code


def _record_view(record: StepRecord) -> dict[str, object]:
    return {
        "step_id": record.step_id,
        "host": record.spec.get("host", {}).get("host"),
        "work_id": record.work_id,
        "phases_done": record.phases_done,
        "remote": record.remote,
        "outcome": record.outcome,
        "exit_code": record.exit_code,
        "reason": record.reason,
        "bytes_pushed": record.bytes_pushed,
        "bytes_pulled": record.bytes_pulled,
        "seconds": record.seconds,
        "results_dir": record.spec.get("results_dir"),
    }


def _cmd_run(ns: argparse.Namespace, store: StepStore) -> int:
    spec = spec_from_args(ns)
    spec.validate()
    driver.check_results_dir(spec)
    record = store.new(spec)
    print(f"step {record.step_id}", file=sys.stderr)
    progress = _progress(store, record.step_id)
    result = driver.complete(driver.StepDriver(store, record, progress), driver.step_phases(spec))
    return _emit_result(result, ns.json)


def _cmd_push(ns: argparse.Namespace, store: StepStore) -> int:
    spec = spec_from_args(ns)
    spec.validate()
    record = store.new(spec)
    driver.run_part(
        record.step_id,
        (Phase.MKDIR, Phase.PUSH),
        store=store,
        progress=_progress(store, record.step_id),
    )
    print(json.dumps({"step_id": record.step_id}) if ns.json else record.step_id)
    return 0


def _cmd_part(ns: argparse.Namespace, store: StepStore) -> int:
    phases = {"exec": (Phase.START, Phase.WAIT), "pull": (Phase.PULL,), "clean": (Phase.CLEAN,)}
    record = driver.run_part(
        ns.step_id, phases[ns.command], store=store, progress=_progress(store, ns.step_id)
    )
    view = _record_view(record)
    print(json.dumps(view) if ns.json else f"{ns.command}: done ({record.step_id})")
    if ns.command == "exec":
        rc = record.remote.get("rc")
        return rc if isinstance(rc, int) else 125
    return 0


def _cmd_resume(ns: argparse.Namespace, store: StepStore) -> int:
    result = driver.resume_step(ns.step_id, store=store, progress=_progress(store, ns.step_id))
    return _emit_result(result, ns.json)


def _cmd_status(ns: argparse.Namespace, store: StepStore) -> int:
    record = driver.remote_status(ns.step_id, store=store) if ns.remote else store.load(ns.step_id)
    view = _record_view(record)
    if ns.json:
        print(json.dumps(view))
    else:
        for key, value in view.items():
            print(f"{key:13} {value}")
    return 0


def _cmd_list(ns: argparse.Namespace, store: StepStore) -> int:
    views = [_record_view(r) for r in store.list()]
    if ns.json:
        print(json.dumps(views))
    for v in [] if ns.json else views:
        print(f"{v['step_id']:40} {v['outcome'] or 'unfinished':12} rc={v['exit_code']}")
    return 0


def _cmd_check(ns: argparse.Namespace, store: StepStore) -> int:
    host = HostSpec.parse(
        ns.target,
        key=Path(ns.key).expanduser() if ns.key else None,
        known_hosts=Path(ns.known_hosts).expanduser() if ns.known_hosts else None,
        inventory=Path(ns.inventory).expanduser() if ns.inventory else None,
    )
    report = check_host(
        host,
        helper=ns.helper or DEFAULT_HELPER,
        entry=ns.entry,
        remote_base=ns.remote_base,
        store=store,
    )
    if ns.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "exit_code": report.exit_code,
                    "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in report.lines],
                }
            )
        )
    else:
        for check, ok, detail in report.lines:
            print(f"{check:8} {'ok' if ok else 'FAIL':4}  {detail}")
        print("verdict  " + ("ready" if report.ok else f"NOT ready (exit {report.exit_code})"))
    return report.exit_code


def _cmd_mint_exec(ns: argparse.Namespace, store: StepStore) -> int:
    spec = mint_spec(
        ns.words,
        workdir=Path.cwd(),
        key=Path(ns.key).expanduser() if ns.key else None,
        known_hosts=Path(ns.known_hosts).expanduser() if ns.known_hosts else None,
        helper=ns.helper,
        remote_base=ns.remote_base,
        timeout=ns.timeout,
    )
    _, mapped = entry_name(parse_words(ns.words)["client_cmd"])
    if mapped:
        print(mapped, file=sys.stderr)
    try:
        result = driver.run_step(spec, store=store, progress=Progress())
    except StepError as exc:
        print(f"extcomp-ssh: {exc.reason}", file=sys.stderr)
        return 1  # the original sample's contract: 0 or 1
    print(result.summary(), file=sys.stderr)
    return 0 if result.exit_code == 0 else 1


def _cmd_sweep(ns: argparse.Namespace, store: StepStore) -> int:
    host = HostSpec.parse(
        ns.target,
        key=Path(ns.key).expanduser() if ns.key else None,
        known_hosts=Path(ns.known_hosts).expanduser() if ns.known_hosts else None,
        inventory=Path(ns.inventory).expanduser() if ns.inventory else None,
    )
    report = sweep_host(
        host,
        older_than_days=ns.older_than,
        dry_run=ns.dry_run,
        helper=ns.helper or DEFAULT_HELPER,
        remote_base=ns.remote_base,
        store=store,
    )
    if ns.json:
        print(json.dumps({**asdict(report), "removed": report.removed}))
        return 0
    now = time.time()
    for d in report.dirs:
        age = f"{(now - d.last_activity) / 86400:.1f} d" if d.last_activity else "?"
        size = f"{d.bytes / 2**20:.1f} MiB" if d.bytes is not None else "?"
        note = f" ({d.why})" if d.why else ""
        print(f"{d.id}  {d.state or '-':8} {age:>8} {size:>11}  {d.action}{note}")
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{report.host}:{report.base}: {verb} "
        f"{sum(1 for d in report.dirs if d.action in ('removed', 'would remove'))} of "
        f"{len(report.dirs)} work dirs idle for more than {report.older_than_days:g} days"
    )
    return 0


COMMANDS = {
    "run": _cmd_run,
    "push": _cmd_push,
    "exec": _cmd_part,
    "pull": _cmd_part,
    "clean": _cmd_part,
    "resume": _cmd_resume,
    "status": _cmd_status,
    "list": _cmd_list,
    "check": _cmd_check,
    "mint-exec": _cmd_mint_exec,
    "sweep": _cmd_sweep,
}


def _textfile_dir(raw: str) -> None:
    """Check the flag's dir now (a usage error, not a warning after a long step) and pass it
    on the way the environment variable would."""
    path = Path(raw).expanduser()
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(
            f"--metrics-textfile-dir {raw}: not a writable dir; create it (node-exporter's "
            "--collector.textfile.directory) or give another"
        )
    os.environ[metrics.ENV] = str(path.resolve())


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(format="extcomp-ssh: %(message)s", level=logging.WARNING)
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        # Everything after the first `--` is for the entry script, split off before argparse so
        # that an optional positional (the step file) cannot swallow the first argument.
        extra: list[str] = []
        if "--" in words:
            at = words.index("--")
            words, extra = words[:at], words[at + 1 :]
        ns = build_parser().parse_args(words)
        if extra:
            if ns.command not in ("run", "push"):
                raise UsageError(f"extcomp-ssh {ns.command} takes no entry-script arguments")
            ns.args = extra
        if ns.verbose:
            logging.getLogger().setLevel(logging.DEBUG if ns.verbose > 1 else logging.INFO)
        if ns.ssh_min_interval is not None:
            # The flag wins over the environment; the gate reads the variable (so does the
            # Python API), and checks it: a bad value is a usage error (exit 2) there.
            os.environ[sshgate.ENV] = ns.ssh_min_interval
        sshgate.min_interval()
        if ns.metrics_textfile_dir is not None:
            _textfile_dir(ns.metrics_textfile_dir)
        return COMMANDS[ns.command](ns, StepStore())
    except StepError as exc:
        print(f"extcomp-ssh: {exc.reason}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("extcomp-ssh: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
