"""Benchmark suites: models × tasks × station folds × seeds, run resumably in parallel, and
summarised as leaderboards (``stgraph benchmark SUITE.yaml --out DIR``)."""

from stgraph.bench.execute import run_suite
from stgraph.bench.leaderboard import collect_results, leaderboard_table, write_leaderboard
from stgraph.bench.suite import RunSpec, Suite, load_suite

__all__ = ["Suite", "RunSpec", "load_suite", "run_suite", "collect_results", "leaderboard_table", "write_leaderboard"]
