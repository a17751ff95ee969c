# -*- test-case-name: txstore.test.unit.test_partitions -*-
"""
The object store as the replicator sees it: partitions, suffix hashes, and object directories
described by their file names.

Everything here blocks (listdir, flock, unlink) and runs in the device's thread pool.

``hashes.json`` (per partition) maps each suffix to the md5 of the sorted ``<hash>/<file>``
names it holds after cleanup. Two replicas of a partition agree on a suffix exactly when they
hold the same files (an EC fragment archive's name carries its index and durable mark, so two
nodes holding different fragments, or one not yet durable, never agree), so comparing a few hundred short strings tells the replicator which
suffixes to look into. A suffix is re-hashed only when a write named it in ``hashes.invalid``,
when ``hashes.json`` does not list it, or when ``hashes.json`` is missing or unreadable (it is
rewritten atomically but not fsynced: a file lost to a crash only costs a full re-hash). Once
a day every suffix is re-hashed anyway, which catches an invalidation lost to a crash (its
append is not fsynced) and any change made behind the node's back. Hashing
holds the partition's ``.lock``, so the replicator and a peer's GET_HASHES never interleave.

An erasure-coded policy's partition (``get_hashes(..., ec=True)``) is hashed per fragment
index instead (`hash_ec_suffix`): each suffix maps to ``{"": md5 of its tombstones and .meta
files, "<index>": md5 of the timestamps (and durable marks) of its archives of that index}``,
with the index left out of what is hashed, so the primary holding archive *i* and the one
holding archive *j* agree on a suffix exactly when they hold the same versions (Swift's
reconstructor compares its hashes so). Only the reconstructor and its sessions read them.

Re-hashing a suffix also cleans it, each object directory under the object's own lock: obsolete
files go, and a tombstone older than ``reclaim_age`` goes too (with its directory), by which time
it has reached every replica. A directory holding fragment archives follows the EC rules
(`select_ec_files`), and an archive still not durable after ``reclaim_age`` goes as well.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attrs import frozen

from txstore.common.timestamps import Timestamp
from txstore.storage import objmeta, suffixes
from txstore.storage.diskfile import (
    OnDiskFile,
    lock_directory,
    objects_dir_name,
    parse_file_name,
    select_ec_files,
    select_files,
)

HASHES_FILE = "hashes.json"
FULL_REHASH_INTERVAL = 24 * 3600.0
LOCK_FILE = ".lock"
DEFAULT_RECLAIM_AGE = 7 * 24 * 3600.0
_HASH = re.compile(r"^[0-9a-f]{32}$")
_SUFFIX = re.compile(r"^[0-9a-f]{3}$")


@frozen
class ObjectFiles:
    """The files of one object directory that count, by name (no file is opened)."""

    name_hash: str
    directory: Path
    data: OnDiskFile | None = None
    meta: OnDiskFile | None = None
    tombstone: OnDiskFile | None = None

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in (self.data, self.meta, self.tombstone) if f is not None)

    def offer(self) -> dict[str, str]:
        """The timestamps a missing check offers: ``data``, ``meta``, ``ts`` (those present)."""
        offered = {}
        meta = self.meta if self.data is not None else None  # a .meta counts only with data
        for key, item in (("data", self.data), ("meta", meta), ("ts", self.tombstone)):
            if item is not None:
                offered[key] = item.timestamp.internal
        return offered


def object_files(directory: Path) -> ObjectFiles | None:
    """What ``directory`` holds by the newest-wins rules; None when nothing counts."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    selection = select_files(p for p in map(parse_file_name, names) if p is not None)
    if selection.data is None and selection.tombstone is None:
        return None
    return ObjectFiles(directory.name, directory, selection.data, selection.meta, selection.tombstone)


def ec_object_files(directory: Path, frag_index: int) -> ObjectFiles | None:
    """
    What an EC object's ``directory`` holds as archive ``frag_index`` sees it: ``data`` the
    archive of that index of the newest durable version (None when not held here), its .meta,
    or the tombstone that wins; None when none of these is there.
    """
    selection = _ec_selection(directory)
    if selection is None:
        return None
    data = selection.fragments.get(frag_index)
    if data is None and selection.tombstone is None:
        return None
    return ObjectFiles(directory.name, directory, data, selection.meta if data is not None else None,
                       selection.tombstone)


