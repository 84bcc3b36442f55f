"""Prometheus metrics of the real API server, scraped over HTTP(S) and parsed with
prometheus_client's own parser: who may scrape, what the numbers say after real traffic."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from webapi.errors import ConfigError
from webapi.poller.metrics import MetricsOutput, PollerMetrics
from webapi.server.config import parse_config

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def scrape(server: RunningServer, user: str = "admin") -> Samples:
    resp = Api(server, user).call("GET", "/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(resp.text)


def wait_for(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def claim(api: Api, site: str = "site-a", **body: Any) -> dict[str, Any] | None:
    resp = api.call("POST", f"/api/v1/sites/{site}/claim", json={"wait": 0, **body})
    assert resp.status_code in (200, 204), resp.text
    return resp.json() if resp.status_code == 200 else None


def test_only_admins_scrape_the_api_port(make_api_server: Callable[..., RunningServer]) -> None:
    server = make_api_server()
    for user, status in ((None, 401), ("alice", 403)):
        resp = Api(server, user).call("GET", "/metrics")
        assert resp.status_code == status
        assert "extcomp_" not in resp.text
    assert "extcomp_calcs" in scrape(server)


def test_metrics_follow_real_traffic(make_api_server: Callable[..., RunningServer]) -> None:
    server = make_api_server(claim_confirm_seconds=1)
    alice, admin = Api(server, "alice"), Api(server, "admin")
    before = scrape(server)
    assert value(before, "extcomp_calcs", site="site-a", state="queued") == 0
    assert "extcomp_poller_last_seen_timestamp_seconds" not in before

    # Three queued calcs (5 input bytes each), one claimed and finished, one claimed and never
    # confirmed (its short lease runs out), one requeued by an admin after a claim.
    calcs = [alice.queued({"in.txt": b"hello"})["id"] for _ in range(3)]
    mid = scrape(server)
    assert value(mid, "extcomp_calcs", site="site-a", state="queued") == 3
    assert value(mid, "extcomp_oldest_queued_timestamp_seconds", site="site-a") > 0
    put_route = "/api/v1/calcs/<calc_id>/inputs/<name:path>"
    assert value(mid, "extcomp_http_request_bytes_total", route=put_route) == 15
    assert value(mid, "extcomp_http_requests_total", route=put_route, status="200") == 3

    got = claim(alice, poller="p1")
    assert got is not None and got["calc"]["id"] == calcs[0]
    lease = got["lease"]["id"]
    done = alice.call(
        "POST",
        f"/api/v1/calcs/{calcs[0]}/finish",
        json={"lease": lease, "exit_code": 0, "results": []},
    )
    assert done.status_code == 200, done.text
    unconfirmed = claim(alice, poller="p2", confirm=True)
    assert unconfirmed is not None and unconfirmed["calc"]["id"] == calcs[1]
    third = claim(alice, poller="p3")
    assert third is not None and third["calc"]["id"] == calcs[2]
    assert admin.call("POST", f"/api/v1/admin/calcs/{calcs[2]}/requeue").status_code == 200
    assert claim(alice, site="site-b") is None  # an empty answer

    wait_for(
        lambda: value(scrape(server), "extcomp_lease_expiries_total", site="site-a") == 1,
        "the unconfirmed claim's lease to run out",
    )
    after = scrape(server)
    assert value(after, "extcomp_lease_expiries_total", site="site-a", then="requeued") == 1
    assert value(after, "extcomp_requeues_total", site="site-a", cause="lease") == 1
    assert value(after, "extcomp_requeues_total", site="site-a", cause="admin") == 1
    assert value(after, "extcomp_calcs", site="site-a", state="succeeded") == 1
    assert value(after, "extcomp_calcs", site="site-a", state="queued") == 2
    assert value(after, "extcomp_calcs", site="site-b", state="queued") == 0
    assert value(after, "extcomp_pickup_seconds_count", site="site-a") == 3
    assert value(after, "extcomp_claim_duration_seconds_count", site="site-a") == 3
    assert value(after, "extcomp_claim_duration_seconds_count", site="site-b", outcome="empty") == 1
    seen = value(after, "extcomp_poller_last_seen_timestamp_seconds", site="site-a")
    assert abs(seen - time.time()) < 600  # a timestamp of this run, not a duration or zero
    # Route templates, never raw paths: no calc id in any label, so cardinality stays bounded.
    labels = [lab for samples in after.values() for lab, _ in samples]
    assert not any(cid in str(lab) for lab in labels for cid in calcs)
    claim_route = "/api/v1/sites/<site>/claim"
    assert value(after, "extcomp_http_requests_total", route=claim_route, status="204") == 1
    assert value(after, "extcomp_http_requests_total", route="(unmatched)") == 0
    assert alice.call("GET", f"/no/such/{calcs[0]}").status_code == 404
    assert value(scrape(server), "extcomp_http_requests_total", route="(unmatched)") == 1

    # A download counts its bytes out under the route template.
    get_route = "/api/v1/calcs/<calc_id>/inputs/<name:path>"
    before_out = value(after, "extcomp_http_response_bytes_total", route=get_route)
    resp = admin.call("GET", f"/api/v1/calcs/{calcs[0]}/inputs/in.txt")
    assert resp.status_code == 200 and resp.content == b"hello"
    out = value(scrape(server), "extcomp_http_response_bytes_total", route=get_route)
    assert out - before_out == 5


def test_separate_loopback_listener(make_api_server: Callable[..., RunningServer]) -> None:
    server = make_api_server(metrics_listen="127.0.0.1:0")
    url = server.metrics_url
    assert url is not None and url.startswith("http://127.0.0.1:")
    resp = requests.get(url, timeout=10)  # no token: only this host can reach it
    assert resp.status_code == 200
    assert "extcomp_calcs" in parse(resp.text)
    assert requests.get(url.replace("/metrics", "/api/v1/sites"), timeout=10).status_code == 404


def test_metrics_listen_must_be_loopback(tmp_path: Path) -> None:
    base = {"data_dir": "d", "users_file": "u.yml"}
    conf = parse_config({**base, "metrics_listen": "[::1]:9464"}, tmp_path / "c.yml")
    assert conf.metrics_listen == ("::1", 9464)
    for bad, words in (
        ("0.0.0.0:9464", "not a loopback address"),
        ("127.0.0.1", "expected HOST:PORT"),
        (9464, "expected HOST:PORT"),
    ):
        with pytest.raises(ConfigError, match=words) as err:
            parse_config({**base, "metrics_listen": bad}, tmp_path / "c.yml")
        assert "metrics_listen" in str(err.value) and "\n" not in str(err.value)


ALERTS = Path(__file__).resolve().parents[2] / "docs" / "prometheus-alerts.yml"
# What the alert rules must do, run by `promtool test rules`: each alert fires on a series that
# should trip it, and the poller alert stays quiet while a poller is seen.
ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'extcomp_poller_last_seen_timestamp_seconds{{site="gone"}}'
        values: '0x30'
      - series: 'extcomp_poller_last_seen_timestamp_seconds{{site="alive"}}'
        values: '0+60x30'
      - series: 'extcomp_oldest_queued_timestamp_seconds{{site="gone"}}'
        values: '0x60'
      - series: 'extcomp_lease_expiries_total{{site="gone",then="requeued"}}'
        values: '0 1 2 3 4 5'
      - series: 'extcomp_poller_last_successful_poll_timestamp_seconds{{site="s",poller="p"}}'
        values: '0+60x10 600x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: ExtcompPollerAbsent
        exp_alerts: []
      - eval_time: 20m
        alertname: ExtcompPollerAbsent
        exp_alerts:
          - exp_labels: {{site: gone, severity: warning}}
      - eval_time: 40m
        alertname: ExtcompCalcsWaitingLong
        exp_alerts:
          - exp_labels: {{site: gone, severity: warning}}
      - eval_time: 10m
        alertname: ExtcompPollerNotPolling
        exp_alerts: []
      - eval_time: 25m
        alertname: ExtcompPollerNotPolling
        exp_alerts:
          - exp_labels: {{site: s, poller: p, severity: warning}}
      - eval_time: 5m
        alertname: ExtcompLeaseExpiries
        exp_alerts:
          - exp_labels: {{site: gone, then: requeued, severity: warning}}
"""


