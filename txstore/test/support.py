"""Helpers shared by tests: temporary config files and small clusters on disk."""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

CLUSTER_CONF = """\
[txstore-hash]
hash_path_suffix = testsuffix
"""


def write_file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def temp_dir(case: SynchronousTestCase) -> Path:
    path = Path(case.mktemp()).absolute()
    path.mkdir(parents=True)
    return path