def ec_archive_indexes(directory: Path) -> tuple[int, ...]:
    """The indexes of the archives of the newest durable version held in ``directory``."""
    selection = _ec_selection(directory)
    return () if selection is None else tuple(sorted(selection.fragments))


def _ec_selection(directory: Path):
    """What the EC rules make of ``directory``'s files; None when it is gone."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return select_ec_files(p for p in map(parse_file_name, names) if p is not None)


def list_object_dirs(partition_dir: Path, suffix_names: Iterable[str]) -> Iterator[Path]:
    """Every object directory of the given suffixes, in hash order."""
    for suffix in sorted(suffix_names):
        try:
            hashes = sorted(n for n in os.listdir(partition_dir / suffix) if _HASH.match(n))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name_hash in hashes:
            yield partition_dir / suffix / name_hash


def list_ec_objects(partition_dir: Path, suffix_names: Iterable[str], frag_index: int) -> Iterator[ObjectFiles]:
    """Every EC object of the given suffixes as archive ``frag_index`` sees it (`ec_object_files`)."""
    for directory in list_object_dirs(partition_dir, suffix_names):
        found = ec_object_files(directory, frag_index)
        if found is not None:
            yield found


def list_partitions(device_path: Path, policy_index: int) -> list[int]:
    """The partitions this device holds objects of, for one policy."""
    try:
        names = os.listdir(device_path / objects_dir_name(policy_index))
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and str(int(n)) == n)


def list_suffixes(partition_dir: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(partition_dir) if _SUFFIX.match(n))
    except FileNotFoundError:
        return []


def list_objects(partition_dir: Path, suffix_names: Iterable[str]) -> Iterator[ObjectFiles]:
    """Every object of the given suffixes, in hash order."""
    for directory in list_object_dirs(partition_dir, suffix_names):
        found = object_files(directory)
        if found is not None:
            yield found


# --- locking and cleaning one object directory --------------------------------------------


@contextmanager
def _locked_existing(directory: Path, lock_timeout: float) -> Iterator[bool]:
    """
    Hold the object directory's flock (the one `DiskFile` writes under) if the directory
    exists; yields False, holding nothing, when it does not.
    """
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            fd = lock_directory(directory, deadline)
        except (FileNotFoundError, NotADirectoryError):
            yield False
            return
        if fd is not None:
            break
    try:
        yield True
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmdir_quietly(path: Path) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise


def clean_object_dir(directory: Path, reclaim_before: Timestamp, lock_timeout: float = 10.0) -> list[str]:
    """
    Remove what no longer counts (obsolete files; a tombstone older than ``reclaim_before``,
    and then the directory if empty); returns the names of the files left, sorted.
    """
    with _locked_existing(directory, lock_timeout) as exists:
        if not exists:
            return []
        names = os.listdir(directory)
        parsed = [p for p in map(parse_file_name, names) if p is not None]
        if any(p.frag_index is not None for p in parsed):
            # An EC object's directory (fragment archives are only ever written to one).
            ec = select_ec_files(parsed)
            doomed = list(ec.obsolete)
            # An archive whose durable mark never came within reclaim_age never will.
            doomed.extend(f for f in ec.non_durable if f.timestamp < reclaim_before)
            selection = ec
        else:
            selection = select_files(parsed)
            doomed = list(selection.obsolete)
        if selection.tombstone is not None and selection.tombstone.timestamp < reclaim_before:
            doomed.append(selection.tombstone)
            if selection.meta is not None:
                doomed.append(selection.meta)
        for item in doomed:
            _unlink_quietly(directory / item.name)
        gone = {item.name for item in doomed}
        left = sorted(n for n in names if n not in gone)
        if not left:
            _rmdir_quietly(directory)
        return sorted(n for n in left if parse_file_name(n) is not None)


def remove_if_unchanged(files: ObjectFiles, lock_timeout: float = 10.0) -> bool:
    """
    Remove an object directory that still holds exactly ``files`` (a handoff copy every
    primary confirmed); a directory changed meanwhile (a new write) is left for the next pass.
    """
    directory = files.directory
    with _locked_existing(directory, lock_timeout) as exists:
        if not exists:
            return True
        current = object_files(directory)
        if current is None or current.names != files.names:
            return False
        for name in os.listdir(directory):
            _unlink_quietly(directory / name)
        _rmdir_quietly(directory)
    suffix_dir = directory.parent
    _rmdir_quietly(suffix_dir)
    suffixes.invalidate_suffix(suffix_dir.parent, suffix_dir.name)
    return True


def remove_ec_if_unchanged(files: ObjectFiles, frag_index: int, lock_timeout: float = 10.0) -> bool:
    """
    Remove what ``files`` (`ec_object_files` of ``frag_index``) names, if the directory still
    holds it: the archive (a handoff's, once its primary has it), and the .meta and tombstone
    too, with the directory, once no archive of any index is left in it (a handoff may hold
    several; their metadata stays with them).
    """
    directory = files.directory
    with _locked_existing(directory, lock_timeout) as exists:
        if not exists:
            return True
        current = ec_object_files(directory, frag_index)
        if current is None or current.names != files.names:
            return False
        if files.data is not None:
            _unlink_quietly(directory / files.data.name)
        names = os.listdir(directory)
        if any(parsed is not None and parsed.frag_index is not None for parsed in map(parse_file_name, names)):
            removed_all = False
        else:
            for name in names:
                _unlink_quietly(directory / name)
            removed_all = _rmdir_quietly(directory)
    if removed_all:
        _rmdir_quietly(directory.parent)
    suffixes.invalidate_suffix(directory.parent.parent, directory.parent.name)
    return True


def remove_partition_if_empty(partition_dir: Path) -> bool:
    """Remove a partition directory holding no suffix any more (with its bookkeeping files)."""
    if list_suffixes(partition_dir):
        return False
    for name in (HASHES_FILE, suffixes.HASHES_INVALID, LOCK_FILE):
        _unlink_quietly(partition_dir / name)
    return _rmdir_quietly(partition_dir)


# --- suffix hashes --------------------------------------------------------------------------


def _cleaned_files(suffix_dir: Path, reclaim_before: Timestamp, lock_timeout: float) -> list[tuple[str, str]] | None:
    """
    Clean each object directory of a suffix: the ``(hash, file name)`` pairs left, in hash
    order; None when there is no suffix directory.
    """
    try:
        hashes = sorted(n for n in os.listdir(suffix_dir) if _HASH.match(n))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return [
        (name_hash, name)
        for name_hash in hashes
        for name in clean_object_dir(suffix_dir / name_hash, reclaim_before, lock_timeout)
    ]


def hash_suffix(partition_dir: Path, suffix: str, reclaim_before: Timestamp, lock_timeout: float = 10.0) -> str | None:
    """Clean the suffix and hash what is left; None (and the directory removed) when empty."""
    suffix_dir = partition_dir / suffix
    files = _cleaned_files(suffix_dir, reclaim_before, lock_timeout)
    if files is None:
        return None
    md5 = hashlib.md5(usedforsecurity=False)
    for name_hash, name in files:
        md5.update(f"{name_hash}/{name}\n".encode("ascii"))
    if not files:
        _rmdir_quietly(suffix_dir)
        return None
    return md5.hexdigest()


def hash_ec_suffix(
    partition_dir: Path, suffix: str, reclaim_before: Timestamp, lock_timeout: float = 10.0
) -> dict[str, str] | None:
    """
    Clean an EC partition's suffix and hash what is left per fragment index (see the module
    doc); None (and the directory removed) when empty.
    """
    suffix_dir = partition_dir / suffix
    files = _cleaned_files(suffix_dir, reclaim_before, lock_timeout)
    if files is None:
        return None
    md5s: dict[str, Any] = {}
    for name_hash, name in files:
        parsed = parse_file_name(name)
        if parsed is None:
            continue
        if parsed.frag_index is None:
            key, line = "", name
        else:
            key, line = str(parsed.frag_index), f"{parsed.timestamp.internal}{'#d' if parsed.durable else ''}"
        md5s.setdefault(key, hashlib.md5(usedforsecurity=False)).update(f"{name_hash}/{line}\n".encode("ascii"))
    if not md5s:
        _rmdir_quietly(suffix_dir)
        return None
    return {key: md5.hexdigest() for key, md5 in md5s.items()}


def ec_hashes_for(hashes: dict[str, dict[str, str]], frag_index: int) -> dict[str, str]:
    """
    An EC partition's hashes as archive ``frag_index`` sees them (``suffix → hash``): equal
    on the primaries of two indexes exactly when their suffixes hold the same versions.
    """
    return {suffix: f"{h.get('', '')}/{h.get(str(frag_index), '')}" for suffix, h in hashes.items()}


@contextmanager
def _partition_lock(partition_dir: Path) -> Iterator[None]:
    fd = os.open(partition_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_ec_hash(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _read_hashes(partition_dir: Path, ec: bool = False) -> tuple[dict[str, Any] | None, float]:
    """
    The stored hashes (None when unreadable) and when every suffix was last hashed. A value
    of the other kind (an EC partition's per-index dict, or a plain string) is left out: that
    suffix is hashed again.
    """
    try:
        loaded = json.loads((partition_dir / HASHES_FILE).read_bytes())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None, 0.0
    hashes = loaded.get("hashes") if isinstance(loaded, dict) else None
    if not isinstance(hashes, dict):
        return None, 0.0
    full_at = loaded.get("full_at")
    full_at = float(full_at) if isinstance(full_at, (int, float)) and not isinstance(full_at, bool) else 0.0
    return {
        k: v for k, v in hashes.items()
        if isinstance(k, str) and _SUFFIX.match(k) and (_is_ec_hash(v) if ec else isinstance(v, str))
    }, full_at


def _write_hashes(partition_dir: Path, hashes: dict[str, Any], full_at: float) -> None:
    fd, temp = tempfile.mkstemp(prefix=HASHES_FILE + ".", suffix=".tmp", dir=partition_dir)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"version": 1, "full_at": full_at, "hashes": hashes}, handle, sort_keys=True)
        os.rename(temp, partition_dir / HASHES_FILE)
    except BaseException:
        _unlink_quietly(Path(temp))
        raise


def get_hashes(
    partition_dir: Path, reclaim_age: float = DEFAULT_RECLAIM_AGE, now: float | None = None,
    lock_timeout: float = 10.0, ec: bool = False,
) -> dict[str, Any]:
    """
    The partition's ``suffix → hash``, re-hashing only what changed (see the module doc).
    An empty dict when the partition does not exist here. With ``ec`` (an EC policy's
    partition), ``suffix → {index or "": hash}`` (`hash_ec_suffix`).
    """
    if not partition_dir.is_dir():
        return {}
    now = time.time() if now is None else now
    reclaim_before = Timestamp.from_seconds(max(0.0, now - reclaim_age))
    with _partition_lock(partition_dir):
        invalid = suffixes.consume_invalid_suffixes(partition_dir)
        stored, full_at = _read_hashes(partition_dir, ec)
        on_disk = set(list_suffixes(partition_dir))
        if stored is None or not 0 <= now - full_at < FULL_REHASH_INTERVAL:
            stale, hashes, full_at = on_disk, {}, now
        else:
            stale = (invalid | (on_disk - stored.keys())) & on_disk
            hashes = {s: h for s, h in stored.items() if s in on_disk}
        for suffix in sorted(stale):
            hasher = hash_ec_suffix if ec else hash_suffix
            digest = hasher(partition_dir, suffix, reclaim_before, lock_timeout)
            if digest is None:
                hashes.pop(suffix, None)
            else:
                hashes[suffix] = digest
        if stored != hashes or full_at == now:
            _write_hashes(partition_dir, hashes, full_at)
        return hashes


# --- what an update sends -------------------------------------------------------------------


@frozen
class Footers:
    """The metadata of each file of an object that counts, read for sending."""

    data: dict[str, str] | None = None
    data_length: int | None = None
    meta: dict[str, str] | None = None
    tombstone: dict[str, str] | None = None


def hashes_digest(hashes: dict[str, str]) -> str:
    """
    One md5 for a partition's ``suffix → hash``: equal on two replicas exactly when their
    suffix hashes are, so a replicator can compare whole partitions with a peer in 32 bytes.
    """
    summary = hashlib.md5(usedforsecurity=False)
    for suffix in sorted(hashes):
        summary.update(f"{suffix}:{hashes[suffix]};".encode("utf-8", "surrogatepass"))
    return summary.hexdigest()


def read_footers(files: ObjectFiles) -> Footers:
    """Read the footer of each file of ``files``; `objmeta.FooterError` when one is damaged."""

    def footer(item: OnDiskFile | None) -> objmeta.Footer | None:
        if item is None:
            return None
        fd = os.open(files.directory / item.name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return objmeta.read_footer(fd)
        finally:
            os.close(fd)

    data, meta, tomb = footer(files.data), footer(files.meta), footer(files.tombstone)
    return Footers(
        data=data.metadata if data else None,
        data_length=data.body_length if data else None,
        meta=meta.metadata if meta else None,
        tombstone=tomb.metadata if tomb else None,
    )

