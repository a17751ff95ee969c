# -*- test-case-name: txstore.test.unit.test_diskfile -*-
"""
The object storage layer of a storage node: objects as files on local devices.

Everything here is synchronous and may block; the object server calls it through an
``IBlockingRunner`` with one pool per device, so hashing, fsync and renames never run on the
reactor thread.

Layout, under ``<devices>/<device>/``::

    objects[-<policy>]/<part>/<suffix>/<hash>/<ts>.data | <ts>.meta | <ts>.ts
    objects[-<policy>]/<part>/hashes.invalid
    tmp/                                    writes in flight
    async_pending[-<policy>]/<suffix>/<hash>-<ts>
    expiring[-<policy>]/<bucket>/<delete_at>-<hash>   the expiry queue (see `expiring`)

Every path is built from validated parts only (a device name, ints, the hex hash, timestamps):
the object's name lives only in the metadata, so no name can reach outside the device.

Durability: every file is written whole into ``tmp/`` (body, then the metadata footer of
`txstore.storage.objmeta`), fsynced, renamed into its object directory and the directory
fsynced. A crash at any point leaves either the old state or the new one, plus at most an
orphaned temp file that `DiskFileManager.cleanup_tmp` removes.

Which files count (applied on every read and by the cleanup after every change): the newest of
the .data and .ts files wins (a .ts wins a tie); a .data that wins makes the object exist, a .ts
that wins makes it deleted; the newest .meta is kept while it is newer than the winner and, when
the winner is a .data, replaces its mutable metadata. Everything older is obsolete and removed
by the change that made it so. Changes of one object are serialised by an ``flock`` on its
directory, under which the new file's timestamp is checked against what is there: a write that
is not newer is refused with `DiskFileConflict`, so concurrent writers always leave the newest.

Erasure-coded policies (`DiskFileManager.ec_policies`): an object is fragment archives, written
``<ts>#<index>.data`` and renamed ``<ts>#<index>#d.data`` by `DiskFile.mark_durable` (the second
phase of an EC PUT); reads and cleanups follow `select_ec_files` instead, so an archive whose
mark never came (a crash, a failed PUT) is kept but never served. Tombstones and .meta files
are the same as for replicas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from attrs import define, field, frozen
from twisted.logger import Logger

from txstore.common.hashing import PathHasher
from txstore.common.timestamps import Timestamp, TimestampLike
from txstore.storage import async_pending, checksum, expiring, objmeta, suffixes
from txstore.storage.async_pending import AsyncPending
from txstore.storage.checksum import Checksum, Md5, SentMd5
from txstore.storage.durable_queue import DurableQueue, QueueLayout
from txstore.storage.expiring import ExpiringEntry

DATA = ".data"
META = ".meta"
TOMBSTONE = ".ts"
TMP_DIR = "tmp"
OBJECTS_DIR = "objects"
QUARANTINE_DIR = "quarantined"

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_FALLOCATE_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
_FILE_NAME = re.compile(
    r"^(?P<ts>\d{10}\.\d{5}(?:_[0-9a-f]{16})?)"
    r"(?:#(?P<frag>0|[1-9][0-9]*)(?P<durable>#d)?)?"
    r"(?P<ext>\.data|\.meta|\.ts)$"
)
_HASH = re.compile(r"^[0-9a-f]{32}$")
_READ_RETRIES = 10


class _SyncFileRangeUnsupported(Exception):
    """``sync_file_range`` is not available for this file; writeback falls back to fadvise."""


class DiskFileError(Exception):
    """Base of every error of the object storage layer."""


class DiskFileDeviceUnavailable(DiskFileError):
    """The device is missing or, with mount_check, not mounted: the server answers 507."""


class DiskFileNotFound(DiskFileError):
    """The object does not exist (or no longer does)."""


class DiskFileNoSpace(DiskFileError):
    """The device is full (ENOSPC/EDQUOT): the server answers 507."""


class DiskFileLockTimeout(DiskFileError):
    """Another change of the same object held its lock too long."""


class DiskFileConflict(DiskFileError):
    """A change not newer than what is stored: the server answers 409."""

    def __init__(self, message: str, previous: ObjectState) -> None:
        super().__init__(message)
        self.previous = previous


class DiskFileCorrupt(DiskFileError):
    """A file whose footer or length does not check out: the auditor's to quarantine."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@contextmanager
def _no_space_as_error() -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise DiskFileNoSpace(str(error)) from error
        raise


def objects_dir_name(policy_index: int) -> str:
    """``objects`` for policy 0, ``objects-<index>`` for the others."""
    _check_index(policy_index, "policy index")
    return OBJECTS_DIR if policy_index == 0 else f"{OBJECTS_DIR}-{policy_index}"


