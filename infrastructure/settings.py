"""Settings from AUTHLEDGER_* environment variables, and the secrets they lead to."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import math
import os
import secrets
import stat
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from application.values import AuthPolicy
from domain.session import RefreshPolicy
from domain.throttle import ThrottlePolicy
from domain.user import LockoutPolicy, MailPolicy

MIN_SECRET_BYTES = 32
# Checks against regular secrets, not proofs of randomness: the entropy of the
# secret's own character frequencies ("a" * 32 has none; 32 random hex digits
# about 110 bits), and the share of neighbours that are equal or consecutive
# ("abcd…", "0123…"; about 5 % in random base64, 17 % in random hex).
MIN_SECRET_BITS = 96
MAX_SEQUENTIAL_SHARE = 0.45
# Placeholders people paste from examples; production refuses them even if long.
KNOWN_DEFAULT_SECRETS = frozenset(
    {"changethis", "change-me", "secret", "CHANGE_ME_TO_A_LONG_RANDOM_SECRET_VALUE"}
)


# The default connection budget: this many for all workers of a replica
# (PostgreSQL's default max_connections is 100), each within these bounds.
DB_CONNECTIONS_SHARED = 80
DB_CONNECTIONS_EACH = (16, 40)


class InsecureSettingsError(RuntimeError):
    """Production was asked to start with a missing, short or default secret."""


class Settings(BaseSettings):
    """Everything configurable, read from AUTHLEDGER_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="AUTHLEDGER_", extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    data_dir: Path = Path(".data")
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    password_pepper: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    key_encryption_key: SecretStr | None = None
    jwt_issuer: str = "authledger"
    jwt_audience: str = "authledger"
    access_token_ttl_s: int = Field(default=15 * 60, gt=0)
    # The algorithm of the signing keys made from now on (HS256: one service
    # only, as no other may hold its key).
    signing_algorithm: Literal["ES256", "EdDSA", "RS256", "HS256"] = "ES256"
    # How long a next key is published before a scheduled rotation uses it.
    signing_key_prepublication_s: int = Field(default=3600, ge=60)
    # Rotate the signing key on a schedule (off when unset).
    signing_key_rotation_days: float | None = Field(default=None, gt=0)
    # How often each process reads the key ring again (a revocation's delay).
    key_ring_refresh_s: float = Field(default=1.0, gt=0, le=60)
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    session_max_age_s: int = Field(default=30 * 24 * 3600, gt=0)
    refresh_reuse_interval_s: float = Field(default=10, ge=0, le=300)
    lockout_max_failures: int = Field(default=5, ge=1)
    lockout_window_s: int = Field(default=15 * 60, gt=0)
    lockout_first_s: int = Field(default=60, gt=0)
    lockout_longest_s: int = Field(default=3600, gt=0)
    lockout_decay_s: int = Field(default=24 * 3600, gt=0)
    client_max_failures: int = Field(default=20, ge=1)
    client_window_s: int = Field(default=15 * 60, gt=0)
    signup_max_per_address: int = Field(default=20, ge=1)
    signup_window_s: int = Field(default=3600, gt=0)
    trusted_proxies: list[str] = Field(default_factory=list)
    run_projections: bool = True
    run_mailer: bool = True
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, gt=0, lt=65536)
    smtp_tls: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "authledger <no-reply@localhost>"
    public_url: str = "http://127.0.0.1:8000"
    mail_verification_ttl_s: int = Field(default=24 * 3600, gt=0)
    mail_reset_ttl_s: int = Field(default=30 * 60, gt=0)
    mail_cooldown_s: int = Field(default=60, ge=0)
    mail_max_per_address: int = Field(default=10, ge=1)
    mail_window_s: int = Field(default=3600, gt=0)
    # Worker processes `serve` starts (its --workers wins); the pools'
    # defaults below follow from it.
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    # Connections one process may open (see the connection budget); by
    # default DB_CONNECTIONS_SHARED over the workers, within DB_CONNECTIONS_EACH.
    db_max_connections: int | None = Field(default=None, ge=16, le=1000)
    # Threads for the routes that run synchronously; by default one per
    # connection of the request pool, so that a thread never waits for one.
    request_threads: int | None = Field(default=None, ge=2, le=1000)
    # bcrypt runs at once in one process; by default the cores shared by the
    # workers, so that all of them hash at most one per core.
    hash_threads: int | None = Field(default=None, ge=1, le=256)
    # How much lower the OS priority of those threads is than the requests'.
    hash_niceness: int = Field(default=10, ge=0, le=19)
    # Prometheus metrics on a listener of their own (off when no port).
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    # Log records as JSON lines; "text" reads better in a terminal.
    log_format: Literal["json", "text"] = "json"
    run_webhooks: bool = True
    # Send to loopback, private, link-local and metadata addresses (a
    # receiver on the same host or network): off, against SSRF.
    webhook_allow_private: bool = False
    # A failed delivery is retried after this, doubling up to the longest;
    # an endpoint failing for `webhook_failing_after_s` is marked failing
    # (and still retried at the longest interval).
    webhook_first_retry_s: float = Field(default=5, gt=0)
    webhook_longest_retry_s: float = Field(default=3600, gt=0)
    webhook_failing_after_s: float = Field(default=24 * 3600, gt=0)
    webhook_timeout_s: float = Field(default=10, gt=0, le=60)
    request_deadline_s: float = Field(default=5.0, ge=0.5, le=60)

    def connection_budget(self) -> int:
        """What one process may open: as set, or the workers' share."""
        if self.db_max_connections is not None:
            return self.db_max_connections
        low, high = DB_CONNECTIONS_EACH
        return max(low, min(high, DB_CONNECTIONS_SHARED // self.workers))

    def hash_concurrency(self) -> int:
        """bcrypt runs at once in one process: as set, or its share of the cores."""
        if self.hash_threads is not None:
            return self.hash_threads
        return max(1, math.ceil((os.cpu_count() or 1) / self.workers))

    def jwks_max_age_s(self) -> int:
        """How long verifiers may cache the JWKS: well inside the time a
        next key is published before it signs, and five minutes at most."""
        return min(300, self.signing_key_prepublication_s // 2)

    def mail_policy(self) -> MailPolicy:
        """How long mailed links live and how often they may be asked for."""
        return MailPolicy(
            verification_ttl=timedelta(seconds=self.mail_verification_ttl_s),
            reset_ttl=timedelta(seconds=self.mail_reset_ttl_s),
            cooldown=timedelta(seconds=self.mail_cooldown_s),
        )

    def mail_throttle(self) -> ThrottlePolicy:
        """How many mail requests one client address may make per window."""
        return ThrottlePolicy(
            max_attempts=self.mail_max_per_address,
            window=timedelta(seconds=self.mail_window_s),
        )

    def auth_policy(self) -> AuthPolicy:
        """Collect the use-case rules from the settings."""
        return AuthPolicy(
            lockout=LockoutPolicy(
                max_failures=self.lockout_max_failures,
                window=timedelta(seconds=self.lockout_window_s),
                first_lock=timedelta(seconds=self.lockout_first_s),
                longest_lock=timedelta(seconds=self.lockout_longest_s),
                decay=timedelta(seconds=self.lockout_decay_s),
            ),
            throttle=ThrottlePolicy(
                max_attempts=self.client_max_failures,
                window=timedelta(seconds=self.client_window_s),
            ),
            signup=ThrottlePolicy(
                max_attempts=self.signup_max_per_address,
                window=timedelta(seconds=self.signup_window_s),
            ),
            refresh=RefreshPolicy(
                token_ttl=timedelta(seconds=self.refresh_token_ttl_s),
                max_session_age=timedelta(seconds=self.session_max_age_s),
                reuse_interval=timedelta(seconds=self.refresh_reuse_interval_s),
            ),
        )


@dataclass(frozen=True)
class Secrets:
    jwt_secret: bytes
    password_pepper: bytes
    # Wraps the data keys that seal personal fields (ADR 31).
    key_encryption_key: bytes


# The development secrets, by file: the key-encryption key came later, in a
# file of its own, so that a data dir's older secrets stay as they were.
DEVELOPMENT_SECRETS = {
    "secrets.json": ("jwt_secret", "password_pepper"),
    "key-encryption-key.json": ("key_encryption_key",),
}


def load_secrets(settings: Settings) -> Secrets:
    """Return the secrets, refusing weak or shared ones in production.

    In development, missing secrets are generated once and kept in the data
    directory (mode 0600), so tokens, passwords and sealed data survive a
    restart.
    """
    given = {
        "jwt_secret": settings.jwt_secret,
        "password_pepper": settings.password_pepper,
        "key_encryption_key": settings.key_encryption_key,
    }
    if settings.env == "production":
        for name, value in given.items():
            _check_strong(f"AUTHLEDGER_{name.upper()}", value)
        if len({_reveal(value) for value in given.values()}) < len(given):
            raise InsecureSettingsError(
                "AUTHLEDGER_JWT_SECRET, AUTHLEDGER_PASSWORD_PEPPER and"
                " AUTHLEDGER_KEY_ENCRYPTION_KEY must all differ"
            )
    revealed = {name: _reveal(value) for name, value in given.items()}
    for filename, names in DEVELOPMENT_SECRETS.items():
        if not all(revealed[name] for name in names):
            stored = _development_secrets(settings.data_dir / filename, names)
            for name in names:
                revealed[name] = revealed[name] or stored[name].encode()
    return Secrets(**revealed)


def _sequential_share(text: str) -> float:
    """The share of neighbouring characters that repeat or count up or down."""
    pairs = list(itertools.pairwise(map(ord, text)))
    return sum(abs(b - a) <= 1 for a, b in pairs) / max(len(pairs), 1)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose from a configured secret: no key serves two."""
    return hmac.new(secret, f"authledger/{purpose}".encode(), hashlib.sha256).digest()


def _reveal(secret: SecretStr | None) -> bytes:
    return secret.get_secret_value().encode() if secret else b""


def _check_strong(env_name: str, value: SecretStr | None) -> None:
    if value is None:
        raise InsecureSettingsError(f"{env_name} is required in production")
    raw = value.get_secret_value()
    if raw in KNOWN_DEFAULT_SECRETS:
        raise InsecureSettingsError(f"{env_name} is a well-known default")
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise InsecureSettingsError(
            f"{env_name} must be at least {MIN_SECRET_BYTES} bytes"
        )
    if (
        _entropy_bits(raw) < MIN_SECRET_BITS
        or _sequential_share(raw) > MAX_SEQUENTIAL_SHARE
    ):
        raise InsecureSettingsError(
            f"{env_name} is too regular: use a random value"
            " (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )


def _entropy_bits(text: str) -> float:
    """Shannon entropy of the text's characters, times its length: an upper
    bound on what it can hold, low for repeats and short alphabets."""
    counts = Counter(text)
    return -sum(n * math.log2(n / len(text)) for n in counts.values())


def _development_secrets(path: Path, names: tuple[str, ...]) -> dict[str, str]:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = {name: secrets.token_urlsafe(48) for name in names}
        draft = path.parent / f".{path.stem}.{os.getpid()}.json"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(fresh, out)
        # link() is atomic and refuses to overwrite: with several workers starting
        # at once, exactly one file wins and every worker reads that one.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise InsecureSettingsError(
            f"{path} can be read by other users: chmod 600 it (or delete it)"
        )
    stored: dict[str, str] = json.loads(path.read_text())
    return stored
