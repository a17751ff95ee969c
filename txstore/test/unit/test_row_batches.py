"""Tests for txstore.storage.row_batches: group commit of container rows."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from txstore.storage.row_batches import RowBatcher


class ScriptedCommits:
    """Commits that finish when the test says so, recording what each held."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list]] = []
        self.waiting: list[Deferred] = []
        self.bad: set = set()

    def __call__(self, key: str, rows: list) -> Deferred:
        self.calls.append((key, list(rows)))
        if self.bad & set(rows):
            return fail(ValueError(f"bad row among {rows}"))
        done: Deferred = Deferred()
        self.waiting.append(done)
        return done

    def finish(self) -> None:
        self.waiting.pop(0).callback(None)


class RowBatcherTests(SynchronousTestCase):
    def test_rows_arriving_during_a_commit_go_together_in_the_next(self) -> None:
        commits = ScriptedCommits()
        batcher = RowBatcher(commits)
        first = batcher.add("db1", "a")
        self.assertEqual(commits.calls, [("db1", ["a"])])  # at once, alone
        later = [batcher.add("db1", row) for row in ("b", "c", "d")]
        other = batcher.add("db2", "x")  # another database is not held up
        self.assertEqual(commits.calls, [("db1", ["a"]), ("db2", ["x"])])
        self.assertNoResult(first)
        commits.finish()  # db1's first commit
        self.successResultOf(first)
        for waiting in later:
            self.assertNoResult(waiting)  # not before their own commit
        self.assertEqual(commits.calls[-1], ("db1", ["b", "c", "d"]))
        commits.finish()  # db2
        self.successResultOf(other)
        commits.finish()  # db1's batch
        for waiting in later:
            self.successResultOf(waiting)
        self.assertEqual(batcher.commits, 3)
        batcher.add("db1", "e")
        self.assertEqual(commits.calls[-1], ("db1", ["e"]))  # idle again: at once

    def test_a_failed_batch_is_retried_row_by_row(self) -> None:
        commits = ScriptedCommits()
        batcher = RowBatcher(commits)
        first = batcher.add("db", "a")
        rows = {row: batcher.add("db", row) for row in ("b", "bad", "c")}
        commits.bad = {"bad"}
        commits.finish()
        self.successResultOf(first)
        # b, bad, c together failed; then b alone, bad alone (fails), c alone.
        self.assertEqual([rows for _, rows in commits.calls], [["a"], ["b", "bad", "c"], ["b"]])
        commits.finish()
        self.successResultOf(rows["b"])
        self.failureResultOf(rows["bad"], ValueError)
        self.assertEqual(commits.calls[-1], ("db", ["c"]))
        commits.finish()
        self.successResultOf(rows["c"])

    def test_batches_are_capped(self) -> None:
        commits = ScriptedCommits()
        batcher = RowBatcher(commits, max_batch=2)
        batcher.add("db", 0)
        for row in range(1, 6):
            batcher.add("db", row)
        for _ in range(3):
            commits.finish()
        self.assertEqual([rows for _, rows in commits.calls], [[0], [1, 2], [3, 4], [5]])

    def test_a_caller_that_gives_up_does_not_stop_the_commit(self) -> None:
        commits = ScriptedCommits()
        batcher = RowBatcher(commits)
        batcher.add("db", "a")
        gone = batcher.add("db", "b")
        stays = batcher.add("db", "c")
        gone.cancel()
        self.failureResultOf(gone)
        commits.finish()
        self.assertEqual(commits.calls[-1], ("db", ["b", "c"]))
        commits.finish()
        self.successResultOf(stays)
