"""Resource servers verify authledger's tokens with public libraries only,
through rotations and revocations made by the CLI while two replicas serve."""

from __future__ import annotations

import functools
import getpass
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.cli import run_cli
from tests.http.conftest import free_port, start_server, stop_server
from tests.http.helpers import bearer, eventually, new_email, signup
from tests.signing import active_key, ring_events

pytestmark = [pytest.mark.http, pytest.mark.postgres]

PICKUP_S = 10  # replicas poll the ring every second; generous for slow CI


@pytest.fixture(scope="module")
def replicas(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two servers on one database, as two replicas behind a balancer."""
    started = []
    for _ in range(2):
        port = free_port()
        started.append(
            start_server(
                module_database_url,
                tmp_path_factory.mktemp("replica"),
                port=port,
                AUTHLEDGER_PUBLIC_URL=f"http://127.0.0.1:{port}",
            )
        )
    yield [base_url for _, base_url in started]
    for process, _ in started:
        stop_server(process)


@pytest.fixture(scope="module")
def cli_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-data")


def keys(database_url: str, data_dir: Path, *args: str) -> list[dict[str, Any]]:
    """`authledger keys ARGS --json`, one record per key."""
    out = run_cli(database_url, data_dir, "keys", *args, "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def refused(database_url: str, data_dir: Path, *args: str) -> str:
    """What `authledger keys ARGS` says on stderr when it refuses (exit 1)."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_cli(database_url, data_dir, "keys", *args)
    assert failed.value.returncode == 1
    return str(failed.value.stderr)


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def jwks_kids(base_url: str) -> set[str]:
    found = httpx.get(f"{base_url}/.well-known/jwks.json").json()["keys"]
    return {key["kid"] for key in found}


def resource_server_verifies(base_url: str, token: str) -> dict[str, Any]:
    """What a service holding nothing but PyJWT does with a bearer token."""
    signing_key = jwt.PyJWKClient(
        f"{base_url}/.well-known/jwks.json", cache_keys=False
    ).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        signing_key.key,
        algorithms=[signing_key.algorithm_name],
        audience="authledger",
        issuer="authledger",
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    return claims


def me_status(base_url: str, token: str) -> int:
    return httpx.get(
        f"{base_url}/api/auth/me", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def fresh_token(base_url: str) -> str:
    with httpx.Client(base_url=base_url) as http:
        return str(signup(http)["access_token"])


def test_a_resource_server_verifies_tokens_through_a_rotation_and_a_revocation(
    replicas: list[str], module_database_url: str, cli_data_dir: Path
) -> None:
    first, second = replicas
    before = fresh_token(first)
    old_kid = kid_of(before)
    assert resource_server_verifies(second, before)["iss"] == "authledger"

    (activated,) = keys(module_database_url, cli_data_dir, "rotate")
    new_kid = activated["kid"]
    assert new_kid != old_kid
    assert activated["state"] == "active"

    for replica in replicas:
        after = eventually(
            functools.partial(fresh_token, replica),
            lambda token: kid_of(token) == new_kid,
            timeout=PICKUP_S,
        )
        assert kid_of(after) == new_kid
        assert resource_server_verifies(replica, after)["sub"]
        # Signed before the rotation: its key is retired, still published.
        assert resource_server_verifies(replica, before)["sub"]
        assert me_status(replica, before) == 200
        assert {old_kid, new_kid} <= jwks_kids(replica)

    (revoked,) = keys(module_database_url, cli_data_dir, "revoke", old_kid)
    assert revoked["state"] == "revoked"
    for replica in replicas:
        assert (
            eventually(
                functools.partial(me_status, replica, before),
                lambda status: status == 401,
                timeout=PICKUP_S,
            )
            == 401
        )
        assert old_kid not in jwks_kids(replica)
        with pytest.raises(jwt.PyJWKClientError):
            resource_server_verifies(replica, before)
        assert me_status(replica, fresh_token(replica)) == 200


def test_a_client_calling_me_throughout_rotations_sees_no_failed_request(
    replicas: list[str], module_database_url: str, cli_data_dir: Path
) -> None:
    email = new_email()
    with httpx.Client(base_url=replicas[0]) as http:
        tokens = signup(http, email)
    statuses: list[int] = []
    stop = threading.Event()

    def call_me_and_refresh() -> None:
        nonlocal tokens
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                for replica in replicas:
                    statuses.append(
                        http.get(
                            f"{replica}/api/auth/me", headers=bearer(tokens)
                        ).status_code
                    )
                    refreshed = http.post(
                        f"{replica}/api/auth/refresh",
                        json={"refresh_token": tokens["refresh_token"]},
                    )
                    statuses.append(refreshed.status_code)
                    if refreshed.status_code == 200:
                        tokens = refreshed.json()

    caller = threading.Thread(target=call_me_and_refresh)
    caller.start()
    try:
        kids = [
            keys(module_database_url, cli_data_dir, "rotate")[0]["kid"]
            for _ in range(3)
        ]
        # Traffic goes on until both replicas sign with the last key
        for replica in replicas:
            eventually(
                functools.partial(fresh_token, replica),
                lambda token: kid_of(token) == kids[-1],
                timeout=PICKUP_S,
            )
        signed_by = {kid_of(fresh_token(replica)) for replica in replicas}
    finally:
        stop.set()
        caller.join()
    assert signed_by == {kids[-1]}
    assert len(statuses) > 20
    assert set(statuses) == {200}, statuses


def test_the_jwks_publishes_public_keys_only_for_less_than_a_next_key_waits(
    replicas: list[str], module_database_url: str, cli_data_dir: Path
) -> None:
    listed = {
        key["kid"]: key for key in keys(module_database_url, cli_data_dir, "list")
    }
    verifying = {
        kid
        for kid, key in listed.items()
        if key["state"] in ("next", "active", "retired")
    }
    response = eventually(
        lambda: httpx.get(f"{replicas[0]}/.well-known/jwks.json"),
        lambda response: {key["kid"] for key in response.json()["keys"]} == verifying,
        timeout=PICKUP_S,
    )
    assert response.status_code == 200
    published = response.json()["keys"]
    assert {key["kid"] for key in published} == verifying
    cache_control = response.headers["cache-control"]
    assert "public" in cache_control
    max_age = int(cache_control.split("max-age=")[1])
    assert 0 < max_age < 3600  # the default pre-publication of a next key
    for key in published:
        assert key["use"] == "sig"
        assert key["alg"] == listed[key["kid"]]["algorithm"]
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)


def test_discovery_names_the_tokens_issuer_and_a_fetchable_jwks(
    replicas: list[str],
) -> None:
    found = httpx.get(f"{replicas[0]}/.well-known/openid-configuration").json()
    claims = jwt.decode(fresh_token(replicas[0]), options={"verify_signature": False})
    assert found["issuer"] == claims["iss"]
    assert found["jwks_uri"] == f"{replicas[0]}/.well-known/jwks.json"
    assert httpx.get(found["jwks_uri"]).json()["keys"]
    # Only what is true here: no OAuth endpoints, no ID tokens, no userinfo.
    assert set(found) == {"issuer", "jwks_uri"}


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "ES256"])
def test_each_asymmetric_algorithm_signs_tokens_a_resource_server_verifies(
    algorithm: str, replicas: list[str], module_database_url: str, cli_data_dir: Path
) -> None:
    # A rotation activates the next key and makes one of the algorithm asked;
    # the second activates that one.
    keys(module_database_url, cli_data_dir, "rotate", "--algorithm", algorithm)
    (active,) = keys(module_database_url, cli_data_dir, "rotate")
    assert active["algorithm"] == algorithm
    token = eventually(
        lambda: fresh_token(replicas[1]),
        lambda token: kid_of(token) == active["kid"],
        timeout=PICKUP_S,
    )
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    assert resource_server_verifies(replicas[1], token)["sub"]
    assert me_status(replicas[0], token) == 200


