"""
Turns trial's closing line, plus the functests' counts when given (a file holding "passed failed
skipped", from .ci/functests), into one line 'N passed, N failed, N skipped'; exits 1 on any
failure.
"""

from __future__ import annotations

import re
import sys


def main(log_path: str, status: int, functest_counts: str | None = None) -> int:
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    summary = None
    for line in reversed(lines):
        if re.match(r"^(PASSED|FAILED) \(", line):
            summary = line
            break
    unfinished = ""
    if summary is None:
        unfinished = " (the trial run did not finish; see above)"
        passed, failed, skipped = 0, 1, 0
    else:
        counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", summary)}
        passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
        failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
        skipped = counts.get("skips", 0)
        if summary.startswith("FAILED") and failed == 0:
            failed = 1
    trial_ok = summary is not None and failed == 0 and status == 0 and passed > 0
    if functest_counts is not None:
        try:
            with open(functest_counts, encoding="utf-8") as handle:
                more = [int(n) for n in handle.read().split()]
        except (OSError, ValueError):
            more = []
        if len(more) != 3:
            more = [0, 1, 0]
            unfinished += " (the functests did not finish; see above)"
        passed, failed, skipped = passed + more[0], failed + more[1], skipped + more[2]
    print(f"{passed} passed, {failed} failed, {skipped} skipped{unfinished}")
    return 0 if trial_ok and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4]))
