"""Progress bars, advice and warnings from the libraries, silenced in a benchmark's processes:
they would bury the tables."""

from __future__ import annotations


def quiet_libraries(uses_datasets: bool = False) -> None:
    """Silence transformers, Python's warnings and logging, and ``datasets`` where the process
    uses it (TRL does): imported anywhere else it would put its ~80 MB (pandas, pyarrow) into a
    contender's peak RSS that a run of its own never has."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if uses_datasets:
        import datasets

        datasets.disable_progress_bars()