def test_hs256_is_an_opt_in_whose_keys_are_never_published(
    database_url: str, tmp_path: Path
) -> None:
    process, base_url = start_server(
        database_url, tmp_path, AUTHLEDGER_SIGNING_ALGORITHM="HS256"
    )
    try:
        token = fresh_token(base_url)
        kid, algorithm, secret = active_key(database_url)
        assert (kid_of(token), algorithm) == (kid, "HS256")
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience="authledger")
        assert claims["iss"] == "authledger"
        assert httpx.get(f"{base_url}/.well-known/jwks.json").json() == {"keys": []}
        assert me_status(base_url, token) == 200
    finally:
        stop_server(process)


def test_the_keys_command_lists_the_ring_and_refuses_what_its_lifecycle_forbids(
    database_url: str, tmp_path: Path
) -> None:
    run_cli(database_url, tmp_path, "keys", "list")  # the first start makes the ring
    listed = keys(database_url, tmp_path, "list")
    assert [key["state"] for key in listed] == ["active", "next"]
    active, upcoming = listed
    assert active["algorithm"] == upcoming["algorithm"] == "ES256"
    assert active["verify_until"] is None

    table = run_cli(database_url, tmp_path, "keys", "list").stdout
    for heading in ("kid", "algorithm", "state", "verifies until"):
        assert heading in table
    assert active["kid"] in table
    assert upcoming["kid"] in table

    assert "refused" in refused(database_url, tmp_path, "retire", active["kid"])
    assert "no key" in refused(database_url, tmp_path, "revoke", "no-such-kid")
    assert "no key" in refused(database_url, tmp_path, "retire", "no-such-kid")

    (withdrawn,) = keys(database_url, tmp_path, "retire", upcoming["kid"])
    assert withdrawn["state"] == "retired"
    (replacement,) = [
        k for k in keys(database_url, tmp_path, "list") if k["state"] == "next"
    ]
    # The replacement is the one a rotation activates.
    (rotated,) = keys(database_url, tmp_path, "rotate")
    assert rotated["kid"] == replacement["kid"]
    states = {key["kid"]: key for key in keys(database_url, tmp_path, "list")}
    assert states[active["kid"]]["state"] == "retired"
    assert states[active["kid"]]["verify_until"] is not None
    assert [k["state"] for k in states.values()].count("next") == 1