def _check_index(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a {what}: {value!r}")
    return value


def check_device_name(device: str) -> str:
    """A device name is one plain path component: it must not lead anywhere else."""
    if (
        not isinstance(device, str)
        or not device
        or device in (".", "..")
        or "/" in device
        or "\0" in device
    ):
        raise ValueError(f"not a device name: {device!r}")
    return device


@frozen(order=False)
class OnDiskFile:
    """One file of an object directory, as its name describes it."""

    timestamp: Timestamp
    ext: str
    frag_index: int | None = None
    durable: bool = False

    @property
    def name(self) -> str:
        frag = "" if self.frag_index is None else f"#{self.frag_index}" + ("#d" if self.durable else "")
        return f"{self.timestamp.internal}{frag}{self.ext}"


def parse_file_name(name: str) -> OnDiskFile | None:
    """What a file name in an object directory means; None for anything not ours."""
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    frag = match["frag"]
    if frag is not None and match["ext"] != DATA:
        return None
    try:
        timestamp = Timestamp.parse(match["ts"])
    except ValueError:
        return None
    parsed = OnDiskFile(timestamp, match["ext"], None if frag is None else int(frag), bool(match["durable"]))
    return parsed if parsed.name == name else None


@frozen
class FileSelection:
    """The files of an object directory that count, and those a cleanup may remove."""

    data: OnDiskFile | None = None
    meta: OnDiskFile | None = None
    tombstone: OnDiskFile | None = None
    obsolete: tuple[OnDiskFile, ...] = ()


def select_files(files: Iterable[OnDiskFile]) -> FileSelection:
    """
    Apply the newest-wins rules to the files of one object directory (replication policy:
    fragment archives are left alone for the EC policy's own rules, `select_ec_files`).
    """
    mine = [f for f in files if f.frag_index is None]
    data, meta, tomb = (
        max((f for f in mine if f.ext == ext), key=_by_time, default=None) for ext in (DATA, META, TOMBSTONE)
    )
    winner = None
    if tomb is not None and (data is None or tomb.timestamp >= data.timestamp):
        winner = tomb
    elif data is not None:
        winner = data
    if meta is not None and winner is not None and meta.timestamp <= winner.timestamp:
        meta = None
    keep = {winner, meta} - {None}
    obsolete = tuple(sorted((f for f in mine if f not in keep), key=_by_time))
    if winner is not None and winner is tomb:
        return FileSelection(None, meta, tomb, obsolete)
    return FileSelection(winner, meta, None, obsolete)


def _readonly_fragments(value: Mapping[int, OnDiskFile]) -> Mapping[int, OnDiskFile]:
    return MappingProxyType(dict(value))


@frozen
class ECFileSelection:
    """
    The files of an erasure-coded object's directory that count: the fragment archives of its
    newest durable version (a handoff may hold several indexes), the newer ones still waiting
    for their commit, and what a cleanup may remove.
    """

    durable_timestamp: Timestamp | None = None
    fragments: Mapping[int, OnDiskFile] = field(factory=dict, converter=_readonly_fragments)
    non_durable: tuple[OnDiskFile, ...] = ()
    meta: OnDiskFile | None = None
    tombstone: OnDiskFile | None = None
    obsolete: tuple[OnDiskFile, ...] = ()


def select_ec_files(files: Iterable[OnDiskFile]) -> ECFileSelection:
    """
    The rules for an EC policy's object directory (Swift's):

    - A fragment archive is written as ``<ts>#<index>.data`` and renamed ``<ts>#<index>#d.data``
      once the proxy has seen enough nodes store theirs (the second phase of an EC PUT): a
      version is *durable* at a timestamp when any of its archives there is marked so, and
      then every archive at that timestamp counts (the others' marks are on their way).
    - The newest durable version wins, unless a tombstone is as new or newer (deleted).
    - Archives newer than the winner that are not durable are kept: their commit may still
      come, and until it does they are never served. Older ones, durable or not, are obsolete.
    - A .meta newer than the winner applies, as for replicated objects.
    """
    files = list(files)
    data = [f for f in files if f.ext == DATA and f.frag_index is not None]
    tomb = max((f for f in files if f.ext == TOMBSTONE), key=_by_time, default=None)
    meta = max((f for f in files if f.ext == META), key=_by_time, default=None)
    durable_ts = max((f.timestamp for f in data if f.durable), default=None)
    if tomb is not None and (durable_ts is None or tomb.timestamp >= durable_ts):
        winner_ts: Timestamp | None = tomb.timestamp
        fragments: dict[int, OnDiskFile] = {}
        durable_ts = None
    else:
        tomb = None
        winner_ts = durable_ts
        fragments = {}
        for f in sorted((f for f in data if f.timestamp == durable_ts), key=lambda f: not f.durable):
            fragments.setdefault(f.frag_index, f)  # a marked archive over an unmarked twin
    non_durable = tuple(sorted(
        (f for f in data if not f.durable and (winner_ts is None or f.timestamp > winner_ts)), key=_by_time
    ))
    if meta is not None and winner_ts is not None and meta.timestamp <= winner_ts:
        meta = None
    keep = {*fragments.values(), *non_durable, tomb, meta} - {None}
    obsolete = tuple(sorted((f for f in files if f not in keep), key=_by_time))
    return ECFileSelection(durable_ts, fragments, non_durable, meta, tomb, obsolete)


def _by_time(item: OnDiskFile) -> Timestamp:
    return item.timestamp


def _readonly(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@frozen
class ObjectState:
    """
    What an object directory holds, after the rules. ``timestamp`` is the data's;
    ``meta_timestamp`` is set only when a .meta applies; ``metadata`` is the merged dict (the
    tombstone's own metadata when deleted). Expiry (X-Delete-At) is the server's to decide.
    """

    exists: bool = False
    timestamp: Timestamp | None = None
    meta_timestamp: Timestamp | None = None
    tombstone_timestamp: Timestamp | None = None
    metadata: Mapping[str, str] = field(factory=dict, converter=_readonly)
    content_length: int | None = None
    data_path: Path | None = None
    # EC policies: the index of the fragment archive ``data_path`` is (None for replicas), and
    # the indexes of every archive of that durable version this node holds (a handoff: several).
    frag_index: int | None = None
    fragments: tuple[int, ...] = ()

    @property
    def deleted(self) -> bool:
        return self.tombstone_timestamp is not None

    @property
    def newest_timestamp(self) -> Timestamp | None:
        """The newest event seen: what ``X-Backend-Timestamp`` reports."""
        times = [t for t in (self.timestamp, self.meta_timestamp, self.tombstone_timestamp) if t]
        return max(times, default=None)


NOT_FOUND = ObjectState()


def _async_group(name: str) -> str | None:
    parsed = async_pending.parse_pending_name(name)
    return parsed[0][-3:] if parsed is not None else None


def _expiry_group(name: str) -> str | None:
    parsed = expiring.parse_entry_name(name)
    return expiring.bucket_name(parsed[0]) if parsed is not None else None


ASYNC_PENDINGS = QueueLayout("async pending", async_pending.policy_of_dir, _async_group)
EXPIRY_QUEUE = QueueLayout("expiry entry", expiring.policy_of_dir, _expiry_group)


@define
class DiskFileManager:
    """The object storage of one node's devices: where files go and how they get there."""

    log = Logger()

    devices: Path = field(converter=Path)
    mount_check: bool
    hasher: PathHasher
    fsync: bool = field(default=True, kw_only=True)
    # Large bodies bypass the page cache (`DiskFileWriter`); off, every body goes through it.
    direct_writes: bool = field(default=True, kw_only=True)
    # Large bodies read past the page cache (`DiskFileReader.direct`); off, through it.
    direct_reads: bool = field(default=True, kw_only=True)
    # A PUT's declared size reserved up front (`DiskFile.create_writer`); off (Swift's
    # disable_fallocate, as its all-in-one runs), a full disk is found only as the body is written.
    fallocate: bool = field(default=True, kw_only=True)
    lock_timeout: float = field(default=10.0, kw_only=True)
    # The indexes of the erasure-coded policies: their objects are fragment archives.
    ec_policies: frozenset[int] = field(factory=frozenset, converter=frozenset, kw_only=True)
    # The device's two durable queues (`txstore.storage.durable_queue`).
    async_pendings: DurableQueue = field(init=False)
    expiry_queue: DurableQueue = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.async_pendings = DurableQueue(self, ASYNC_PENDINGS)
        self.expiry_queue = DurableQueue(self, EXPIRY_QUEUE)

    def device_path(self, device: str) -> Path | None:
        """The device's directory, or None when it cannot be used (the server answers 507)."""
        path = self.devices / check_device_name(device)
        if self.mount_check and not os.path.ismount(path):
            return None
        if not path.is_dir():
            return None
        return path

    def _require_device(self, device: str) -> Path:
        path = self.device_path(device)
        if path is None:
            raise DiskFileDeviceUnavailable(f"device {device!r} is not available")
        return path

    def get_diskfile(
        self,
        device: str,
        partition: int,
        account: str,
        container: str,
        obj: str,
        policy_index: int = 0,
    ) -> DiskFile:
        _check_index(partition, "partition")
        _check_index(policy_index, "policy index")
        for name in (account, container, obj):
            if not isinstance(name, str) or not name:
                raise ValueError("account, container and object names must be non-empty str")
        name_hash = self.hasher.hash_path(account, container, obj)
        return DiskFile(
            manager=self,
            device=device,
            device_path=self._require_device(device),
            partition=partition,
            policy_index=policy_index,
            account=account,
            container=container,
            obj=obj,
            name_hash=name_hash,
            ec=policy_index in self.ec_policies,
        )

    def partition_path(self, device: str, policy_index: int, partition: int) -> Path:
        return self.devices / check_device_name(device) / objects_dir_name(policy_index) / str(
            _check_index(partition, "partition")
        )

    def invalidate_suffix(self, device: str, policy_index: int, partition: int, suffix: str) -> None:
        """Record that an object of ``suffix`` changed, for the replicator's next hash pass."""
        suffixes.invalidate_suffix(self.partition_path(device, policy_index, partition), suffix)

    # Async pendings

    def write_async_pending(
        self,
        device: str,
        policy_index: int,
        op: str,
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str],
        timestamp: TimestampLike,
    ) -> Path:
        """Save a container update for the updater, durably; returns the file written."""
        timestamp = Timestamp.parse(timestamp)
        pending = AsyncPending(op, account, container, obj, headers, timestamp, policy_index)
        device_path = self._require_device(device)
        name_hash = self.hasher.hash_path(account, container, obj)
        target = (
            device_path / async_pending.async_dir_name(policy_index) / name_hash[-3:]
            / async_pending.pending_name(name_hash, timestamp)
        )
        return self.async_pendings.put(device_path, target, async_pending.encode_pending(pending), "tmp-")

    def list_async_pendings(self, device: str, policy_index: int | None = None) -> list[Path]:
        """Pending files of one policy (or of all, with None), oldest first per object."""
        device_path = self._require_device(device)
        found = []
        for directory in self.async_pendings.dirs(device_path, policy_index):
            found.extend(async_pending.list_pendings(directory))
        return found

    def read_async_pending(self, path: Path) -> AsyncPending:
        path = self.async_pendings.check(path)
        try:
            return async_pending.decode_pending(path.read_bytes())
        except async_pending.PendingCorrupt as error:
            raise DiskFileCorrupt(path, str(error)) from None

    def remove_async_pending(self, path: Path) -> None:
        """Remove a pending once sent (or superseded); its suffix directory too once empty."""
        self.async_pendings.remove(path)

    # The expiry queue

    def write_expiring(self, device_path: Path, entry: ExpiringEntry) -> Path:
        """Record that an object is due at ``entry.delete_at``, durably; returns the file."""
        target = (
            device_path / expiring.expiring_dir_name(entry.policy_index) / expiring.bucket_name(entry.delete_at)
            / expiring.entry_name(entry.delete_at, entry.name_hash)
        )
        return self.expiry_queue.put(device_path, target, expiring.encode_entry(entry), "expiring-")

    def list_expiring(self, device: str, now: float) -> list[Path]:
        """The queue entries of every policy on ``device`` due at ``now``, oldest first."""
        device_path = self._require_device(device)
        found = []
        for directory in self.expiry_queue.dirs(device_path):
            found.extend(expiring.list_due(directory, now))
        return found

    def read_expiring(self, path: Path) -> ExpiringEntry:
        path = self.expiry_queue.check(path)
        try:
            return expiring.decode_entry(path.read_bytes(), path.name)
        except expiring.EntryCorrupt as error:
            raise DiskFileCorrupt(path, str(error)) from None

    def remove_expiring(self, path: Path) -> None:
        """Remove a queue entry (done or stale), and its bucket directory once empty."""
        self.expiry_queue.remove(path)

    def _rename_into(self, temp: Path, target: Path, device_path: Path) -> None:
        """Rename a finished temp file to ``target``, making its directories, and fsync them."""
        for attempt in range(2):
            self._make_dirs(target.parent, device_path)
            try:
                with _no_space_as_error():
                    os.rename(temp, target)
                break
            except FileNotFoundError:
                # A daemon removed the emptied directory meanwhile: make it again.
                if attempt:
                    raise
        self._fsync_dir(target.parent)

    # Temp files

    def tmp_path(self, device_path: Path) -> Path:
        tmp = device_path / TMP_DIR
        tmp.mkdir(exist_ok=True)
        return tmp

    def cleanup_tmp(self, device: str, modified_before: float) -> int:
        """
        Remove the temp files last modified before ``modified_before`` (wall-clock seconds);
        returns how many. At start, the node's start: every file older is an orphan of an
        earlier life, and a write begun since is spared; later passes allow for slow uploads.
        """
        device_path = self._require_device(device)
        removed = 0
        try:
            entries = list(os.scandir(device_path / TMP_DIR))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime < modified_before:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            self.log.info("Removed {count} orphaned temp files from {device}", count=removed, device=device)
        return removed

    def _open_temp(self, device_path: Path, prefix: str) -> tuple[int, Path]:
        with _no_space_as_error():
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=self.tmp_path(device_path))
        return fd, Path(name)

    def _write_temp(self, device_path: Path, payload: bytes, prefix: str = "tmp-",
                    target_dir: Path | None = None) -> Path:
        """
        A temp file holding ``payload``, fsynced and closed: ready to rename into place, into
        ``target_dir`` if given (made with the fsync, `_fsync_with_dirs`).
        """
        fd, path = self._open_temp(device_path, prefix)
        try:
            with _no_space_as_error():
                _write_all(fd, payload)
                self._fsync_with_dirs(fd, target_dir, device_path)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return path

    # Directories

    def _make_dirs(self, path: Path, root: Path) -> None:
        """
        ``mkdir -p`` below ``root``, then fsync the parent of each directory it created, the
        deepest first: the first fsync forces the filesystem's log past every ``mkdir``, so the
        others find nothing left to write (one fsync after each ``mkdir`` forced the log once
        per level: a PUT into a new partition paid three log forces instead of one).
        """
        self._sync_made(self._mkdirs(path, root))

    def _mkdirs(self, path: Path, root: Path) -> list[Path]:
        """
        ``mkdir -p`` below ``root`` without any fsync; returns the directories it made, the
        deepest first, for `_sync_made` (made before a file's fsync: `_fsync_with_dirs`, which
        spares a new object one of its three log forces; XFS and ext4 commit in order).
        """
        missing = []
        current = path
        while current != root and not current.is_dir():
            missing.append(current)
            current = current.parent
        for directory in reversed(missing):
            with _no_space_as_error():
                try:
                    directory.mkdir()
                except FileExistsError:
                    pass
        return missing

    def _sync_made(self, made: list[Path]) -> None:
        """fsync the parent of each directory `_mkdirs` made, the deepest first."""
        for directory in made:
            self._fsync_dir(directory.parent)

    def _fsync_with_dirs(self, fd: int, directory: Path | None, root: Path) -> None:
        """
        fsync the file ``fd`` with ``directory`` (if given) made below ``root`` just before:
        the file's log force carries the ``mkdir``s, and the fsyncs of the new directories'
        parents, done after it, find nothing left to write.
        """
        made = self._mkdirs(directory, root) if directory is not None else []
        if self.fsync:
            os.fsync(fd)
        self._sync_made(made)

    def _fsync_dir(self, path: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@define
class DiskFile:
    """One object on one device: read its state, write, post, delete, open for reading."""

    manager: DiskFileManager
    device: str
    device_path: Path
    partition: int
    policy_index: int
    account: str
    container: str
    obj: str
    name_hash: str
    # An erasure-coded policy's object: fragment archives, `select_ec_files`.
    ec: bool = False

    @property
    def name(self) -> str:
        """The name stored in the metadata (the only place a name lives)."""
        return f"/{self.account}/{self.container}/{self.obj}"

    @property
    def suffix(self) -> str:
        return self.name_hash[-3:]

    # Computed once: a PUT asks for them a dozen times, and each pathlib join parses again.
    @cached_property
    def partition_path(self) -> Path:
        return self.device_path / objects_dir_name(self.policy_index) / str(self.partition)

    @cached_property
    def hash_dir(self) -> Path:
        return self.partition_path / self.suffix / self.name_hash

    def expiring_entry(self, delete_at: int) -> ExpiringEntry:
        return ExpiringEntry(
            self.account, self.container, self.obj, self.partition, self.policy_index, delete_at, self.name_hash
        )

    # Reading

    def list_files(self) -> list[OnDiskFile]:
        try:
            names = os.listdir(self.hash_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [parsed for parsed in map(parse_file_name, names) if parsed is not None]

    def read_metadata(self, frag_index: int | None = None) -> ObjectState:
        """
        The object's state; DiskFileCorrupt when a file that counts does not check out. For an
        EC object, the state of fragment archive ``frag_index`` of the newest durable version
        (not found when this node holds no such archive), or with None the one it holds (a
        marked archive first, then the lowest index); archives not yet durable never count.
        """
        if frag_index is not None:
            self._check_frag_index(frag_index)
        for _ in range(_READ_RETRIES):
            try:
                return self._state_of(self._select(self.list_files()), frag_index=frag_index)
            except FileNotFoundError:
                # A concurrent change cleaned up a file we had listed: look again.
                continue
        raise DiskFileError(f"{self.hash_dir} kept changing while being read")

    def _read_footer(self, item: OnDiskFile) -> objmeta.Footer:
        path = self.hash_dir / item.name
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            footer = objmeta.read_footer(fd)
        except objmeta.FooterError as error:
            raise DiskFileCorrupt(path, str(error)) from None
        finally:
            os.close(fd)
        if footer.metadata.get("X-Timestamp") != item.timestamp.internal:
            raise DiskFileCorrupt(path, "X-Timestamp in the metadata differs from the file name")
        if item.ext == DATA:
            if footer.metadata.get("Content-Length") != str(footer.body_length):
                reason = f"Content-Length differs from the {footer.body_length} bytes of body"
                raise DiskFileCorrupt(path, reason)
        elif footer.body_length:
            raise DiskFileCorrupt(path, f"{footer.body_length} unexpected bytes before the metadata")
        return footer

    def _select(self, files: Iterable[OnDiskFile]) -> FileSelection | ECFileSelection:
        """This object's rules: `select_ec_files` for an EC policy, else `select_files`."""
        return select_ec_files(files) if self.ec else select_files(files)

    def _check_frag_index(self, frag_index: int | None) -> None:
        if not self.ec:
            raise ValueError(f"{self.name}: a fragment index for a replicated policy")
        _check_index(frag_index, "fragment index")

    def _state_of(
        self, selection: FileSelection | ECFileSelection, *, tolerant: bool = False, frag_index: int | None = None
    ) -> ObjectState:
        if isinstance(selection, ECFileSelection):
            chosen = None
            if frag_index is not None:
                chosen = selection.fragments.get(frag_index)
            elif selection.fragments:
                chosen = min(selection.fragments.values(), key=lambda f: (not f.durable, f.frag_index))
            if chosen is None and selection.tombstone is None:
                return NOT_FOUND
            held = tuple(sorted(selection.fragments))
            selection = FileSelection(chosen, selection.meta, selection.tombstone)
        else:
            held = ()

        def footer(item: OnDiskFile) -> objmeta.Footer | None:
            try:
                return self._read_footer(item)
            except DiskFileCorrupt:
                if not tolerant:
                    raise
                return None

        if selection.tombstone is not None:
            tomb = footer(selection.tombstone)
            return ObjectState(
                tombstone_timestamp=selection.tombstone.timestamp,
                metadata=tomb.metadata if tomb else {},
            )
        if selection.data is None:
            return NOT_FOUND
        data = footer(selection.data)
        metadata = data.metadata if data else {}
        meta_timestamp = None
        if selection.meta is not None:
            meta = footer(selection.meta)
            metadata = objmeta.merge_metadata(metadata, meta.metadata if meta else {})
            meta_timestamp = selection.meta.timestamp
        return ObjectState(
            exists=True,
            timestamp=selection.data.timestamp,
            meta_timestamp=meta_timestamp,
            metadata=metadata,
            content_length=data.body_length if data else None,
            data_path=self.hash_dir / selection.data.name,
            frag_index=selection.data.frag_index,
            fragments=held,
        )

    def open_reader(self, state: ObjectState) -> DiskFileReader:
        """
        Open the data file ``state`` describes. The descriptor stays open, so a newer PUT or a
        DELETE meanwhile does not disturb a response under way.
        """
        if not state.exists or state.data_path is None or state.content_length is None:
            raise DiskFileNotFound(f"{self.name} does not exist")
        try:
            fd = os.open(state.data_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DiskFileNotFound(f"{state.data_path} is gone") from None
        if os.fstat(fd).st_size < state.content_length + objmeta.TRAILER_SIZE:
            os.close(fd)
            raise DiskFileCorrupt(state.data_path, "shorter than its Content-Length")
        expected = state.metadata.get(checksum.BODY_CHECKSUM) or state.metadata.get("ETag", "")
        return DiskFileReader(fd, state, EtagVerifier(expected, state.content_length))

    # Writing

    def create_writer(self, size_hint: int | None = None, *, frag_index: int | None = None,
                      body_checksum: Checksum | None = None) -> DiskFileWriter:
        """
        A temp file for a PUT's body, with ``size_hint`` bytes reserved when known (unless the
        manager's ``fallocate`` is off). An EC object's writer needs the ``frag_index`` of the
        archive it writes (and a replicated one's none): it commits ``<ts>#<frag_index>.data``,
        not durable until `mark_durable`. The body is hashed with ``body_checksum`` (a copy
        made by replication keeps the kind its source has), else as new bodies are
        (`txstore.storage.checksum.for_body`).
        """
        if self.ec or frag_index is not None:
            self._check_frag_index(frag_index)
        fd, path = self.manager._open_temp(self.device_path, f"{self.name_hash}-")
        reserve = size_hint if self.manager.fallocate else None
        try:
            if reserve:
                try:
                    os.posix_fallocate(fd, 0, reserve + objmeta.TRAILER_SIZE)
                except OSError as error:
                    if error.errno in _NO_SPACE:
                        raise DiskFileNoSpace(f"no room for {reserve} bytes on {self.device}") from error
                    if error.errno not in _FALLOCATE_UNSUPPORTED:
                        raise
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        writer = DiskFileWriter(self, path, fd, allocated=bool(reserve), frag_index=frag_index,
                                checksum=body_checksum or checksum.for_body(frag_index))
        if size_hint is not None and size_hint >= DIRECT_WRITE_MIN and self.manager.direct_writes:
            writer._start_direct()
        return writer

    def write_metadata(self, metadata: Mapping[str, str], timestamp: TimestampLike) -> ObjectState:
        """
        A POST: write ``<ts>.meta``. DiskFileNotFound when the object does not exist,
        DiskFileConflict when ``timestamp`` is not newer than its data and metadata.
        Returns the state before.
        """
        timestamp = Timestamp.parse(timestamp)

        def check(previous: ObjectState) -> None:
            if not previous.exists:
                raise DiskFileNotFound(f"{self.name} does not exist")
            newest = max(t for t in (previous.timestamp, previous.meta_timestamp) if t)
            if timestamp <= newest:
                raise DiskFileConflict(f"{timestamp.internal} is not newer than {newest.internal}", previous)

        if not self.hash_dir.is_dir():
            raise DiskFileNotFound(f"{self.name} does not exist")
        return self._write_small(metadata, timestamp, META, check)

    def delete(self, timestamp: TimestampLike, metadata: Mapping[str, str] | None = None) -> ObjectState:
        """
        A DELETE: write ``<ts>.ts`` even when nothing is there (the tombstone must replicate).
        DiskFileConflict when ``timestamp`` is not newer than the data or tombstone. Returns
        the state before, so the server can answer 404 when there was nothing.
        """
        timestamp = Timestamp.parse(timestamp)
        return self._write_small(metadata or {}, timestamp, TOMBSTONE, self._newer_than_data(timestamp))

    def _newer_than_data(self, timestamp: Timestamp, frag_index: int | None = None) -> Callable[[ObjectState], None]:
        def check(previous: ObjectState) -> None:
            current = previous.timestamp or previous.tombstone_timestamp
            if frag_index is not None and previous.exists and current == timestamp and frag_index not in previous.fragments:
                return  # another archive of the durable version (a handoff may hold several)
            if current is not None and timestamp <= current:
                raise DiskFileConflict(f"{timestamp.internal} is not newer than {current.internal}", previous)

        return check

    def _stamped(self, metadata: Mapping[str, str], timestamp: Timestamp) -> dict[str, str]:
        objmeta.check_metadata(metadata)
        stamped = dict(metadata)
        stamped["name"] = self.name
        stamped["X-Timestamp"] = timestamp.internal
        return stamped

    def _write_small(
        self,
        metadata: Mapping[str, str],
        timestamp: Timestamp,
        ext: str,
        check: Callable[[ObjectState], None],
    ) -> ObjectState:
        stamped = self._stamped(metadata, timestamp)
        footer = objmeta.encode_footer(stamped)
        temp = self.manager._write_temp(self.device_path, footer, prefix=f"{self.name_hash}-",
                                        target_dir=self.hash_dir)
        delete_at = expiring.delete_at_of(stamped) if ext == META else None
        return self._install(temp, OnDiskFile(timestamp, ext), check, delete_at)

    def _install(
        self, temp: Path, new: OnDiskFile, check: Callable[[ObjectState], None], delete_at: int | None = None
    ) -> ObjectState:
        """
        Move a complete, fsynced temp file into the object directory, if ``check`` lets it;
        remove what it made obsolete; invalidate the suffix. The temp file is gone afterwards
        whatever happens. Returns the state before the change.

        With ``delete_at`` (the new file's ``X-Delete-At``), the expiry queue entry is written
        under the lock, after the check and before the rename: a change that is refused leaves
        no entry, and a crash can leave an entry without its file (harmless: the expirer
        checks the object) but never the file without its entry.
        """
        try:
            with self._locked() as dir_fd:
                previous = self._state_of(self._select(self.list_files()), tolerant=True)
                try:
                    check(previous)
                except DiskFileNotFound:
                    _remove_if_empty(self.hash_dir)
                    raise
                if delete_at is not None:
                    self.manager.write_expiring(self.device_path, self.expiring_entry(delete_at))
                with _no_space_as_error():
                    os.rename(temp, self.hash_dir / new.name)
                # An EC archive not durable yet needs no directory fsync: nobody was told it
                # is stored, and the durable mark's rename is followed by one, which makes the
                # final name durable (the file's bytes were fsynced before this rename).
                pending_archive = new.frag_index is not None and not new.durable
                if self.manager.fsync and not pending_archive:
                    os.fsync(dir_fd)
                self._remove_obsolete()
        except BaseException:
            _unlink(temp)
            raise
        suffixes.invalidate_suffix(self.partition_path, self.suffix)
        return previous

    def _remove_obsolete(self) -> None:
        """(under the lock) Remove what the rules call obsolete."""
        for item in self._select(self.list_files()).obsolete:
            _unlink(self.hash_dir / item.name)

    def mark_durable(self, timestamp: TimestampLike, frag_index: int) -> ObjectState:
        """
        The second phase of an EC PUT: rename ``<ts>#<index>.data`` to ``<ts>#<index>#d.data``
        (atomic; the directory fsynced), under the object's lock, then remove what that made
        obsolete and invalidate the suffix. Marking an archive already marked changes nothing.
        DiskFileConflict when a newer durable version or a tombstone as new or newer is there
        (the archive is obsolete, or soon will be); DiskFileNotFound when the archive is not.
        Returns the state of that archive once durable (its metadata: the container update).
        """
        timestamp = Timestamp.parse(timestamp)
        self._check_frag_index(frag_index)
        pending = OnDiskFile(timestamp, DATA, frag_index)
        durable = OnDiskFile(timestamp, DATA, frag_index, durable=True)
        if not self.hash_dir.is_dir():
            raise DiskFileNotFound(f"{self.name}: no archive {pending.name}")
        with self._locked() as dir_fd:
            files = self.list_files()
            selection = select_ec_files(files)
            previous = self._state_of(selection, tolerant=True)
            current = previous.tombstone_timestamp or previous.timestamp
            if current is not None and (current > timestamp or previous.deleted and current == timestamp):
                raise DiskFileConflict(f"{timestamp.internal} is older than {current.internal}", previous)
            if durable not in files:
                if pending not in files:
                    _remove_if_empty(self.hash_dir)
                    raise DiskFileNotFound(f"{self.name}: no archive {pending.name}")
                os.rename(self.hash_dir / pending.name, self.hash_dir / durable.name)
                if self.manager.fsync:
                    os.fsync(dir_fd)
                self._remove_obsolete()
            state = self._state_of(select_ec_files(self.list_files()), frag_index=frag_index)
        suffixes.invalidate_suffix(self.partition_path, self.suffix)
        return state

    def quarantine(self) -> Path | None:
        """
        Move this object's directory, every file in it, out of service to
        ``<device>/quarantined/objects/<hash>[-n]`` (blocking), under the object's lock so no
        write lands in it meanwhile, and invalidate its suffix so replication restores a good
        copy from another replica. Returns where it went, or None if there was nothing.
        """
        if not self.hash_dir.is_dir():
            return None
        target_root = self.device_path / QUARANTINE_DIR / "objects"
        target_root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            target = target_root / self.name_hash
            n = 0
            while target.exists():
                n += 1
                target = target_root / f"{self.name_hash}-{n}"
            os.rename(self.hash_dir, target)
            if self.manager.fsync:
                self.manager._fsync_dir(self.hash_dir.parent)
                self.manager._fsync_dir(target_root)
        suffixes.invalidate_suffix(self.partition_path, self.suffix)
        return target

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """
        Hold an exclusive flock on the object directory (made if needed). Whoever removes an
        object directory must hold its lock; a lock taken on a directory that was removed
        meanwhile is noticed (inode check) and taken again on the new one.
        """
        deadline = time.monotonic() + self.manager.lock_timeout
        while True:
            try:
                # The replicator removes empty suffix and partition directories, possibly
                # between the mkdir of a parent and of its child: then make them again.
                self.manager._make_dirs(self.hash_dir, self.device_path)
                fd = lock_directory(self.hash_dir, deadline)
            except FileNotFoundError:
                if time.monotonic() >= deadline:
                    raise DiskFileLockTimeout(f"{self.hash_dir} keeps disappearing") from None
                continue
            if fd is not None:
                break
        try:
            yield fd
        finally:
            os.close(fd)


def lock_directory(path: Path, deadline: float) -> int | None:
    """
    A descriptor of the directory ``path`` holding its exclusive flock (wait until ``deadline``),
    or None when the directory was removed or replaced while we waited: the lock then guards
    nothing, and the caller looks again. FileNotFoundError when ``path`` does not exist.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flock_until(fd, deadline, path)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
    except BaseException:
        os.close(fd)
        raise
    if same:
        return fd
    os.close(fd)
    return None


def flock_until(fd: int, deadline: float, path: Path) -> None:
    """Take an exclusive flock on ``fd``, polling until ``deadline`` (DiskFileLockTimeout)."""
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise DiskFileLockTimeout(f"timed out waiting for the lock of {path}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


# A body larger than this is written back in pieces of this size as it is written.
WRITEBACK_EVERY = 8 * 1024 * 1024


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux only; the os module does not offer it), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
# Errors that say the call is not available here (not a failed write): fall back to fadvise.
_SFR_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP})


# A body of at least this size (when its length is known) bypasses the page cache: it is
# written with O_DIRECT from an aligned buffer of DIRECT_CHUNK bytes (see `DiskFileWriter`).
DIRECT_WRITE_MIN = 16 * 1024 * 1024
# A body of at least this size, read past keep_cache_size, is read with O_DIRECT.
DIRECT_READ_MIN = 16 * 1024 * 1024
DIRECT_CHUNK = 1024 * 1024
# What an O_DIRECT write's offset and length must be a multiple of: the largest logical block
# size in use (4Kn disks); the buffer itself is page aligned (an anonymous mmap).
DIRECT_ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _set_direct(fd: int, on: bool) -> None:
    """Turn O_DIRECT on or off for ``fd``; OSError where the platform or the filesystem refuses."""
    if not _O_DIRECT:
        raise OSError(errno.EINVAL, "no O_DIRECT on this platform")
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)


@define
class DiskFileWriter:
    """
    A PUT in progress: chunks go to a temp file and a checksum (in the caller's thread, a device
    pool thread); `commit` makes it the object, `abort` forgets it. Any error leaves no temp
    file behind. Usable as a context manager that aborts unless committed.
    """

    diskfile: DiskFile
    temp_path: Path
    _fd: int | None
    allocated: bool = False
    bytes_written: int = 0
    # md5 for a replicated object, CRC-32 for an EC archive (txstore.storage.checksum)
    _checksum: Checksum = field(factory=Md5)
    _done: bool = False
    _flushed_to: int = 0  # the body up to here has been handed to writeback
    _waited_to: int = 0  # the body up to here is on the disk and out of the cache
    _use_sync_file_range: bool = True
    _stage: mmap.mmap | None = None  # direct writes: the aligned buffer the body goes through
    _staged: int = 0  # bytes of the body in the stage, not yet written
    _direct_written: int = 0  # bytes of the body written with O_DIRECT
    frag_index: int | None = field(default=None, kw_only=True)  # EC: the archive written

    @property
    def etag(self) -> str:
        """The body's checksum as stored in its ETag: its md5, or an EC archive's ``crc32:…``."""
        return self._checksum.value()

    def write(self, chunk: bytes | memoryview) -> None:
        self.write_many((chunk,))

    def write_many(self, chunks: Iterable[bytes | memoryview]) -> None:
        """Append ``chunks`` to the body, in order (as received: no need to join them first)."""
        fd = self._open_fd()
        try:
            for chunk in chunks:
                self._checksum.update(chunk)
                self.bytes_written += len(chunk)
                if self._stage is not None:
                    self._stage_bytes(fd, memoryview(chunk))
                    continue
                with _no_space_as_error():
                    _write_all(fd, chunk)
                if self.bytes_written - self._flushed_to >= WRITEBACK_EVERY:
                    self._start_writeback(fd)
        except BaseException:
            self.abort()
            raise

    # Direct writes. Measured here (docs/performance.rst, "Direct writes"), a large body copied
    # into the page cache cost its node more system time than the socket reads and the md5
    # together once memory was cold, and every replica's pages crowded out what GETs reuse;
    # through O_DIRECT the body goes from one reused buffer to the device (one copy into the
    # buffer, which replaces joining the socket's chunks). The fsync at commit is unchanged.

    def _start_direct(self) -> None:
        """Switch this writer to O_DIRECT, where the platform and the filesystem allow it."""
        fd = self._open_fd()
        try:
            _set_direct(fd, True)
        except OSError:
            return  # this filesystem refuses O_DIRECT: the page cache it is
        self._stage = mmap.mmap(-1, DIRECT_CHUNK)

    def _stage_bytes(self, fd: int, view: memoryview) -> None:
        while view:
            if self._stage is None:  # direct writes were refused: through the cache
                with _no_space_as_error():
                    _write_all(fd, view)
                return
            take = min(len(view), DIRECT_CHUNK - self._staged)
            self._stage[self._staged : self._staged + take] = view[:take]
            self._staged += take
            view = view[take:]
            if self._staged == DIRECT_CHUNK:
                self._write_stage(fd, DIRECT_CHUNK)

    def _write_stage(self, fd: int, length: int) -> None:
        """Write the stage's first ``length`` bytes (a multiple of DIRECT_ALIGN) directly."""
        assert self._stage is not None
        if length:
            refused = False
            try:
                with _no_space_as_error():
                    _write_all(fd, memoryview(self._stage)[:length])
            except OSError as error:
                if error.errno != errno.EINVAL or self._direct_written:
                    raise
                refused = True  # (handled below, once the traceback no longer holds the stage)
            if refused:
                # The filesystem took the flag but not the first write: the page cache it is.
                self._end_direct(fd)
                with _no_space_as_error():
                    _write_all(fd, memoryview(self._stage)[: self._staged])
                self._staged = 0
                self._release_stage()
                return
        self._direct_written += length
        rest = self._staged - length
        if rest:
            self._stage.move(0, length, rest)
        self._staged = rest

    def _end_direct(self, fd: int) -> None:
        _set_direct(fd, False)

    def _flush_stage(self, fd: int) -> None:
        """Before the footer: the stage's aligned part directly, its tail through the cache."""
        if self._stage is None:
            return
        self._write_stage(fd, self._staged - self._staged % DIRECT_ALIGN)
        if self._stage is None:  # refused there, and written through the cache instead
            return
        self._end_direct(fd)
        with _no_space_as_error():
            _write_all(fd, memoryview(self._stage)[: self._staged])
        self._staged = 0
        self._release_stage()

    def _release_stage(self) -> None:
        # Dropped, not closed: a failed write's traceback may still hold a view of it.
        self._stage = None

    def _start_writeback(self, fd: int) -> None:
        """
        Stream a large body to the disk as it arrives: start writing the piece written since
        the last call without waiting for it, then wait until the piece before it is on the
        disk and let its (now clean) pages go from the cache. At most two pieces per upload
        are dirty at any time, and the pages freed are the ones the next writes reuse.

        Measured on XFS (docs/performance.rst, "Streaming writeback"): handing dirty pages to
        ``POSIX_FADV_DONTNEED`` alone, which cannot drop a page before it is written, cost
        about 1.5 s of system time per GiB more and twice the wall time of three parallel
        1 GiB writers; the kernel reclaimed those pages later and the writes took fresh ones.
        Durability is unchanged: the fsync at commit still makes a 2xx mean on the disk.
        Without ``sync_file_range`` (not Linux), the old way: fadvise alone.
        """
        previous, start, end = self._waited_to, self._flushed_to, self.bytes_written
        self._flushed_to = end
        if self._use_sync_file_range and _sync_file_range is not None:
            try:
                self._sync_range(fd, start, end - start, _SFR_WRITE)
                if start > previous:
                    self._sync_range(fd, previous, start - previous, _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)
                    os.posix_fadvise(fd, previous, start - previous, os.POSIX_FADV_DONTNEED)
                    self._waited_to = start
                return
            except _SyncFileRangeUnsupported:
                self._use_sync_file_range = False
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)

    @staticmethod
    def _sync_range(fd: int, offset: int, length: int, flags: int) -> None:
        assert _sync_file_range is not None
        if _sync_file_range(fd, offset, length, flags) != 0:
            code = ctypes.get_errno()
            if code in _SFR_UNSUPPORTED:
                raise _SyncFileRangeUnsupported()
            with _no_space_as_error():
                raise OSError(code, os.strerror(code))

    def commit(self, metadata: Mapping[str, str], timestamp: TimestampLike) -> ObjectState:
        """
        Make the body written so far the object at ``timestamp``: footer, fsync, rename to
        ``<ts>.data`` (an EC archive: ``<ts>#<index>.data``, not durable, whose directory is
        fsynced by the durable mark instead), fsync the directory, clean up, invalidate the
        suffix. The writer fills
        in ``name``, ``X-Timestamp``, ``Content-Length`` and ``ETag``; a ``Content-Length`` or
        ``ETag`` given that disagrees with what was written is a ValueError. DiskFileConflict
        when ``timestamp`` is not newer than the stored data or tombstone. Returns the state
        before.
        """
        fd = self._open_fd()
        try:
            timestamp = Timestamp.parse(timestamp)
            stamped = self.diskfile._stamped(metadata, timestamp)
            self._fill_body_keys(stamped)
            footer = objmeta.encode_footer(stamped)
            self._flush_stage(fd)
            with _no_space_as_error():
                _write_all(fd, footer)
                if self.allocated:
                    os.ftruncate(fd, self.bytes_written + len(footer))
                # The object's directory made with the fsync: _install's then has nothing to make.
                self.diskfile.manager._fsync_with_dirs(fd, self.diskfile.hash_dir, self.diskfile.device_path)
            self._close_fd()
            previous = self.diskfile._install(
                self.temp_path, OnDiskFile(timestamp, DATA, self.frag_index),
                self.diskfile._newer_than_data(timestamp, self.frag_index),
                expiring.delete_at_of(stamped),
            )
        except BaseException:
            self.abort()
            raise
        self._done = True
        return previous

    def _fill_body_keys(self, stamped: dict[str, str]) -> None:
        for key in list(stamped):
            lower = key.lower()
            if lower == "content-length":
                given = stamped.pop(key)
                if given != str(self.bytes_written):
                    raise ValueError(f"Content-Length {given} but {self.bytes_written} bytes written")
            elif lower == "etag":
                if stamped.pop(key).strip('"').lower() != self.etag:
                    raise ValueError(f"ETag differs from the checksum {self.etag} of what was written")
            elif lower == checksum.BODY_CHECKSUM.lower():
                del stamped[key]  # (a replica's, sent with its metadata: kept only when computed here)
        stamped["Content-Length"] = str(self.bytes_written)
        stamped["ETag"] = self.etag
        if isinstance(self._checksum, SentMd5):
            stamped[checksum.BODY_CHECKSUM] = self._checksum.body_checksum()

    def abort(self) -> None:
        """Forget the upload: close and remove the temp file. Idempotent; no-op after commit."""
        self._release_stage()
        self._close_fd()
        if not self._done:
            self._done = True
            _unlink(self.temp_path)

    def _open_fd(self) -> int:
        if self._fd is None or self._done:
            raise DiskFileError("this writer is already committed or aborted")
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> DiskFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()


@define
class EtagVerifier:
    """
    Streams a body through the checksum its ETag was computed with (md5, or an EC archive's
    CRC-32) and says at the end whether the body is what the ETag promised.
    """

    expected_etag: str
    expected_length: int
    fed: int = 0
    _checksum: Checksum = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._checksum = checksum.like(self.expected_etag)

    def feed(self, chunk: bytes) -> None:
        self._checksum.update(chunk)
        self.fed += len(chunk)

    @property
    def complete(self) -> bool:
        return self.fed >= self.expected_length

    def matches(self) -> bool:
        return self.fed == self.expected_length and self._checksum.value() == checksum.normal(self.expected_etag)


@define
class DiskFileReader:
    """
    An open data file. `read` never reads past the body. Reads that go through the body in
    order from offset 0 are checked against the ETag as they go (`etag_verified`), so a full
    GET notices bit rot without a second pass.
    """

    _fd: int | None
    state: ObjectState
    _verifier: EtagVerifier | None
    # Drop what each read brought into the page cache (an object past keep_cache_size: read
    # once, it would only push out what small objects' reads reuse), as Swift's nodes do.
    drop_cache: bool = False
    # Read past the page cache (O_DIRECT) where the filesystem allows: set for large objects
    # (`DIRECT_READ_MIN`), whose pages are dropped anyway (see `_read_direct`).
    direct: bool = False
    _stage: mmap.mmap | None = field(default=None, init=False)

    @property
    def content_length(self) -> int:
        assert self.state.content_length is not None
        return self.state.content_length

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the body from ``offset``; short only at the body's end."""
        if self._fd is None:
            raise DiskFileError("this reader is closed")
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        length = max(0, min(length, self.content_length - offset))
        if self.direct and length:
            data = self._read_direct(offset, length)
            if data is not None:
                self._verify(offset, data)
                return data
        chunks = []
        position, remaining = offset, length
        while remaining:
            chunk = os.pread(self._fd, remaining, position)
            if not chunk:
                break
            chunks.append(chunk)
            position += len(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if self.drop_cache and data and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, offset, len(data), os.POSIX_FADV_DONTNEED)
        self._verify(offset, data)
        return data

    def _verify(self, offset: int, data: bytes) -> None:
        if self._verifier is not None:
            if offset == self._verifier.fed:
                self._verifier.feed(data)
            else:
                self._verifier = None

    def _read_direct(self, offset: int, length: int) -> bytes | None:
        """
        The bytes through O_DIRECT into a reused aligned buffer, then copied out once; None if
        the filesystem refuses (the page cache it is, from then on).
        """
        assert self._fd is not None
        if self._stage is None:
            try:
                _set_direct(self._fd, True)
            except OSError:
                self.direct = False
                return None
            self._stage = mmap.mmap(-1, DIRECT_CHUNK + 2 * DIRECT_ALIGN)
        start = offset - offset % DIRECT_ALIGN
        end = -(-(offset + length) // DIRECT_ALIGN) * DIRECT_ALIGN
        if end - start > len(self._stage):
            self._stage.close()
            self._stage = mmap.mmap(-1, end - start)
        got = 0
        view = memoryview(self._stage)
        try:
            while start + got < offset + length:
                n = os.preadv(self._fd, [view[got : end - start]], start + got)
                if not n:
                    break
                got += n
        except OSError as error:
            # The traceback holds views of the stage: it is unmapped once they are gone.
            self._stage = None
            if error.errno != errno.EINVAL or got:
                raise
            self._end_direct()  # the filesystem took the flag but not the read
            return None
        return bytes(view[offset - start : min(got, offset - start + length)])

    def _end_direct(self) -> None:
        assert self._fd is not None
        self.direct = False
        _set_direct(self._fd, False)

    def etag_verified(self) -> bool | None:
        """None until the whole body was read in order from 0; then whether its checksum matched."""
        if self._verifier is None or not self._verifier.complete:
            return None
        return self._verifier.matches()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self.drop_cache and hasattr(os, "posix_fadvise"):
                    # and what the kernel read ahead past the last read, or was still reading
                    # when that read's pages were let go
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
                if self._stage is not None:
                    self._stage.close()
                    self._stage = None

    def __enter__(self) -> DiskFileReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
