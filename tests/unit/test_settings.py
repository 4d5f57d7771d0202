"""Secrets: production refuses weak ones; development generates and keeps its own."""

from __future__ import annotations

import json
import os
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
THIRD_STRONG = "Vb7Tq2Lm9Xc4Rz8Nk3Hw6Jp1Fd5Gs0YaU"


def production(
    jwt_secret: str | None, pepper: str | None, kek: str | None, data_dir: Path
) -> Settings:
    return Settings(
        env="production",
        data_dir=data_dir,
        jwt_secret=SecretStr(jwt_secret) if jwt_secret else None,
        password_pepper=SecretStr(pepper) if pepper else None,
        key_encryption_key=SecretStr(kek) if kek else None,
    )


@pytest.mark.parametrize(
    ("jwt_secret", "pepper", "kek"),
    [
        (None, STRONG, THIRD_STRONG),
        (STRONG, None, THIRD_STRONG),
        (STRONG, OTHER_STRONG, None),
        ("too short", STRONG, THIRD_STRONG),
        ("changethis", STRONG, THIRD_STRONG),
        (STRONG, "short", THIRD_STRONG),
        ("a" * 32, OTHER_STRONG, THIRD_STRONG),
        (STRONG, "abcd" * 8, THIRD_STRONG),
        (STRONG, OTHER_STRONG, "0123456789abcdef" * 2),
        (STRONG, STRONG, THIRD_STRONG),
        (STRONG, OTHER_STRONG, STRONG),
        ("abcdefghijklmnopqrstuvwxyz012345", OTHER_STRONG, THIRD_STRONG),
        (STRONG, "0123456789abcdef" * 2, THIRD_STRONG),
    ],
    ids=[
        "no-jwt",
        "no-pepper",
        "no-key-encryption-key",
        "short",
        "default",
        "short-pepper",
        "one-letter",
        "repeating",
        "counting-key-encryption-key",
        "same-for-jwt-and-pepper",
        "same-for-jwt-and-key-encryption-key",
        "alphabet",
        "counting",
    ],
)
def test_production_refuses_missing_short_default_or_shared_secrets(
    tmp_path: Path, jwt_secret: str | None, pepper: str | None, kek: str | None
) -> None:
    with pytest.raises(InsecureSettingsError):
        load_secrets(production(jwt_secret, pepper, kek, tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing generated


def test_production_accepts_strong_secrets(tmp_path: Path) -> None:
    secrets = load_secrets(production(STRONG, OTHER_STRONG, THIRD_STRONG, tmp_path))

    assert secrets.jwt_secret == STRONG.encode()
    assert secrets.password_pepper == OTHER_STRONG.encode()
    assert secrets.key_encryption_key == THIRD_STRONG.encode()


def test_development_generates_secrets_once_and_keeps_them_private(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")

    first = load_secrets(settings)
    second = load_secrets(settings)

    assert first == second
    assert len(first.jwt_secret) >= 32
    assert len(first.key_encryption_key) >= 32
    assert first.jwt_secret != first.password_pepper != first.key_encryption_key
    for name in ("secrets.json", "key-encryption-key.json"):
        mode = (tmp_path / "data" / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600


def test_a_data_dir_from_before_keeps_its_secrets_and_gains_a_key_encryption_key(
    tmp_path: Path,
) -> None:
    older = {"jwt_secret": STRONG, "password_pepper": OTHER_STRONG}
    (tmp_path / "secrets.json").write_text(json.dumps(older))
    (tmp_path / "secrets.json").chmod(0o600)

    loaded = load_secrets(Settings(data_dir=tmp_path))

    assert (loaded.jwt_secret, loaded.password_pepper) == (
        STRONG.encode(),
        OTHER_STRONG.encode(),
    )
    assert len(loaded.key_encryption_key) >= 32
    assert load_secrets(Settings(data_dir=tmp_path)) == loaded


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
        settings = production(
            secrets.token_hex(16),
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            tmp_path,
        )
        load_secrets(settings)


def test_the_lockout_decay_is_configurable() -> None:
    settings = Settings(lockout_decay_s=3600)

    assert settings.auth_policy().lockout.decay == timedelta(hours=1)


@pytest.mark.parametrize(
    ("run_mailer", "run_projections", "run_webhooks", "requests"),
    [
        (True, True, True, 6),
        (True, True, False, 9),
        (False, True, True, 7),
        (True, False, True, 12),
        (False, False, False, 16),
    ],
)
def test_requests_get_what_the_background_users_leave_of_the_budget(
    tmp_path: Path,
    run_mailer: bool,
    run_projections: bool,
    run_webhooks: bool,
    requests: int,
) -> None:
    # session checks 2, probe 1, setup 1, mailer 1, webhook dispatcher 3,
    # projection worker 3, a build of new versions 3
    settings = Settings(
        data_dir=tmp_path,
        db_max_connections=20,
        run_mailer=run_mailer,
        run_projections=run_projections,
        run_webhooks=run_webhooks,
    )
    assert request_connections(settings) == requests


def test_a_budget_too_small_for_the_background_users_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="db_max_connections"):
        Settings(data_dir=tmp_path, db_max_connections=15)


@pytest.mark.parametrize(
    ("workers", "budget"), [(1, 40), (2, 40), (3, 26), (4, 20), (5, 16), (64, 16)]
)
def test_the_default_budget_shares_eighty_connections_among_the_workers(
    tmp_path: Path, workers: int, budget: int
) -> None:
    settings = Settings(data_dir=tmp_path, workers=workers)
    assert settings.connection_budget() == budget
    assert (
        Settings(
            data_dir=tmp_path, workers=workers, db_max_connections=17
        ).connection_budget()
        == 17
    )


@pytest.mark.parametrize(("workers", "hashing"), [(1, 2), (2, 1), (3, 1)])
def test_the_workers_hash_at_most_one_password_per_core_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, hashing: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert Settings(data_dir=tmp_path, workers=workers).hash_concurrency() == hashing
    assert Settings(data_dir=tmp_path, hash_threads=3).hash_concurrency() == 3


@pytest.mark.parametrize("prepublication_s", [60, 61, 599, 600, 3600, 86400])
def test_the_jwks_is_cached_for_less_than_a_next_key_is_published(
    prepublication_s: int,
) -> None:
    settings = Settings(signing_key_prepublication_s=prepublication_s)
    assert 0 < settings.jwks_max_age_s() < prepublication_s
    assert settings.jwks_max_age_s() <= 300
