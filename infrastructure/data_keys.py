"""Personal fields sealed per owner; erasure destroys the owner's key (ADR 31).

Every owner (an account, or a stream no account owns) has its own AES-256-GCM
data key, kept outside the append-only log in `authledger.data_keys`, wrapped
by the key-encryption key of the settings. The mapper seals each personal
field of an event or snapshot as `sealed:v1:<owner>:<base64 nonce+ciphertext>`
(bound to the owner and the field's name); types, ids, versions and times stay
in clear. Destroying a key leaves its row as a tombstone: no key is made for
that owner again, and whatever it sealed reads as ERASED, in every copy.
"""

from __future__ import annotations

import base64
import contextvars
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper
from psycopg import sql

from application.values import PERSONAL_FIELDS, data_owner
from domain.values import ERASED
from infrastructure.database import EventTables, connect
from infrastructure.settings import derive_key

if TYPE_CHECKING:
    from eventsourcing.domain import DomainEventProtocol
    from eventsourcing.persistence import Notification, StoredEvent, Transcoder
    from psycopg import Connection

    from application.ports import MapperFactory
    from infrastructure.event_store import AuthRecorder

LOG = logging.getLogger("authledger.data_keys")
SEALED = "sealed:v1:"
SEALED_IN_STATE = re.compile(rb"sealed:v1:([0-9a-f]{32}):")
NONCE_BYTES = 12
# Keys a process keeps unwrapped, for the commands of its busiest accounts.
CACHED_KEYS = 50_000

KEY_TABLE = (
    "CREATE SCHEMA IF NOT EXISTS authledger",
    # `wrapped` is NULL once the key is destroyed: the row stays, a tombstone.
    "CREATE TABLE IF NOT EXISTS authledger.data_keys ("
    " owner uuid PRIMARY KEY, wrapped bytea, destroyed_at timestamptz)",
)
# A row this very transaction wrote is not committed yet: not to be cached.
SELECT_KEYS = (
    "SELECT owner, wrapped, xmin::text::bigint"
    " = pg_current_xact_id_if_assigned()::text::bigint %% 4294967296 AS own"
    " FROM authledger.data_keys WHERE owner = ANY(%s)"
)
INSERT_KEY = (
    "INSERT INTO authledger.data_keys (owner, wrapped) VALUES (%s, %s)"
    " ON CONFLICT (owner) DO NOTHING"
)
DESTROY_KEYS = (
    "INSERT INTO authledger.data_keys (owner, wrapped, destroyed_at)"
    " SELECT unnest(%s::uuid[]), NULL, now()"
    " ON CONFLICT (owner) DO UPDATE SET wrapped = NULL,"
    " destroyed_at = coalesce(data_keys.destroyed_at, now())"
)

# An owner's key: unwrapped, or None once destroyed.
Key = AESGCM | None
# What storage returns of an owner: its wrapped key (None: destroyed), and
# whether that may be cached (False: this transaction wrote it, uncommitted).
Stored = tuple[bytes | None, bool]


def create_key_table(url: str) -> None:
    """Create the table of data keys, as the event log's owner."""
    with connect(url, "authledger-setup") as conn:
        for statement in KEY_TABLE:
            conn.execute(statement)


def check_key_table(url: str) -> None:
    """Fail now, not at the first signup, if the data keys are out of reach."""
    with connect(url, "authledger-setup") as conn:
        exists = conn.execute("SELECT to_regclass('authledger.data_keys')").fetchone()
        row = (
            conn.execute(
                "SELECT bool_and(has_table_privilege('authledger.data_keys', p))"
                " FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) AS p"
            ).fetchone()
            if exists and exists[0]
            else None
        )
    if not (row and row[0]):
        raise MissingKeyTableError(
            "authledger.data_keys is missing or out of reach: run"
            " `authledger db setup-roles` as the event log's owner"
        )


class MissingKeyTableError(RuntimeError):
    """The application role cannot reach the data keys."""


class WrongKeyEncryptionKeyError(RuntimeError):
    """The data keys were wrapped by another key-encryption key."""


def check_key_encryption_key(url: str, key_encryption_key: bytes) -> None:
    """Refuse to start with a key-encryption key that does not unwrap the
    stored data keys: nothing sealed would open, and new keys would not
    match the old ones."""
    with connect(url, "authledger-setup") as conn:
        row = conn.execute(
            "SELECT owner, wrapped FROM authledger.data_keys"
            " WHERE wrapped IS NOT NULL LIMIT 1"
        ).fetchone()
    if row is None:
        return
    try:
        DataKeyRing(key_encryption_key).unwrapped(row[0], (bytes(row[1]), True))
    except InvalidTag:
        raise WrongKeyEncryptionKeyError(
            "AUTHLEDGER_KEY_ENCRYPTION_KEY does not unwrap the stored data keys:"
            " set the key they were made with"
        ) from None


