"""`tunelab serve` splits the cores between its API process and its local workers
(config.Settings.thread_split), so neither slows the other by spinning on the same cores."""

from __future__ import annotations

import pytest

from tunelab.config import Settings


@pytest.mark.parametrize("cores,workers,expected", [
    (16, 1, (4, 12)),  # the API a quarter, the worker the rest
    (16, 3, (4, 4)),   # the rest shared among the workers
    (2, 1, (1, 1)),    # never fewer than one thread each
    (1, 2, (1, 1)),
    (8, 0, (8, 0)),    # no local worker: the API takes every core
])
def test_serve_splits_the_cores_by_role(monkeypatch, tmp_path, cores, workers, expected):
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert Settings(home=tmp_path).thread_split(workers) == expected


def test_explicit_threads_win(monkeypatch, tmp_path):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert Settings(home=tmp_path, api_threads=2).thread_split(1) == (2, 14)
    assert Settings(home=tmp_path, threads=3).thread_split(2) == (4, 3)
    assert Settings(home=tmp_path, api_threads=6, threads=5).thread_split(0) == (6, 0)
