"""LoRA training throughput: tunelab against TRL's ``SFTTrainer`` and a plain PEFT loop.

Run ``python -m bench.throughput`` (``--quick`` for a smoke run on the tiny random model).
Where to find what:

* ``__main__.py``: the driver. Prepares the workload, runs each contender in its own process,
  one after another, checks they trained on identical token sequences, prints the report.
* ``one.py``: one contender's process.
* ``data.py``: the "sentence → JSON" examples and their token sequences.
* ``contenders/``: one module per trainer (``tunelab_trainer``, ``trl_sft`` as shipped and with
  the old bench settings, ``peft_loop`` in fp32 and bf16 autocast), and the settings they share.
* ``measure.py``: what a contender reports (tokens, seconds, losses, peak RSS) and how.
* ``report.py``: the machine (CPU flags, versions), how busy it was, the table and the ratios.

docs/performance.md explains what is measured and why.
"""