class DataKeyRing:
    """Seal and open personal fields with their owner's key; destroy keys.

    A command's process caches the keys it unwraps (it only reads its own
    accounts, whose state after an erasure holds nothing personal); read
    models and audits read keys afresh within `fresh()`, so that an event
    read after an erasure committed never opens with a key cached before it.
    """

    def __init__(self, key_encryption_key: bytes) -> None:
        self._kek = AESGCM(derive_key(key_encryption_key, "data-keys"))
        self._cache: dict[UUID, Key] = {}
        self._fresh: contextvars.ContextVar[dict[UUID, Key] | None] = (
            contextvars.ContextVar("fresh_keys", default=None)
        )

    # Storage, for each kind of store.
    def _load(self, owners: Sequence[UUID]) -> dict[UUID, Stored]:
        raise NotImplementedError

    def _insert(self, owner: UUID, wrapped: bytes) -> None:
        raise NotImplementedError

    def _shred(self, owners: Sequence[UUID]) -> None:
        raise NotImplementedError

    def seal(self, owner: UUID, field: str, value: str) -> str:
        """The value sealed with the owner's key (made on first use); ERASED
        if the owner's key was destroyed."""
        key = self._key(owner, create=True)
        if key is None:
            return ERASED
        nonce = os.urandom(NONCE_BYTES)
        sealed = key.encrypt(nonce, value.encode(), _bound_to(owner, field))
        return f"{SEALED}{owner.hex}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, field: str, value: str) -> str:
        """The sealed value opened; ERASED once its key is gone. A value not
        sealed (stored before sealing) is returned as it is."""
        if not value.startswith(SEALED):
            return value
        owner_hex, _, blob = value.removeprefix(SEALED).partition(":")
        try:
            owner = UUID(hex=owner_hex)
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            LOG.warning("a sealed %s is malformed: shown as erased", field)
            return ERASED
        key = self._key(owner, create=False)
        if key is None:
            return ERASED
        try:
            plain = key.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _bound_to(owner, field)
            )
        except InvalidTag:
            LOG.warning(
                "a sealed %s of %s does not open: shown as erased", field, owner
            )
            return ERASED
        return plain.decode()

    @contextmanager
    def fresh(self, states: Iterable[bytes]) -> Iterator[None]:
        """Within the block, keys come from storage, not the cache: those
        sealing `states` are read at once, any other when first needed."""
        owners = sorted(
            {UUID(hex=m.decode()) for s in states for m in SEALED_IN_STATE.findall(s)}
        )
        found = {
            owner: self.unwrapped(owner, stored)
            for owner, stored in self._load(owners).items()
        }
        token = self._fresh.set({owner: found.get(owner) for owner in owners})
        try:
            yield
        finally:
            self._fresh.reset(token)

    def destroy(self, owners: Iterable[UUID]) -> None:
        """Destroy the owners' keys for good: tombstones, never made again."""
        chosen = sorted(set(owners))
        self._shred(chosen)
        for owner in chosen:  # not cached as destroyed: the transaction may fail
            self._cache.pop(owner, None)

    def _key(self, owner: UUID, *, create: bool) -> Key:
        fresh = self._fresh.get()
        if fresh is not None and owner in fresh:
            return fresh[owner]
        if fresh is None and owner in self._cache:
            return self._cache[owner]
        stored = self._load([owner]).get(owner)
        if stored is None and create:
            self._insert(owner, self._wrap(owner, AESGCM.generate_key(bit_length=256)))
            stored = self._load([owner]).get(owner)
        if stored is None:
            return None  # it never had a key: nothing was sealed with one
        key = self.unwrapped(owner, stored)
        if fresh is not None:
            fresh[owner] = key
        elif stored[1]:
            if len(self._cache) >= CACHED_KEYS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[owner] = key
        return key

    def _wrap(self, owner: UUID, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._kek.encrypt(nonce, key, owner.bytes)

    def unwrapped(self, owner: UUID, stored: Stored) -> Key:
        wrapped = stored[0]
        if wrapped is None:
            return None
        return AESGCM(
            self._kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], owner.bytes)
        )


class MemoryDataKeyRing(DataKeyRing):
    """Keys in a dict: for use cases run on the in-memory event store."""

    def __init__(self, key_encryption_key: bytes) -> None:
        super().__init__(key_encryption_key)
        self.wrapped: dict[UUID, bytes | None] = {}

    def _load(self, owners: Sequence[UUID]) -> dict[UUID, Stored]:
        return {o: (self.wrapped[o], True) for o in owners if o in self.wrapped}

    def _insert(self, owner: UUID, wrapped: bytes) -> None:
        self.wrapped.setdefault(owner, wrapped)

    def _shred(self, owners: Sequence[UUID]) -> None:
        self.wrapped.update(dict.fromkeys(owners))


