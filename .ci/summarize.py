"""Turns trial's closing line into 'N passed, N failed, N skipped'; exits 1 on any failure."""

import re
import sys


def main(log_path: str, status: int) -> int:
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    summary = None
    for line in reversed(lines):
        if re.match(r"^(PASSED|FAILED) \(", line):
            summary = line
            break
    if summary is None:
        print("0 passed, 1 failed (the test run did not finish; see above)")
        return 1
    counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", summary)}
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped = counts.get("skips", 0)
    if summary.startswith("FAILED") and failed == 0:
        failed = 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or status != 0 or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
