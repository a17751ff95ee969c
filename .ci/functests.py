"""
Judges a run of Swift's functional tests (pytest's junit xml) against the list of the tests
still expected to fail: a failure not on the list fails, and so does a listed test that did
not fail (the list only shrinks). Prints the verdicts and "N passed, N failed, N skipped",
where a listed failure counts as skipped; exits 1 on any failure.

usage: functests.py JUNIT_XML[,RERUN_XML] EXPECTED_LIST COUNTS_FILE [pytest args of a partial run...]
       functests.py --rerun JUNIT_XML EXPECTED_LIST   (the unlisted failures' pytest node ids)

A test run again (RERUN_XML) has the outcome of its second run, and is named as flaky when it
failed, then passed.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET


def test_name(testcase: ET.Element) -> str:
    """``tests.py::TestFile::testFileSizeLimit`` from junit's ``test.functional.tests.TestFile``."""
    parts = testcase.get("classname", "").split(".")
    if parts[:2] == ["test", "functional"]:
        parts = parts[2:]
    classes = []
    while len(parts) > 1 and parts[-1][:1].isupper():
        classes.insert(0, parts.pop())
    return "::".join(["/".join(parts) + ".py", *classes, testcase.get("name", "?")])


def outcomes(junit_path: str) -> dict[str, str]:
    """Each test's outcome: passed, failed or skipped (an error is a failure)."""
    result: dict[str, str] = {}
    for testcase in ET.parse(junit_path).getroot().iter("testcase"):
        kinds = {child.tag for child in testcase}
        if kinds & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        name = test_name(testcase)
        if result.get(name) != "failed":  # an error in teardown is a second entry: it still failed
            result[name] = outcome
    return result


def expected_failures(list_path: str) -> tuple[dict[str, str], list[str]]:
    """The listed tests with the reason each still fails, and the lines that say no reason."""
    listed, bad = {}, []
    with open(list_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            entry, _, reason = line.partition("#")
            entry, reason = entry.strip(), reason.strip()
            if not entry:
                continue
            if not reason or not re.fullmatch(r"[\w/.]+\.py::\S+", entry):
                bad.append(f"{list_path}:{number}: {line.rstrip()}")
            listed[entry] = reason
    return listed, bad


def rerun(junit_path: str, list_path: str) -> int:
    """The pytest node ids of the failures not listed, one a line, to run once more."""
    listed, _ = expected_failures(list_path)
    try:
        results = outcomes(junit_path)
    except (OSError, ET.ParseError):
        return 0
    for name, outcome in sorted(results.items()):
        if outcome == "failed" and name not in listed:
            print("test/functional/" + name)
    return 0


def main(junit_paths: str, list_path: str, counts_path: str, partial: bool) -> int:
    listed, bad = expected_failures(list_path)
    for line in bad:
        print(f"functests: each line is one test and a '# why it still fails': {line}")
    first, *again = junit_paths.split(",")
    try:
        results = outcomes(first)
    except (OSError, ET.ParseError) as err:
        print(f"functests: no test results ({err}): pytest did not run or crashed")
        results = {}
    for path in again:  # a second run of some: its outcome stands
        try:
            second = outcomes(path)
        except (OSError, ET.ParseError) as err:
            print(f"functests: no results of the second run ({err})")
            continue
        for name, outcome in second.items():
            if results.get(name) == "failed" and outcome == "passed":
                print(f"functests: FLAKY: {name} failed, then passed when run again")
            results[name] = outcome
    passed = sum(1 for outcome in results.values() if outcome == "passed")
    skipped = sum(1 for outcome in results.values() if outcome == "skipped")
    unexpected = sorted(name for name, outcome in results.items() if outcome == "failed" and name not in listed)
    still = sorted(name for name, outcome in results.items() if outcome == "failed" and name in listed)
    stale = sorted(name for name in listed if name in results and results[name] != "failed")
    missing = [] if partial or not results else sorted(name for name in listed if name not in results)
    for name in unexpected:
        print(f"functests: FAILED, and not on the list of expected failures: {name}")
    for name in stale:
        print(f"functests: {name} {results[name]} but is listed as expected to fail: "
              f"remove it from {list_path} (the list only shrinks)")
    for name in missing:
        print(f"functests: {name} is listed as expected to fail but did not run: remove it from {list_path}")
    failed = len(unexpected) + len(stale) + len(missing) + len(bad)
    if not results:
        failed += 1
    print(f"functests: {passed} passed, {len(still)} failed as listed, {len(unexpected)} failed unexpectedly, "
          f"{len(stale) + len(missing)} listed but did not fail, {skipped} skipped")
    with open(counts_path, "w") as handle:
        handle.write(f"{passed} {failed} {skipped + len(still)}\n")
    print(f"{passed} passed, {failed} failed, {skipped + len(still)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1] == "--rerun":
        sys.exit(rerun(sys.argv[2], sys.argv[3]))
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], partial=len(sys.argv) > 4))
