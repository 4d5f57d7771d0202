"""Run the `authledger` command as a user would, against a test's database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.shared_secrets import TEST_KEY_ENCRYPTION_KEY


def run_cli(
    database_url: str, data_dir: Path, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m interfaces.cli ARGS`; raise if it fails (if `check`)."""
    return subprocess.run(
        [sys.executable, "-m", "interfaces.cli", *args],
        env={
            **os.environ,
            "AUTHLEDGER_DATABASE_URL": database_url,
            "AUTHLEDGER_DATA_DIR": str(data_dir),
            "AUTHLEDGER_BCRYPT_ROUNDS": "4",
            "AUTHLEDGER_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
            "COLUMNS": "200",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )
