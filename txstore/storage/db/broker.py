# -*- test-case-name: txstore.test.unit.test_container_broker -*-
"""
What container and account databases share: creation, connections, state, metadata, listings.

Everything here is synchronous and blocking; servers call it through the per-device I/O pool.

Durability. A database is built in a temporary file, fsynced and then *linked* to its final name
(``link`` fails instead of clobbering a database that a concurrent PUT created), and the directory
is fsynced: a crash leaves either no database or a complete one, never a half-initialised file at
the final path. Databases run in WAL mode with ``synchronous=FULL``: every commit fsyncs the WAL,
because a 2xx answer promises the update survives a power cut (``NORMAL`` would only promise it
survives a process crash). Batching rows into one transaction (``merge_items``) is how many small
updates share one fsync.

Connections. A broker keeps a few idle connections and hands one to each call, so calls from
several pool threads run in parallel (WAL readers never block, writers queue on SQLite's lock
with a busy timeout) and no call pays for opening the file once the broker is warm.

Names are TEXT with SQLite's default BINARY collation, which compares the UTF-8 bytes with
memcmp; Python orders ``str`` by code point, which is the same order. Range bounds that are not
valid UTF-8 (the successor of a prefix) are bound as bytes and cast to TEXT, which SQLite
compares byte by byte as well.

Row timestamps, records and metadata carry the internal timestamp string (fixed width, so it
sorts like the timestamp); ``get_info()`` returns parsed ``Timestamp`` values for the servers.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from operator import attrgetter
from pathlib import Path
from typing import Any, ClassVar, Generic, NoReturn, TypeVar
from urllib.parse import quote

from attrs import define, field, fields, frozen

from txstore.common.timestamps import Timestamp, TimestampLike

LISTING_LIMIT = 10_000
SCHEMA_VERSION = 1
DEFAULT_TIMEOUT = 10.0
ZERO_TIMESTAMP = Timestamp(0).internal
ZERO_HASH = "0" * 32
_INTERNAL_FORM = re.compile(r"\d{10}\.\d{5}(?:_[0-9a-f]{16})?")
_FIRST_UNRESERVED = b"\x01"  # every name below it begins with NUL: a reserved name
_CHUNK = 500  # names per "IN (...)" lookup: well under SQLite's variable limit

# Both kinds of database keep their replication sync points alike.
SYNC_POINT_SCHEMA = """
CREATE TABLE sync_point (
    remote_id TEXT NOT NULL,
    incoming INTEGER NOT NULL,
    sync_point INTEGER NOT NULL,
    PRIMARY KEY (remote_id, incoming)
) WITHOUT ROWID;
"""


class DatabaseError(Exception):
    """Base class of the errors a broker raises on purpose."""


class DatabaseNotFound(DatabaseError):
    """No database at this path (the server answers 404)."""


class DatabaseAlreadyExists(DatabaseError):
    """``initialize`` found a database at the final path already."""


class DatabaseCorrupt(DatabaseError):
    """The file is not one of our databases, or SQLite finds it damaged (quarantine it)."""


class DatabaseBusy(DatabaseError):
    """The database stayed locked longer than the busy timeout (the server answers 503)."""


class MetadataLimitExceeded(DatabaseError):
    """``update_metadata``'s check refused the merged metadata; nothing was written (400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@frozen
class Subdir:
    """A rolled-up entry of a delimiter listing: every name that starts with ``name``."""

    name: str


@frozen
class DatabaseInfo:
    """What the info of every database holds (`AccountInfo` and `ContainerInfo` add their own)."""

    account: str
    created_at: Timestamp
    put_timestamp: Timestamp
    delete_timestamp: Timestamp
    status_changed_at: Timestamp
    id: str
    hash: str
    object_count: int
    bytes_used: int
    max_row: int


