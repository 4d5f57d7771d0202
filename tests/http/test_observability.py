"""What an operator sees: /metrics scraped by a real Prometheus over two
workers, and log lines that are JSON and say nothing secret."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import infrastructure.instruments  # noqa: F401  (its families, in REGISTRY)
from tests.http.conftest import free_port, start_server, stop_server
from tests.http.helpers import PASSWORD, new_email
from tests.http.workers import call, connections_to_both_workers

pytestmark = [pytest.mark.http, pytest.mark.postgres]

LOCK_AFTER = 3


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def two_workers(
    module_database_url: str, server_data_dir: Path, metrics_port: int
) -> Iterator[tuple[psutil.Process, str]]:
    process, base_url = start_server(
        module_database_url,
        server_data_dir,
        workers=2,
        settings={
            "AUTHLEDGER_METRICS_PORT": str(metrics_port),
            "AUTHLEDGER_LOCKOUT_MAX_FAILURES": str(LOCK_AFTER),
        },
    )
    yield psutil.Process(process.pid), base_url
    stop_server(process)


@pytest.fixture(scope="module")
def prometheus(
    metrics_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Debian's Prometheus on loopback, scraping the service every second."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs it (apt-get)"
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: authledger\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not ready(url):
        assert process.poll() is None, (directory / "prometheus.log").read_text()
        assert time.monotonic() < deadline, "prometheus did not start"
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql})
    assert answer.status_code == 200, answer.text
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def scraped_after(prometheus: str, moment: float) -> dict[str, float]:
    """Every authledger sample of the first scrape to start after `moment`,
    summed over the labels it does not name (series name{label=...})."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        up = query(prometheus, 'timestamp(up{job="authledger"})')
        if up and float(up[0]["value"][1]) > moment + 1:
            assert query(prometheus, 'up{job="authledger"}')[0]["value"][1] == "1"
            break
        time.sleep(0.3)
    else:
        raise AssertionError("prometheus scraped nothing after the session")
    found: dict[str, float] = {}
    for series in query(prometheus, '{__name__=~"authledger_.+"}'):
        labels = {
            k: v for k, v in series["metric"].items() if k not in {"job", "instance"}
        }
        name = labels.pop("__name__")
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        found[f"{name}{{{shown}}}"] = float(series["value"][1])
    return found


def scripted_session(base_url: str, server: psutil.Process) -> None:
    """Two good logins, three failures that lock an account, one replayed
    refresh token: every step alternating between the two workers."""
    here, there = connections_to_both_workers(server, base_url)
    ada, bob = new_email(), new_email()
    for conn, email in ((here, ada), (there, bob)):
        assert (
            call(
                conn,
                "POST",
                "/api/auth/signup",
                body={"email": email, "password": PASSWORD},
            )[0]
            == 201
        )
    logins = [
        call(conn, "POST", "/api/auth/login", body={"email": ada, "password": PASSWORD})
        for conn in (here, there)
    ]
    assert [status for status, _ in logins] == [200, 200]
    for conn in (here, there, here):
        wrong = {"email": bob, "password": "not the password at all"}
        assert call(conn, "POST", "/api/auth/login", body=wrong)[0] == 401
    old = logins[0][1]["refresh_token"]
    assert (
        call(there, "POST", "/api/auth/refresh", body={"refresh_token": old})[0] == 200
    )
    assert (
        call(here, "POST", "/api/auth/refresh", body={"refresh_token": old})[0] == 401
    )
    here.close()
    there.close()


def test_prometheus_sees_the_sessions_outcomes_summed_over_both_workers(
    two_workers: tuple[psutil.Process, str], prometheus: str, metrics_port: int
) -> None:
    server, base_url = two_workers
    before = scraped_after(prometheus, time.time())

    scripted_session(base_url, server)

    after = scraped_after(prometheus, time.time())
    seen = {name: value - before.get(name, 0.0) for name, value in after.items()}
    assert seen["authledger_logins_total{outcome=success}"] == 2
    assert seen["authledger_logins_total{outcome=invalid_credentials}"] == 3
    assert seen["authledger_lockouts_total{}"] == 1
    assert seen["authledger_token_reuse_detections_total{}"] == 1
    assert seen["authledger_refreshes_total{outcome=success}"] == 1
    assert seen["authledger_refreshes_total{outcome=reused}"] == 1
    assert seen["authledger_signups_total{outcome=success}"] == 2
    assert (
        seen[
            "authledger_http_requests_total{method=POST,route=/api/auth/login,status=401}"
        ]
        == 3
    )
    assert (
        seen[
            "authledger_http_requests_total{method=POST,route=/api/auth/login,status=200}"
        ]
        == 2
    )
    assert seen["authledger_events_appended_total{type=Session.Revoked}"] >= 1
    assert after["authledger_read_model_lag_events{read_model=login_history}"] >= 0
    # What was scraped is valid to promtool and to the client library's parser
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    linted = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "authledger_http_request_duration_seconds",
        "authledger_read_model_lag_seconds",
        "authledger_password_hash_duration_seconds",
        "authledger_db_pool_connections",
        "authledger_event_append_duration_seconds",
    } <= families


USER_VALUED = re.compile(r"@|[0-9a-f]{8}-[0-9a-f]{4}-|\b\d{1,3}(\.\d{1,3}){3}\b")


def test_no_label_takes_a_value_from_a_request(
    two_workers: tuple[psutil.Process, str], metrics_port: int
) -> None:
    _, base_url = two_workers
    httpx.get(f"{base_url}/api/users/someone@example.com/{new_email()}")
    httpx.post(
        f"{base_url}/api/auth/login", json={"email": new_email(), "password": "x" * 12}
    )

    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for value in sample.labels.values():
                assert not USER_VALUED.search(value), (sample.name, value)
    assert 'route="unmatched"' in text


DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "authledger.json"
METRIC_NAME = re.compile(r"\bauthledger_[a-z_]+")
SUFFIX = re.compile(r"_(total|bucket|sum|count)$")


@pytest.mark.usefixtures("two_workers")
def test_every_panel_of_the_dashboard_is_valid_promql_over_metrics_we_serve(
    prometheus: str, metrics_port: int
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    # Served, or defined (a labelled counter shows once something is counted)
    families = {family.name for family in text_string_to_metric_families(text)}
    families |= {family.name for family in REGISTRY.collect()}
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]

    assert len(expressions) >= 12
    for expression in expressions:
        promql = expression.replace("$__rate_interval", "1m")
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql})
        assert answer.json()["status"] == "success", (expression, answer.text)
        for name in METRIC_NAME.findall(expression):
            assert SUFFIX.sub("", name) in families, (name, expression)