def _names(samples: Samples, text: str) -> set[str]:
    names = set(samples)
    for family in text_string_to_metric_families(text):
        names.add(family.name)  # a labelled metric nobody touched yet has no samples
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_alert_rules_check_and_name_real_metrics(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        # scripts/bootstrap-system.sh installs Debian's `prometheus` (promtool); only a machine
        # that truly cannot install it may opt out, and then gets the parsing checks alone.
        if os.environ.get("EXTCOMP_NO_PROMTOOL") != "1":
            pytest.fail("promtool is missing: run scripts/bootstrap-system.sh (apt: prometheus)")
    else:
        check = subprocess.run(
            [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        # The firing logic (expr, for, labels) is tested on a copy without the annotations,
        # whose wording `check rules` has already validated as templates.
        bare = yaml.safe_load(ALERTS.read_text())
        for group in bare["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(bare))
        tests = tmp_path / "alerts-test.yml"
        tests.write_text(ALERT_TESTS.format(rules=tmp_path / "rules.yml"))
        run = subprocess.run(
            [promtool, "test", "rules", str(tests)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "ExtcompPollerAbsent",
        "ExtcompPollerNotPolling",
        "ExtcompCalcsWaitingLong",
        "ExtcompLeaseExpiries",
    }
    server = make_api_server()
    text = Api(server, "admin").call("GET", "/metrics").text
    exposed = _names(parse(text), text)
    poller = PollerMetrics("site-a", "p1", MetricsOutput())
    poller.polled(claimed=True)
    poller.ran("sample", 0)
    poller.moved(inputs=1, results=1)
    exposed |= _names(parse(poller.render()), poller.render())
    used = {name for r in rules for name in re.findall(r"\bextcomp_[a-z_]+", r["expr"])}
    assert used and used <= exposed, f"not exposed: {sorted(used - exposed)}"
