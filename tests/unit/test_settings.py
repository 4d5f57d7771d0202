"""Secrets: production refuses weak ones; development generates and keeps its own."""

from __future__ import annotations

import secrets
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from infrastructure.settings import InsecureSettingsError, Settings, load_secrets
from interfaces.bootstrap import request_connections

STRONG = "kD3v9-Qx_7mPz2LwRt8YbN4cHj6Fs1Ue"  # 32 bytes, 32 distinct characters
OTHER_STRONG = "Zq8Wm3Nv7Rc2Xb5Kt9Lp4Hy6Jd1Gf0SaE"


@pytest.mark.parametrize(
    ("jwt_secret", "pepper"),
    [
        (None, STRONG),
        (STRONG, None),
        ("too short", STRONG),
        ("changethis", STRONG),
        (STRONG, "short"),
        ("a" * 32, OTHER_STRONG),
        (STRONG, "abcd" * 8),
        (STRONG, STRONG),
        ("abcdefghijklmnopqrstuvwxyz012345", OTHER_STRONG),
        (STRONG, "0123456789abcdef" * 2),
    ],
    ids=[
        "no-jwt",
        "no-pepper",
        "short",
        "default",
        "short-pepper",
        "one-letter",
        "repeating",
        "same-for-both",
        "alphabet",
        "counting",
    ],
)
def test_production_refuses_missing_short_or_default_secrets(
    tmp_path: Path, jwt_secret: str | None, pepper: str | None
) -> None:
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        jwt_secret=SecretStr(jwt_secret) if jwt_secret else None,
        password_pepper=SecretStr(pepper) if pepper else None,
    )

    with pytest.raises(InsecureSettingsError):
        load_secrets(settings)
    assert not (tmp_path / "secrets.json").exists()


def test_production_accepts_strong_secrets(tmp_path: Path) -> None:
    settings = Settings(
        env="production",
        data_dir=tmp_path,
        jwt_secret=SecretStr(STRONG),
        password_pepper=SecretStr(OTHER_STRONG),
    )

    secrets = load_secrets(settings)

    assert secrets.jwt_secret == STRONG.encode()
    assert secrets.password_pepper == OTHER_STRONG.encode()


def test_development_generates_secrets_once_and_keeps_them_private(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")

    first = load_secrets(settings)
    second = load_secrets(settings)

    assert first == second
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret != first.password_pepper
    mode = (tmp_path / "data" / "secrets.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_secret_from_the_environment_wins_over_the_generated_one(
    tmp_path: Path,
) -> None:
    generated = load_secrets(Settings(data_dir=tmp_path))

    configured = load_secrets(Settings(data_dir=tmp_path, jwt_secret=SecretStr(STRONG)))

    assert configured.jwt_secret == STRONG.encode()
    assert configured.password_pepper == generated.password_pepper


def test_development_keeps_its_data_directory_private(tmp_path: Path) -> None:
    load_secrets(Settings(data_dir=tmp_path / "data"))

    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_a_secrets_file_others_can_read_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    load_secrets(settings)
    (tmp_path / "secrets.json").chmod(0o644)

    with pytest.raises(InsecureSettingsError, match="chmod 600"):
        load_secrets(settings)


def test_production_accepts_random_hex_and_urlsafe_secrets(tmp_path: Path) -> None:
    for _ in range(20):
        settings = Settings(
            env="production",
            data_dir=tmp_path,
            jwt_secret=SecretStr(secrets.token_hex(16)),
            password_pepper=SecretStr(secrets.token_urlsafe(32)),
        )
        load_secrets(settings)


def test_the_lockout_decay_is_configurable() -> None:
    settings = Settings(lockout_decay_s=3600)

    assert settings.auth_policy().lockout.decay == timedelta(hours=1)


@pytest.mark.parametrize(
    ("run_mailer", "run_projections", "requests"),
    [(True, True, 11), (False, True, 12), (True, False, 17), (False, False, 18)],
)
def test_requests_get_what_the_background_users_leave_of_the_budget(
    tmp_path: Path, run_mailer: bool, run_projections: bool, requests: int
) -> None:
    # probe 1, setup 1, mailer 1, projection worker 3, a build of new versions 3
    settings = Settings(
        data_dir=tmp_path,
        db_max_connections=20,
        run_mailer=run_mailer,
        run_projections=run_projections,
    )
    assert request_connections(settings) == requests


def test_a_budget_too_small_for_the_background_users_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="db_max_connections"):
        Settings(data_dir=tmp_path, db_max_connections=11)
