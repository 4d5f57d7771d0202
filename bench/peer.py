"""The peer: fastapi-users 15 (bcrypt 12, JWT bearer, PostgreSQL), from bench/peer/.

It runs from its own virtualenv (`.peer-venv`: fastapi-users is no dependency
of the service), in its own database on the bench's embedded server, reached
over the unix socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.seed import PASSWORD
from bench.setup import REPO, Process, free_port

if TYPE_CHECKING:
    from bench.setup import Stack

PEER_SOURCE = REPO / "bench" / "peer"
VENV = REPO / ".peer-venv"
PACKAGES = (
    "fastapi-users[sqlalchemy]==15.0.5",
    "pwdlib[bcrypt]",
    "uvicorn",
    "uvloop",
    "httptools",
    "asyncpg",
)
IMPORTS = "import fastapi_users, pwdlib, uvicorn, uvloop, httptools, asyncpg"


def ensure_venv() -> Path:
    """`.peer-venv`, created and filled the first time."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", IMPORTS]
    if python.exists() and subprocess.run(probe, check=False).returncode == 0:
        return python
    print("creating .peer-venv for the peer (fastapi-users 15.0.5)", flush=True)
    subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "pip"), "install", "--quiet", *PACKAGES]
    subprocess.run(pip, check=True)
    return python


class Peer:
    """The peer's two workers on a free port; `stop()` ends them."""

    def __init__(self, stack: Stack, workers: int = 2) -> None:
        python = ensure_venv()
        self.dir = stack.tmp / "peer"
        shutil.copytree(PEER_SOURCE, self.dir, ignore=shutil.ignore_patterns("__*"))
        self.dir.chmod(0o755)
        stack.create_database("peer")
        url = f"postgresql+asyncpg://postgres@/peer?host={stack.socket_dir}"
        env = {"DATABASE_URL": url}
        init = [str(python), "app.py", "--create-tables"]
        subprocess.run(init, cwd=self.dir, env={**os.environ, **env}, check=True)
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        argv = [str(python), "serve.py", str(workers), str(port)]
        self.process = Process(argv, env, stack.tmp / "peer.log", cwd=self.dir)
        try:
            self.process.wait_listening(port, workers, f"{self.base_url}/openapi.json")
        except BaseException:
            self.process.stop()
            raise

    def register(self, emails: list[str]) -> None:
        """Create accounts over HTTP (each costs one bcrypt hash at cost 12)."""
        with (
            httpx.Client(base_url=self.base_url, timeout=60) as http,
            ThreadPoolExecutor(4) as pool,
        ):
            body = [{"email": e, "password": PASSWORD} for e in emails]
            for answer in pool.map(lambda b: http.post("/auth/register", json=b), body):
                if answer.status_code != 201:
                    raise RuntimeError(f"peer register: {answer.text}")

    def login(self, email: str) -> str:
        """An access token for `email`."""
        answer = httpx.post(
            f"{self.base_url}/auth/jwt/login",
            data={"username": email, "password": PASSWORD},
            timeout=60,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def stop(self) -> None:
        self.process.stop()