class Row:
    """
    What container and object rows share. A row is a frozen attrs class whose fields are the
    stored columns in order, then ``row_id`` (SQLite's, known once the row is read back).
    """

    __slots__ = ()

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The stored columns, in order."""
        return _columns(cls)

    def stored(self) -> tuple[Any, ...]:
        """The stored values in column order, ``deleted`` as 0 or 1: what the row's hash covers."""
        return tuple(int(v) if isinstance(v, bool) else v for v in _getter(type(self))(self))

    def to_dict(self) -> dict[str, Any]:
        """The replication wire form, which ``merge_items`` accepts back."""
        return dict(zip(_columns(type(self)), self.stored()))


@functools.cache
def _columns(row_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_type) if f.name != "row_id")


@functools.cache
def _getter(row_type: type) -> Callable[[Any], tuple[Any, ...]]:
    return attrgetter(*_columns(row_type))


R = TypeVar("R", bound=Row)
InfoT = TypeVar("InfoT")  # an info class (AccountInfo, ContainerInfo)


def timestamp_string(value: TimestampLike) -> str:
    """The internal form of a timestamp, cheaply when it is one already."""
    if isinstance(value, str) and _INTERNAL_FORM.fullmatch(value):
        return value
    return Timestamp.parse(value).internal


def check_name(name: str | bytes) -> str:
    """
    A row name as stored: valid UTF-8, not empty. It may hold NUL: reserved names
    (`txstore.common.paths`) begin with one. Python binds a ``str`` with its length, so SQLite
    keeps the whole of it and BINARY comparisons (memcmp) order it as the bytes do.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a name must be a non-empty string, not {name!r}")
    name.encode("utf-8")  # lone surrogates cannot be stored
    return name


def check_count(value: Any, what: str) -> int:
    """A size, count or policy index: a non-negative int (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {value!r}")
    return value


def row_hash(values: Sequence[object]) -> int:
    """The md5 of one row's stored values; the database hash is the XOR over all rows."""
    text = "\x00".join(map(str, values)).encode("utf-8")
    return int.from_bytes(hashlib.md5(text, usedforsecurity=False).digest(), "big")


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_directory(path: Path) -> None:
    """``mkdir -p`` that fsyncs each parent whose entries changed, so new directories survive."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        _fsync_path(directory.parent, directory=True)


def _remove_quietly(path: Path) -> None:
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            leftover.unlink()
        except FileNotFoundError:
            pass


def _link_into_place(tmp: Path, final: Path) -> None:
    """Give the finished file its final name without ever replacing an existing database."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise DatabaseAlreadyExists(str(final)) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # No hard links here: check-then-rename leaves a small race, the best available.
        if final.exists():
            raise DatabaseAlreadyExists(str(final)) from None
        os.rename(tmp, final)
    _fsync_path(final.parent, directory=True)


def _raise_translated(error: sqlite3.Error) -> NoReturn:
    """Raise our error for an sqlite3 one the server must react to, else the original."""
    message = str(error).lower()
    if isinstance(error, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
        raise DatabaseBusy(str(error)) from error
    if "malformed" in message or "not a database" in message:
        raise DatabaseCorrupt(str(error)) from error
    raise error


@define
class DatabaseBroker(Generic[R]):
    """
    One database file: the machinery shared by containers and accounts.

    Subclasses name their row table and stats, and say how a row is built, how two versions of
    a row merge and what a live row adds to the stats.
    """

    path: Path = field(converter=Path)
    timeout: float = DEFAULT_TIMEOUT
    #: Where ``initialize`` builds the database before linking it into place (same
    #: filesystem). None: beside the final path.
    tmp_dir: Path | None = None
    max_idle_connections: int = 4
    _idle: list[sqlite3.Connection] = field(factory=list, init=False, repr=False)
    _idle_lock: threading.Lock = field(factory=threading.Lock, init=False, repr=False)

    _application_id: ClassVar[int]
    _row_type: ClassVar[type]  # R
    _item_table: ClassVar[str]
    _stat_columns: ClassVar[tuple[str, ...]]  # counters in "info" a live row adds to: the live rows first
    _reclaim_where: ClassVar[str]  # rows reclaim may drop, with one "?" for the cutoff
    _schema: ClassVar[str]

    @property
    def _item_columns(self) -> tuple[str, ...]:
        """The stored columns after row_id (the row type's): "name" first."""
        return self._row_type.columns()

    def _record(self, row: Sequence[Any]) -> R:
        """A record from ``(row_id, *item_columns)``."""
        return self._row_type(*row[1:], row_id=row[0])

    def _values(self, record: R) -> tuple[Any, ...]:
        """The stored values of a record, in ``_item_columns`` order."""
        return record.stored()

    # -- hooks for subclasses --------------------------------------------------------------

    def _coerce(self, item: R | Mapping[str, Any]) -> R:
        """A checked, normalised record from a record or a mapping (a replication peer's row)."""
        raise NotImplementedError

    def _resolve(self, old: R, new: R) -> R:
        """What is stored when ``new`` meets ``old`` for the same name."""
        raise NotImplementedError

    def _contribution(self, record: R) -> tuple[int, ...]:
        """What the row adds to ``_stat_columns``."""
        raise NotImplementedError

    def _is_empty(self, info: Mapping[str, Any]) -> bool:
        """No live row: the first stat counts them."""
        return info[self._stat_columns[0]] == 0

    # -- connections -----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        uri = "file:" + quote(str(self.path.absolute())) + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.OperationalError as e:
            if not self.path.exists():
                raise DatabaseNotFound(str(self.path)) from None
            _raise_translated(e)
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if app_id != self._application_id or version != SCHEMA_VERSION:
                raise DatabaseCorrupt(
                    f"{self.path}: not a {type(self).__name__} database "
                    f"(application_id {app_id}, schema version {version})"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.Error as e:
            conn.close()
            _raise_translated(e)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        broken = False
        try:
            yield conn
        except sqlite3.Error as e:
            broken = True  # whatever state it is in, this connection is not reused
            _raise_translated(e)
        finally:
            if not broken and not conn.in_transaction:
                with self._idle_lock:
                    if len(self._idle) < self.max_idle_connections:
                        self._idle.append(conn)
                        conn = None
            if conn is not None:
                conn.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute(begin)
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction: takes SQLite's write lock up front, so read-modify-write is safe."""
        return self._transaction("BEGIN IMMEDIATE")

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction: several queries see one snapshot (a listing never tears)."""
        return self._transaction("BEGIN")

    def check_integrity(self, full: bool = False) -> list[str]:
        """
        SQLite's own check of the file (``PRAGMA quick_check``, or ``integrity_check`` with
        ``full``, which also checks that indexes match their tables): ``[]`` when sound,
        otherwise its complaints. A file that is not one of our databases, or that SQLite
        cannot read at all, raises ``DatabaseCorrupt`` as every call does. Blocking.
        """
        pragma = "integrity_check" if full else "quick_check"
        with self._read() as conn:
            complaints = [row[0] for row in conn.execute(f"PRAGMA {pragma}")]
            self._info_row(conn)
        return [] if complaints == ["ok"] else complaints

    def close(self) -> None:
        """Close the idle connections (calls under way keep theirs until they finish)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- creation --------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def _create(self, info: Mapping[str, Any]) -> None:
        """
        Build the database in a temp file and link it into place.

        The temp file lives beside the final path (or in ``tmp_dir``); a crash before the link
        leaves only a ``.tmp`` file for a sweeper, never a database at the final path.
        """
        final = self.path
        _ensure_directory(final.parent)
        if final.exists():
            raise DatabaseAlreadyExists(str(final))
        workdir = self.tmp_dir if self.tmp_dir is not None else final.parent
        _ensure_directory(workdir)
        tmp = workdir / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                # The temp file is thrown away on any failure: no journal needed while building.
                conn.execute("PRAGMA journal_mode = OFF")
                conn.execute("PRAGMA synchronous = OFF")
                conn.execute("BEGIN")
                for statement in self._schema.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                columns = ", ".join(info)
                marks = ", ".join("?" for _ in info)
                conn.execute(f"INSERT INTO info ({columns}) VALUES ({marks})", tuple(info.values()))
                conn.execute("COMMIT")
                conn.execute(f"PRAGMA application_id = {int(self._application_id)}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("PRAGMA journal_mode = WAL")
            finally:
                conn.close()
            _fsync_path(tmp)
            self._publish(tmp, final)
        finally:
            _remove_quietly(tmp)

    def _publish(self, tmp: Path, final: Path) -> None:
        _link_into_place(tmp, final)

    def _initialize(self, put_timestamp: TimestampLike, created_at: TimestampLike | None, **columns: Any) -> None:
        """
        Create the database (`_create`): a fresh id, live since ``put_timestamp``, and the
        info ``columns`` of its kind.
        """
        put = timestamp_string(put_timestamp)
        self._create(
            {
                **columns,
                "created_at": timestamp_string(created_at if created_at is not None else Timestamp.now()),
                "put_timestamp": put,
                "delete_timestamp": ZERO_TIMESTAMP,
                "status_changed_at": put,
                "id": str(uuid.uuid4()),
                "hash": ZERO_HASH,
            }
        )

    # -- state -----------------------------------------------------------------------------

    @staticmethod
    def _info_row(conn: sqlite3.Connection) -> dict[str, Any]:
        cursor = conn.execute("SELECT * FROM info")
        row = cursor.fetchone()
        if row is None:
            raise DatabaseCorrupt("the info row is missing")
        return {column[0]: value for column, value in zip(cursor.description, row)}

    def _max_row(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (self._item_table,)).fetchone()
        return row[0] if row else 0

    def _raw_info(self) -> dict[str, Any]:
        with self._read() as conn:
            info = self._info_row(conn)
            info["max_row"] = self._max_row(conn)
        return info

    def _parsed_info(self, info_type: type[InfoT]) -> InfoT:
        """``info_type`` (a frozen attrs class) from the info row: its Timestamp fields parsed."""
        info = self._raw_info()
        return info_type(
            **{
                f.name: Timestamp.parse(info[f.name]) if f.type in ("Timestamp", Timestamp) else info[f.name]
                for f in fields(info_type)  # type: ignore[arg-type]
            }
        )

    def is_status_deleted(self) -> bool:
        """The last status event was a DELETE (whatever rows are left)."""
        info = self._raw_info()
        return info["delete_timestamp"] > info["put_timestamp"]

    def is_deleted(self) -> bool:
        """Deleted: a DELETE newer than every PUT, and nothing left in it."""
        info = self._raw_info()
        return info["delete_timestamp"] > info["put_timestamp"] and self._is_empty(info)

    def is_empty(self) -> bool:
        return self._is_empty(self._raw_info())

    def _set_status(self, conn: sqlite3.Connection, info: Mapping[str, Any], **timestamps: str) -> bool:
        """
        Raise put/delete timestamps (never lower them) and note when the status flips.

        Returns True when a deleted database became live.
        """
        put = max(info["put_timestamp"], timestamps.get("put_timestamp", ZERO_TIMESTAMP))
        delete = max(info["delete_timestamp"], timestamps.get("delete_timestamp", ZERO_TIMESTAMP))
        was_deleted = info["delete_timestamp"] > info["put_timestamp"]
        now_deleted = delete > put
        changed_at = info["status_changed_at"]
        if was_deleted != now_deleted:
            changed_at = max(changed_at, *timestamps.values())
        conn.execute(
            "UPDATE info SET put_timestamp = ?, delete_timestamp = ?, status_changed_at = ?",
            (put, delete, changed_at),
        )
        return was_deleted and not now_deleted

    def update_put_timestamp(self, timestamp: TimestampLike) -> bool:
        """Record a PUT (newest wins). True when it revived a deleted database."""
        ts = timestamp_string(timestamp)
        with self._write() as conn:
            return self._set_status(conn, self._info_row(conn), put_timestamp=ts)

    def mark_deleted(self, timestamp: TimestampLike) -> None:
        """Record a DELETE; the rows stay (as they are) for replication."""
        ts = timestamp_string(timestamp)
        with self._write() as conn:
            self._set_status(conn, self._info_row(conn), delete_timestamp=ts)
            self._clear_metadata(conn, ts)

    @staticmethod
    def _clear_metadata(conn, ts: str) -> None:
        """
        A DELETE removes the metadata older than it (as tombstones, so replicas merge it): a
        database created again under the same name starts without the old one's ACLs, keys
        or settings, as Swift's does. Metadata written after the DELETE stays.
        """
        (text,) = conn.execute("SELECT metadata FROM info").fetchone()
        current: dict[str, list[str]] = json.loads(text)
        changed = False
        for name, (value, stamp) in current.items():
            if value and ts > stamp:
                current[name] = ["", ts]
                changed = True
        if changed:
            conn.execute("UPDATE info SET metadata = ?", (json.dumps(current, sort_keys=True),))

    # -- metadata --------------------------------------------------------------------------

    def update_metadata(self, updates: Mapping[str, tuple[str, TimestampLike]],
                        check: Callable[[dict[str, str]], str | None] | None = None) -> bool:
        """
        Merge ``{name: (value, timestamp)}``: per name the newest timestamp wins, and an empty
        value is a removal kept as a tombstone so that replicas merge it too. Equal timestamps
        keep the larger value, so replicas agree whatever order updates arrive in.
        ``check`` (a client's request; replication merges whatever replicas hold) sees the
        merged live items and may refuse them with a reason: MetadataLimitExceeded, and nothing
        is written. Returns whether anything changed.
        """
        incoming: dict[str, list[str]] = {}
        for name, (value, ts) in updates.items():
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise ValueError(f"metadata needs string names and values: {name!r}")
            incoming[name] = [value, timestamp_string(ts)]
        if not incoming:
            return False
        with self._write() as conn:
            (text,) = conn.execute("SELECT metadata FROM info").fetchone()
            current: dict[str, list[str]] = json.loads(text)
            changed = False
            for name, (value, ts) in incoming.items():
                old = current.get(name)
                if old is None or (ts, value) > (old[1], old[0]):
                    current[name] = [value, ts]
                    changed = True
            if changed and check is not None:
                reason = check({name: value for name, (value, _ts) in current.items() if value})
                if reason is not None:
                    raise MetadataLimitExceeded(reason)
            if changed:
                conn.execute("UPDATE info SET metadata = ?", (json.dumps(current, sort_keys=True),))
        return changed

    def get_metadata(self, include_tombstones: bool = False) -> dict[str, tuple[str, str]]:
        """``{name: (value, timestamp)}``; tombstones (empty values) only when asked."""
        with self._read() as conn:
            (text,) = conn.execute("SELECT metadata FROM info").fetchone()
        return {
            name: (value, ts)
            for name, (value, ts) in json.loads(text).items()
            if value or include_tombstones
        }

    @property
    def metadata(self) -> dict[str, tuple[str, str]]:
        """The live metadata items, ``{name: (value, timestamp)}``."""
        return self.get_metadata()

    # -- rows ------------------------------------------------------------------------------

    def merge_items(self, items: Iterable[R | Mapping[str, Any]]) -> int:
        """
        Merge many rows in one transaction (one fsync): newest wins per name. Replaced rows get
        a new row id, so replication picks them up from its sync point. Returns how many rows
        were written.
        """
        batch: dict[str, R] = {}
        for item in items:
            record = self._coerce(item)
            name = record.name  # type: ignore[attr-defined]
            earlier = batch.get(name)
            batch[name] = record if earlier is None else self._resolve(earlier, record)
        if not batch:
            return 0
        table, columns = self._item_table, self._item_columns
        with self._write() as conn:
            existing = self._fetch_by_name(conn, list(batch))
            info = self._info_row(conn)
            digest = int(info["hash"], 16)
            deltas = [0] * len(self._stat_columns)
            doomed: list[tuple[int]] = []
            rows: list[tuple[Any, ...]] = []
            for name in sorted(batch):  # index inserts in key order touch fewer pages
                record = batch[name]
                old = existing.get(name)
                if old is not None:
                    record = self._resolve(old, record)
                    old_values = self._values(old)
                    values = self._values(record)
                    if values == old_values:
                        continue
                    doomed.append((old.row_id,))  # type: ignore[attr-defined]
                    digest ^= row_hash(old_values)
                    for i, amount in enumerate(self._contribution(old)):
                        deltas[i] -= amount
                else:
                    values = self._values(record)
                rows.append(values)
                digest ^= row_hash(values)
                for i, amount in enumerate(self._contribution(record)):
                    deltas[i] += amount
            if doomed:
                conn.executemany(f"DELETE FROM {table} WHERE row_id = ?", doomed)
            if rows:
                marks = ", ".join("?" for _ in columns)
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
                updates = ", ".join(f"{column} = {column} + ?" for column in self._stat_columns)
                conn.execute(f"UPDATE info SET {updates}, hash = ?", (*deltas, f"{digest:032x}"))
        return len(rows)

    def _fetch_by_name(self, conn: sqlite3.Connection, names: list[str]) -> dict[str, R]:
        found: dict[str, R] = {}
        select = f"SELECT row_id, {', '.join(self._item_columns)} FROM {self._item_table}"
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for row in conn.execute(f"{select} WHERE name IN ({marks})", chunk):
                found[row[1]] = self._record(row)
        return found

    def get_max_row(self) -> int:
        """The highest row id ever given (0 for none): a replication sync point."""
        with self._read() as conn:
            return self._max_row(conn)

    def get_items_since(self, row_id: int, count: int) -> list[R]:
        """Up to ``count`` rows (deleted ones too) with a row id above ``row_id``, in row id order."""
        select = f"SELECT row_id, {', '.join(self._item_columns)} FROM {self._item_table}"
        with self._read() as conn:
            rows = conn.execute(f"{select} WHERE row_id > ? ORDER BY row_id LIMIT ?", (row_id, count))
            return [self._record(row) for row in rows]

    def reclaim(self, age_cutoff: TimestampLike, batch_size: int = 1000) -> int:
        """
        Drop deleted rows and metadata tombstones older than ``age_cutoff`` (replication has
        carried them everywhere by then). Works in batches so writers are never held up long.
        Returns how many rows went.
        """
        cutoff = timestamp_string(age_cutoff)
        select = (
            f"SELECT row_id, {', '.join(self._item_columns)} FROM {self._item_table} "
            f"WHERE {self._reclaim_where} LIMIT ?"
        )
        removed = 0
        while True:
            with self._write() as conn:
                doomed = [self._record(row) for row in conn.execute(select, (cutoff, batch_size))]
                if doomed:
                    digest = int(self._info_row(conn)["hash"], 16)
                    for record in doomed:
                        digest ^= row_hash(self._values(record))
                    conn.executemany(
                        f"DELETE FROM {self._item_table} WHERE row_id = ?",
                        [(r.row_id,) for r in doomed],  # type: ignore[attr-defined]
                    )
                    conn.execute("UPDATE info SET hash = ?", (f"{digest:032x}",))
            removed += len(doomed)
            if len(doomed) < batch_size:
                break
        with self._write() as conn:
            (text,) = conn.execute("SELECT metadata FROM info").fetchone()
            items = json.loads(text)
            kept = {name: item for name, item in items.items() if item[0] or item[1] >= cutoff}
            if kept != items:
                conn.execute("UPDATE info SET metadata = ?", (json.dumps(kept, sort_keys=True),))
        return removed

    # -- replication -------------------------------------------------------------------------

    def replication_info(self) -> dict[str, Any]:
        """
        What a replication peer needs to compare and merge: the info row (``id``, ``hash``,
        status timestamps, stats), ``max_row``, and the metadata with its tombstones.
        """
        with self._read() as conn:
            info = self._info_row(conn)
            info["max_row"] = self._max_row(conn)
        info["metadata"] = json.loads(info["metadata"])
        return info

    def merge_status(self, put_timestamp: TimestampLike, delete_timestamp: TimestampLike) -> None:
        """Take a replica's PUT and DELETE times (newest wins each; never lowered)."""
        with self._write() as conn:
            self._set_status(
                conn, self._info_row(conn),
                put_timestamp=timestamp_string(put_timestamp), delete_timestamp=timestamp_string(delete_timestamp),
            )

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the whole database in ``target`` (SQLite's online backup), fsynced."""
        copy = sqlite3.connect(str(target), isolation_level=None)
        try:
            with self._connection() as conn:
                conn.backup(copy)
        finally:
            copy.close()
        _fsync_path(target)

    @classmethod
    def adopt_copy(cls, copy: Path, final: Path, peer_id: str, peer_max_row: int) -> None:
        """
        Make ``copy`` (a replica's whole database, received into a temp file) this node's
        database at ``final``: checked first (ours, intact), given an id of its own and a fresh
        sync table that says it holds the peer's rows up to ``peer_max_row``, then linked into
        place (DatabaseAlreadyExists when a database appeared there meanwhile).
        """
        conn = sqlite3.connect(str(copy), isolation_level=None)
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if app_id != cls._application_id or version != SCHEMA_VERSION:
                raise DatabaseCorrupt(f"the copy is not a {cls.__name__} database")
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise DatabaseCorrupt(f"the copy fails its integrity check: {check}")
            conn.execute("BEGIN")
            conn.execute("UPDATE info SET id = ?", (str(uuid.uuid4()),))
            conn.execute("DELETE FROM sync_point")
            conn.execute(
                "INSERT INTO sync_point (remote_id, incoming, sync_point) VALUES (?, 1, ?)", (peer_id, peer_max_row)
            )
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as e:
            raise DatabaseCorrupt(f"the copy cannot be read: {e}") from None
        finally:
            conn.close()
        _fsync_path(copy)
        _ensure_directory(final.parent)
        _link_into_place(copy, final)

    # -- replication sync points -----------------------------------------------------------

    def get_sync(self, remote_id: str, incoming: bool = True) -> int:
        """The row id up to which we synced with the replica ``remote_id`` (-1: never)."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT sync_point FROM sync_point WHERE remote_id = ? AND incoming = ?",
                (remote_id, int(incoming)),
            ).fetchone()
        return row[0] if row else -1

    def set_sync(self, remote_id: str, sync_point: int, incoming: bool = True) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO sync_point (remote_id, incoming, sync_point) VALUES (?, ?, ?) "
                "ON CONFLICT (remote_id, incoming) DO UPDATE SET sync_point = excluded.sync_point",
                (remote_id, int(incoming), sync_point),
            )

    # -- listings --------------------------------------------------------------------------

    def list(
        self,
        limit: int = LISTING_LIMIT,
        marker: str = "",
        end_marker: str = "",
        prefix: str = "",
        delimiter: str = "",
        reverse: bool = False,
        path: str | None = None,
        allow_reserved: bool = True,
    ) -> list[R | Subdir]:
        """
        A page of live rows with Swift's semantics: names strictly between ``marker`` and
        ``end_marker`` (their roles swap when ``reverse``), starting with ``prefix``; with a
        ``delimiter``, names that go on past it (after the prefix) roll up into one ``Subdir``
        each, which counts towards ``limit``. ``path=X`` lists only the direct children of
        ``X/``. Without ``allow_reserved``, reserved names (beginning with NUL, which sort
        first) are left out: the walk starts past them.

        Every step is an index seek: after a subdir the next query starts just past all of its
        names, so a roll-up costs one query however many rows it hides.
        """
        if not 0 <= limit <= LISTING_LIMIT:
            raise ValueError(f"limit must be between 0 and {LISTING_LIMIT}, not {limit}")
        only_children = path is not None
        if path is not None:
            prefix = path.rstrip("/") + "/" if path else ""
            delimiter = "/"
        if limit == 0:
            return []
        with self._read() as conn:
            return self._walk(conn, limit, marker, end_marker, prefix, delimiter, reverse, only_children,
                              allow_reserved)

    def _walk(
        self,
        conn: sqlite3.Connection,
        limit: int,
        marker: str,
        end_marker: str,
        prefix: str,
        delimiter: str,
        reverse: bool,
        only_children: bool,
        allow_reserved: bool = True,
    ) -> list[R | Subdir]:
        # The range still to walk, as (bound, inclusive?) at each end.
        low, high = (end_marker, marker) if reverse else (marker, end_marker)
        lower: tuple[bytes, bool] | None = (low.encode("utf-8"), False) if low else None
        upper: tuple[bytes, bool] | None = (high.encode("utf-8"), False) if high else None
        if not allow_reserved and (lower is None or lower[0] < _FIRST_UNRESERVED):
            lower = (_FIRST_UNRESERVED, True)
        if prefix:
            encoded = prefix.encode("utf-8")
            if lower is None or lower[0] < encoded:
                lower = (encoded, True)
            after = _successor(encoded)
            if after is not None and (upper is None or after <= upper[0]):
                upper = (after, False)
        columns = f"row_id, {', '.join(self._item_columns)}"
        order = "DESC" if reverse else "ASC"
        results: list[R | Subdir] = []
        while len(results) < limit:
            where = ["deleted = 0"]
            params: list[Any] = []
            if lower is not None:
                where.append("name >= CAST(? AS TEXT)" if lower[1] else "name > CAST(? AS TEXT)")
                params.append(lower[0])
            if upper is not None:
                where.append("name <= CAST(? AS TEXT)" if upper[1] else "name < CAST(? AS TEXT)")
                params.append(upper[0])
            wanted = limit - len(results)
            params.append(wanted)
            cursor = conn.execute(
                f"SELECT {columns} FROM {self._item_table} WHERE {' AND '.join(where)} "
                f"ORDER BY name {order} LIMIT ?",
                params,
            )
            if not delimiter:
                # Nothing to roll up: the page is exactly what the query returns.
                results.extend(map(self._record, cursor.fetchall()))
                break
            seen = 0
            skip_to: str | None = None  # a directory prefix whose other names to jump past
            keep_directory = False  # with path, "dir/" itself is a listed child
            last = ""
            for row in cursor:
                seen += 1
                name = last = row[1]
                if only_children and name == prefix:
                    continue
                cut = name.find(delimiter, len(prefix))
                if cut >= 0:
                    end = cut + len(delimiter)
                    if not only_children:
                        if name[:end] != marker:
                            results.append(Subdir(name[:end]))
                        skip_to = name[:end]
                        break
                    if end < len(name):
                        skip_to = name[:end]
                        keep_directory = True
                        break
                results.append(self._record(row))
            cursor.close()
            if skip_to is not None:
                encoded = skip_to.encode("utf-8")
                if reverse:
                    upper = (encoded, keep_directory)
                else:
                    lower = (_successor(encoded) or encoded, True)
            elif seen < wanted:
                break  # the range is exhausted
            elif reverse:
                upper = (last.encode("utf-8"), False)
            else:
                lower = (last.encode("utf-8"), False)
        return results
