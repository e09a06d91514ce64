"""Datasets: parse, validate, tokenize and batch tuning examples."""

from tunelab.data.examples import Example, dataset_hash

__all__ = ["Example", "dataset_hash"]