def test_the_audit_export_shows_who_moved_each_key_and_when_but_no_key_material(
    module_database_url: str, cli_data_dir: Path
) -> None:
    (before,) = [
        k
        for k in keys(module_database_url, cli_data_dir, "list")
        if k["state"] == "active"
    ]
    (rotated,) = keys(module_database_url, cli_data_dir, "rotate")
    keys(module_database_url, cli_data_dir, "revoke", before["kid"])
    exported = run_cli(module_database_url, cli_data_dir, "audit", "export").stdout
    records = [json.loads(line) for line in exported.splitlines()]
    ring = [r for r in records if r["topic"].startswith("authledger:KeyRing.")]
    activated = [r for r in ring if r["topic"] == "authledger:KeyRing.KeyActivated"]
    assert activated[-1]["payload"]["kid"] == rotated["kid"]
    assert activated[-1]["payload"]["by"] == f"cli:{getpass.getuser()}"
    assert activated[-1]["timestamp"]
    assert {r["topic"] for r in ring} >= {
        "authledger:KeyRing.Started",
        "authledger:KeyRing.KeyAdded",
        "authledger:KeyRing.KeyRetired",
        "authledger:KeyRing.KeyRevoked",
    }
    assert "sealed_private_key" not in exported
    sealed = [
        state["sealed_private_key"]
        for _, state in ring_events(module_database_url)
        if "sealed_private_key" in state
    ]
    assert sealed
    assert not any(key in exported for key in sealed)


def test_a_key_encryption_key_that_does_not_open_the_ring_is_refused_at_start(
    database_url: str, tmp_path: Path
) -> None:
    before = keys(database_url, tmp_path, "list")
    other = "a different key-encryption key, long and random: 9f3Kq2xZ7LmP0wRt"

    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_cli(
            database_url,
            tmp_path,
            "keys",
            "rotate",
            AUTHLEDGER_KEY_ENCRYPTION_KEY=other,
        )

    assert "AUTHLEDGER_KEY_ENCRYPTION_KEY" in failed.value.stderr
    assert "Traceback" not in failed.value.stderr
    assert keys(database_url, tmp_path, "list") == before  # nothing sealed under it
    with pytest.raises(RuntimeError, match="AUTHLEDGER_KEY_ENCRYPTION_KEY"):
        start_server(database_url, tmp_path, AUTHLEDGER_KEY_ENCRYPTION_KEY=other)


def test_the_keys_command_states_a_configuration_error_in_one_line(
    tmp_path: Path,
) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_cli(
            "postgresql://nobody@127.0.0.1:1/none",
            tmp_path,
            "keys",
            "list",
            AUTHLEDGER_ENV="production",
        )
    assert failed.value.returncode == 2
    assert "Traceback" not in failed.value.stderr
    assert "refused" in failed.value.stderr.lower()


def test_a_token_is_verified_only_with_the_algorithm_recorded_for_its_kid(
    replicas: list[str], module_database_url: str, cli_data_dir: Path
) -> None:
    keys(module_database_url, cli_data_dir, "rotate", "--algorithm", "RS256")
    (active,) = keys(module_database_url, cli_data_dir, "rotate")
    genuine = eventually(
        lambda: fresh_token(replicas[0]),
        lambda token: kid_of(token) == active["kid"],
        timeout=PICKUP_S,
    )
    kid, algorithm, private = active_key(module_database_url)
    assert (kid, algorithm) == (active["kid"], "RS256")
    claims = jwt.decode(genuine, options={"verify_signature": False})

    def signed(alg: str) -> str:
        return jwt.encode(claims, private, alg, {"typ": "at+jwt", "kid": kid})

    assert me_status(replicas[0], signed("RS256")) == 200  # the forger holds the key
    for other in ("PS256", "RS512", "PS512"):
        assert me_status(replicas[0], signed(other)) == 401, other
