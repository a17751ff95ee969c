# -*- test-case-name: txstore.test.unit.test_object_info -*-
"""
``txstore-object-info FILE``: what an object file on a node holds, and where the ring puts it.

For a ``.data``, ``.meta`` or ``.ts`` file under ``<device>/objects[-N]/<part>/<suffix>/<hash>/``:
its name and metadata (from the footer), the partition and policy its path says, whether the
ring (with the cluster's hash secret) puts that name in that partition and hash directory (a
mismatch means a wrong secret or a misplaced file), the nodes that should hold it, and with
``--check`` what each of them answers to a HEAD. ``--verify`` reads the body and checks its
checksum (md5; an EC archive's CRC-32) against the ETag. A plain synchronous program: no reactor.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from txstore.ring.cli import CommandError, DEFAULT_TXSTORE_CONF, load_hasher
from txstore.ring.ring import Ring, RingError
from txstore.storage import checksum, objmeta
from txstore.storage.diskfile import parse_file_name

_OBJECTS_DIR = re.compile(r"^objects(?:-(\d+))?$")
CHUNK = 1024 * 1024


def describe(path: Path, ring_dir: Path, conf: str | None, check: bool, verify: bool, timeout: float) -> list[str]:
    parsed = parse_file_name(path.name)
    if parsed is None:
        raise CommandError(f"{path.name} is not an object file name (<timestamp>[#<frag>[#d]].data|.meta|.ts)")
    hash_dir, part_dir, policy_dir = path.parent, path.parents[2], path.parents[3]
    match = _OBJECTS_DIR.match(policy_dir.name)
    if match is None or not part_dir.name.isdigit():
        raise CommandError(f"{path} is not under <device>/objects[-N]/<partition>/<suffix>/<hash>/")
    policy = int(match.group(1) or 0)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            footer = objmeta.read_footer(fd)
        except objmeta.FooterError as error:
            raise CommandError(f"{path}: unreadable metadata: {error}") from None
        metadata = footer.metadata
        name = metadata.get("name", "")
        account, _, rest = name.lstrip("/").partition("/")
        container, _, obj = rest.partition("/")
        lines = [
            f"Path: {name}",
            f"  Account: {account}",
            f"  Container: {container}",
            f"  Object: {obj}",
            f"  Object hash: {hash_dir.name}",
            f"Device: {policy_dir.parent.name}  Partition: {part_dir.name}  Policy index: {policy}",
            f"File: {'tombstone' if parsed.ext == '.ts' else 'metadata' if parsed.ext == '.meta' else 'data'}"
            + (f", fragment index {parsed.frag_index}{' (durable)' if parsed.durable else ''}"
               if parsed.frag_index is not None else ""),
            f"Timestamp: {parsed.timestamp.internal} ({parsed.timestamp.last_modified})",
        ]
        if parsed.ext == ".data":
            lines.append(f"Content-Type: {metadata.get('Content-Type', '')}")
            lines.append(f"Content-Length: {footer.body_length}")
            etag = metadata.get("ETag", "")
            if verify:
                digest = checksum.like(etag)  # md5, or an EC archive's CRC-32
                offset = 0
                while offset < footer.body_length:
                    chunk = os.pread(fd, min(CHUNK, footer.body_length - offset), offset)
                    if not chunk:
                        break
                    digest.update(chunk)
                    offset += len(chunk)
                summed = digest.value()
                verdict = "valid" if summed == checksum.normal(etag) else f"INVALID: the body's checksum is {summed}"
                lines.append(f"ETag: {etag} ({verdict})")
            else:
                lines.append(f"ETag: {etag} (not checked: --verify reads the body)")
    finally:
        os.close(fd)
    system = {k: v for k, v in metadata.items() if k.lower().startswith("x-object-sysmeta-")}
    user = {k: v for k, v in metadata.items() if k.lower().startswith("x-object-meta-")}
    other = {k: v for k, v in metadata.items()
             if k not in system and k not in user and k not in ("name", "Content-Type", "Content-Length", "ETag")}
    for title, values in (("System metadata", system), ("User metadata", user), ("Other metadata", other)):
        lines.append(f"{title}:" + ("" if values else " none"))
        lines += [f"  {key}: {value}" for key, value in sorted(values.items())]
    lines += _placement(ring_dir, conf, policy, account, container, obj, part_dir.name, hash_dir.name, check, timeout)
    return lines


def _placement(ring_dir: Path, conf: str | None, policy: int, account: str, container: str, obj: str,
               part: str, name_hash: str, check: bool, timeout: float) -> list[str]:
    ring_path = ring_dir / ("object.ring.gz" if policy == 0 else f"object-{policy}.ring.gz")
    if conf is None:
        candidates = [ring_dir / "txstore.conf", Path(DEFAULT_TXSTORE_CONF)]
        found = [c for c in candidates if c.exists()]
        if not found:
            return [f"Ring: not checked (no txstore.conf with the hash secret at {' or '.join(map(str, candidates))};"
                    " pass --txstore-conf)"]
        conf = str(found[0])
    hasher = load_hasher(conf)
    try:
        ring = Ring(ring_path, hasher)
    except RingError as error:
        return [f"Ring: not checked ({error})"]
    expected_hash = hasher.hash_path(account, container, obj)
    expected_part = ring.get_part(account, container, obj)
    lines = [f"Ring: {ring_path}"]
    if (expected_hash, str(expected_part)) != (name_hash, part):
        lines.append(f"  MISPLACED: with this secret the name hashes to {expected_hash} in partition"
                     f" {expected_part}, not {name_hash} in {part} (a wrong secret, or a file moved by hand)")
    else:
        lines.append("  the name's hash and partition match this file's directories")
    quoted = "/".join(urllib.parse.quote(n, safe="") for n in (account, container, obj))
    nodes = [(node, f"primary {node.index}") for node in ring.get_part_nodes(expected_part)]
    nodes += [(node, f"handoff {node.handoff_index}") for node, _ in zip(ring.get_more_nodes(expected_part), range(2))]
    for node, role in nodes:
        host = f"[{node.ip}]" if ":" in node.ip else node.ip
        url = f"http://{host}:{node.port}/{node.device_name}/{expected_part}/{quoted}"
        answer = ""
        if check:
            answer = "  " + _head(url, policy, timeout)
        lines.append(f"  {role:10s} {node.ip}:{node.port}/{node.device_name}{answer}")
        lines.append(f'    curl -g -I -XHEAD "{url}" -H "X-Backend-Storage-Policy-Index: {policy}"')
    return lines


def _head(url: str, policy: int, timeout: float) -> str:
    request = urllib.request.Request(url, method="HEAD", headers={"X-Backend-Storage-Policy-Index": str(policy)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as error:
        status, headers = error.code, error.headers
    except (OSError, ValueError) as error:
        return f"unreachable ({getattr(error, 'reason', error)})"
    stamp = headers.get("X-Backend-Timestamp") or headers.get("X-Timestamp") or "-"
    return f"{status} (timestamp {stamp})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="txstore-object-info", description="What an object file holds, and where it belongs.")
    parser.add_argument("file", type=Path, help="a .data, .meta or .ts file under <device>/objects[-N]/")
    parser.add_argument("--ring-dir", type=Path, default=Path("/etc/txstore"), help="where the rings are")
    parser.add_argument("--txstore-conf", help="the cluster file with the hash secret (default: beside the rings)")
    parser.add_argument("--check", action="store_true", help="HEAD the object on each node the ring names")
    parser.add_argument("--verify", action="store_true",
                        help="read the body and check its checksum (md5, or an EC archive's CRC-32) against the ETag")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per node for --check (default 5)")
    args = parser.parse_args(argv)
    try:
        lines = describe(args.file.absolute(), args.ring_dir, args.txstore_conf, args.check, args.verify, args.timeout)
    except CommandError as error:
        print(f"txstore-object-info: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"txstore-object-info: {error.filename or args.file}: {error.strerror or error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