class PostgresDataKeyRing(DataKeyRing):
    """Keys in `authledger.data_keys`, through the event store's connections:
    inside a command's one transaction, its connection (a key made there
    commits or rolls back with the events it sealed, and a destruction with
    the erasure)."""

    def __init__(
        self, key_encryption_key: bytes, recorder: Callable[[], AuthRecorder]
    ) -> None:
        super().__init__(key_encryption_key)
        self._recorder = recorder

    def _load(self, owners: Sequence[UUID]) -> dict[UUID, Stored]:
        if not owners:
            return {}
        with self._recorder().datastore.get_connection() as conn:
            rows = conn.execute(SELECT_KEYS, (list(owners),)).fetchall()
        return {r["owner"]: (r["wrapped"], not r["own"]) for r in rows}

    def _insert(self, owner: UUID, wrapped: bytes) -> None:
        with self._recorder().datastore.get_connection() as conn:
            conn.execute(INSERT_KEY, (owner, wrapped))

    def _shred(self, owners: Sequence[UUID]) -> None:
        with self._recorder().datastore.get_connection() as conn:
            conn.execute(DESTROY_KEYS, (list(owners),))


class SealingMapper(Mapper[UUID]):
    """The library's mapper, with every personal field sealed by its owner's key."""

    def __init__(self, transcoder: Transcoder, keys: DataKeyRing) -> None:
        super().__init__(transcoder)
        self.keys = keys

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        state = vars(domain_event)
        owner = data_owner(domain_event.originator_id, state)
        sealed = self._sealed(owner, state)
        if sealed is state:
            return super().to_stored_event(domain_event)
        copy = object.__new__(type(domain_event))
        object.__setattr__(copy, "__dict__", sealed)
        return super().to_stored_event(copy)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        event = super().to_domain_event(stored_event)
        if SEALED.encode() in stored_event.state:
            self._open_in_place(vars(event))
        return event

    def afresh(self) -> AbstractContextManager[None]:
        return self.keys.fresh(())

    def decode_all(self, notifications: Sequence[Notification]) -> list[Any]:
        with self.keys.fresh(n.state for n in notifications):
            return [self.to_domain_event(n) for n in notifications]

    def payloads(self, notifications: Sequence[Notification]) -> list[dict[str, Any]]:
        decoded = [self.transcoder.decode(n.state) for n in notifications]
        with self.keys.fresh(n.state for n in notifications):
            for payload in decoded:
                self._open_in_place(payload)
        return decoded

    def destroy_keys(self, owners: Iterable[UUID]) -> None:
        self.keys.destroy(owners)

    def sealed_in_place(self, originator_id: UUID, stored_state: bytes) -> bytes | None:
        """A stored state with the personal fields it holds in clear sealed (a
        state from before sealing), or None if it holds none."""
        state = self.transcoder.decode(stored_state)
        owner = data_owner(originator_id, state)
        sealed = self._sealed(owner, state, clear_only=True)
        return None if sealed is state else self.transcoder.encode(sealed)

    def _sealed(
        self, owner: UUID, state: dict[str, Any], *, clear_only: bool = False
    ) -> dict[str, Any]:
        """`state` with its personal fields sealed (itself if it has none);
        `clear_only`: those not sealed yet."""
        changed: dict[str, Any] = {}
        for name, value in state.items():
            if name in PERSONAL_FIELDS and isinstance(value, str) and value:
                if not (clear_only and value.startswith(SEALED)):
                    changed[name] = self.keys.seal(owner, name, value)
            elif isinstance(value, dict):  # a snapshot's state
                inner = self._sealed(owner, value, clear_only=clear_only)
                if inner is not value:
                    changed[name] = inner
        return {**state, **changed} if changed else state

    def _open_in_place(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if name in PERSONAL_FIELDS and isinstance(value, str):
                state[name] = self.keys.open(name, value)
            elif isinstance(value, dict):
                self._open_in_place(value)


# Events and snapshots alike, a page at a time by their primary key.
SELECT_PAGE = (
    "SELECT originator_id, originator_version, state FROM {table}"
    " WHERE (originator_id, originator_version) > (%s, %s)"
    " ORDER BY originator_id, originator_version LIMIT 1000"
)
UPDATE_STATE = (
    "UPDATE {table} SET state = %s WHERE originator_id = %s AND originator_version = %s"
)
TRIGGER = "ALTER TABLE {table} {switch} TRIGGER append_only"
# An UPDATE checks the new row against CHECKs that are NOT VALID too: the
# bound on positions (which old rows lie below) is set aside and put back.
CHECKS_NOT_VALID = (
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE conrelid = %s::regclass AND contype = 'c' AND NOT convalidated"
)


def seal_stored_personal_data(
    mapper: SealingMapper,
    url: str,
    tables: EventTables,
    shredded: Iterable[UUID],
    dropped: list[UUID],
) -> int:
    """Seal, in place, the personal fields of events and snapshots stored
    before sealing: the one rewrite of the append-only log (ADR 31). Those of
    the `shredded` owners (erased before sealing) are erased instead: their
    keys are destroyed first, so their fields seal as ERASED; the `dropped`
    streams are deleted (ADR 32).

    As the log's owner, in one transaction with its append-only triggers off
    for that transaction only; then VACUUM FULL, so that no dead copy of a
    rewritten row stays in the table's files. Returns how many rows changed.
    """
    mapper.destroy_keys(shredded)
    changed = 0
    with connect(url, "authledger-setup") as conn, conn.transaction():
        for table in tables.qualified():
            select, update = (
                sql.SQL(query).format(table=table)
                for query in (SELECT_PAGE, UPDATE_STATE)
            )
            with _rewritable(conn, table):
                changed += _delete_streams(conn, table, dropped)
                after: tuple[UUID, int] = (UUID(int=0), -1)
                while rows := conn.execute(select, after).fetchall():
                    for originator_id, version, state in rows:
                        sealed = mapper.sealed_in_place(originator_id, bytes(state))
                        if sealed is not None:
                            conn.execute(update, (sealed, originator_id, version))
                            changed += 1
                    after = rows[-1][0], rows[-1][1]
    if changed:
        _vacuum_fully(url, tables)
    return changed


def drop_stored_streams(url: str, tables: EventTables, streams: list[UUID]) -> int:
    """Delete the events and snapshots of these streams, as the log's owner,
    in one transaction with the append-only triggers off for it only; then
    VACUUM FULL. For streams whose very names reveal personal data (ADR 32).
    Returns how many rows went."""
    dropped = 0
    with connect(url, "authledger-setup") as conn, conn.transaction():
        for table in tables.qualified():
            with _rewritable(conn, table):
                dropped += _delete_streams(conn, table, streams)
    if dropped:
        _vacuum_fully(url, tables)
    return dropped


def _delete_streams(
    conn: Connection[Any], table: sql.Identifier, streams: list[UUID]
) -> int:
    delete = sql.SQL("DELETE FROM {} WHERE originator_id = ANY(%s)").format(table)
    return conn.execute(delete, (streams,)).rowcount


def _vacuum_fully(url: str, tables: EventTables) -> None:
    """Rewrite the tables' files, so that no dead copy of a changed row stays."""
    with connect(url, "authledger-setup") as conn:
        for table in tables.qualified():
            conn.execute(sql.SQL("VACUUM FULL {}").format(table))


@contextmanager
def _rewritable(conn: Connection[Any], table: sql.Identifier) -> Iterator[None]:
    """Within the block (in a transaction), the table's rows may be updated:
    its append-only trigger is off and its NOT VALID checks set aside."""
    checks = conn.execute(CHECKS_NOT_VALID, (table.as_string(conn),)).fetchall()
    conn.execute(sql.SQL(TRIGGER).format(table=table, switch=sql.SQL("DISABLE")))
    for name, _ in checks:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                table, sql.Identifier(name)
            )
        )
    yield
    for name, definition in checks:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                table, sql.Identifier(name), sql.SQL(definition)
            )
        )
    conn.execute(sql.SQL(TRIGGER).format(table=table, switch=sql.SQL("ENABLE")))


def _bound_to(owner: UUID, field: str) -> bytes:
    """What a sealed field is bound to: it opens as that field of that owner only."""
    return f"{owner}:{field}".encode()


def postgres_sealing(
    key_encryption_key: bytes,
) -> MapperFactory:
    """The mapper factory of the event store in PostgreSQL: each application
    its own ring (and cache), over its recorder's connections."""

    def mapper_of(app: Any, transcoder: Transcoder) -> Mapper[UUID]:
        return SealingMapper(
            transcoder, PostgresDataKeyRing(key_encryption_key, lambda: app.recorder)
        )

    return mapper_of


def memory_sealing(
    key_encryption_key: bytes,
) -> MapperFactory:
    """The mapper factory for an in-memory event store."""

    def mapper_of(_app: Any, transcoder: Transcoder) -> Mapper[UUID]:
        return SealingMapper(transcoder, MemoryDataKeyRing(key_encryption_key))

    return mapper_of
