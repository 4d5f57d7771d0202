"""A real `authledger serve` process on a free loopback port, on the test's database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.shared_secrets import TEST_KEY_ENCRYPTION_KEY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    database_url: str,
    data_dir: Path,
    *,
    port: int | None = None,
    workers: int = 1,
    module: str = "interfaces.cli",
    settings: Mapping[str, str] | None = None,
    **extra_env: str,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the service as a user would, and wait until it answers /readyz.

    `module` is run with `serve --port P --workers N`: the CLI, or a test's own
    build of the service.
    """
    port = port or free_port()
    env = {
        **os.environ,
        "AUTHLEDGER_DATABASE_URL": database_url,
        "AUTHLEDGER_DATA_DIR": str(data_dir),
        "AUTHLEDGER_BCRYPT_ROUNDS": "4",
        "AUTHLEDGER_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
        # Every test signs up from 127.0.0.1; the throttle has tests of its own.
        "AUTHLEDGER_SIGNUP_MAX_PER_ADDRESS": "1000000",
        # Tests replay a rotated token at once and expect a revocation: strict
        # mode. The default reuse interval has tests of its own.
        "AUTHLEDGER_REFRESH_REUSE_INTERVAL_S": "0",
        **(settings or {}),
        **extra_env,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log_path.read_text())
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become ready")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def server_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's data directory: it holds the development JWT secret."""
    return tmp_path_factory.mktemp("server-data")


@pytest.fixture(scope="module")
def server(module_database_url: str, server_data_dir: Path) -> Iterator[str]:
    """Base URL of a server shared by one module's tests."""
    process, base_url = start_server(module_database_url, server_data_dir)
    yield base_url
    stop_server(process)


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def admin(
    client: httpx.Client, module_database_url: str, server_data_dir: Path
) -> dict[str, str]:
    """The Authorization header of an admin of the module's server (modules
    that need the admin's tokens define their own `admin`)."""
    from tests.http.helpers import bearer, login, new_email  # noqa: PLC0415
    from tests.http.test_admin_and_audit import ADMIN_PASSWORD, cli  # noqa: PLC0415

    email = new_email()
    cli(module_database_url, server_data_dir, "users", "create-admin", email)
    return bearer(login(client, email, ADMIN_PASSWORD).json())
