"""Datasets: parse, validate, tokenize and batch tuning examples."""

from tunelab.data.examples import Example, dataset_hash
from tunelab.data.parse import (
    INPUT_KEYS,
    MAX_FILE_BYTES,
    OUTPUT_KEYS,
    ExampleList,
    from_records,
    read_bytes,
    read_file,
)
from tunelab.data.validate import MAX_INPUT_CHARS, MAX_OUTPUT_CHARS, MIN_EXAMPLES, validate

__all__ = [
    "INPUT_KEYS",
    "MAX_FILE_BYTES",
    "MAX_INPUT_CHARS",
    "MAX_OUTPUT_CHARS",
    "MIN_EXAMPLES",
    "OUTPUT_KEYS",
    "Example",
    "ExampleList",
    "dataset_hash",
    "from_records",
    "read_bytes",
    "read_file",
    "validate",
]
