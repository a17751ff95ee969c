# -*- test-case-name: txstore.test.unit.test_constraints -*-
"""
The limits Swift documents for names, metadata and sizes, and their checks.

The proxy and the storage node check the same limits with the same messages, so a client sees
one clear 4xx whichever layer refuses, and nothing over a limit is ever stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from attrs import frozen


@frozen
class Constraints:
    max_file_size: int = 5 * 1024**3 + 2
    max_meta_name_length: int = 128
    max_meta_value_length: int = 256
    max_meta_count: int = 90
    max_meta_overall_size: int = 4096
    max_header_size: int = 8192
    max_object_name_length: int = 1024
    max_container_name_length: int = 256
    max_account_name_length: int = 256
    container_listing_limit: int = 10000
    account_listing_limit: int = 10000


DEFAULT_CONSTRAINTS = Constraints()

META_PREFIXES = {
    "object": "x-object-meta-",
    "container": "x-container-meta-",
    "account": "x-account-meta-",
}


def check_metadata(
    headers: Iterable[tuple[str, str]], kind: str, limits: Constraints = DEFAULT_CONSTRAINTS
) -> str | None:
    """
    The reason the user metadata in ``headers`` breaks the limits (for a 400), or None.

    Sizes count UTF-8 bytes of the name after the prefix and of the value, as Swift does;
    ``X-Remove-*-Meta-*`` headers are not metadata and are not counted. For accounts and
    containers a name or value that is not valid UTF-8 (its bytes kept as surrogates) or holds
    NUL is refused, as in Swift (their databases hold text); an object's metadata is stored and
    sent back byte for byte, whatever the bytes, as Swift's is.
    """
    prefix = META_PREFIXES[kind]
    count = 0
    total = 0
    for name, value in headers:
        lowered = name.lower()
        if not lowered.startswith(prefix):
            continue
        key = name[len(prefix):]
        if not key:
            return "Metadata name cannot be empty"
        if kind != "object" and not (_valid_text(key) and _valid_text(value)):
            return "Metadata must be valid UTF-8"
        key_size = len(key.encode("utf-8", "surrogateescape"))
        value_size = len(value.encode("utf-8", "surrogateescape"))
        if key_size > limits.max_meta_name_length:
            return f"Metadata name too long: {name}; max {limits.max_meta_name_length}"
        if value_size > limits.max_meta_value_length:
            return f"Metadata value longer than {limits.max_meta_value_length}: {name}"
        count += 1
        total += key_size + value_size
        if count > limits.max_meta_count:
            return f"Too many metadata items; max {limits.max_meta_count}"
        if total > limits.max_meta_overall_size:
            return f"Total metadata too large; max {limits.max_meta_overall_size}"
    return None


def _valid_text(text: str) -> bool:
    """Text that came from valid UTF-8 (no surrogates, which stand for bytes that were not), without NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_stored_metadata(items: Mapping[str, str], kind: str, limits: Constraints = DEFAULT_CONSTRAINTS) -> str | None:
    """
    The reason a container's or account's whole user metadata, once a request's items are
    merged into what is stored, breaks the count or total size limits (for a 400), or None.
    Per request limits are `check_metadata`'s; these are Swift's on the stored total, so that
    many small POSTs cannot pile up more than one may send. Removed (empty) items do not count.
    """
    prefix = META_PREFIXES[kind]
    count = 0
    total = 0
    for name, value in items.items():
        if not value or not name.lower().startswith(prefix):
            continue
        count += 1
        total += len(name[len(prefix):].encode("utf-8", "surrogateescape")) + len(value.encode("utf-8", "surrogateescape"))
    if count > limits.max_meta_count:
        return f"Too many metadata items; max {limits.max_meta_count}"
    if total > limits.max_meta_overall_size:
        return f"Total metadata too large; max {limits.max_meta_overall_size}"
    return None
