"""The ``tunelab`` command line: tune, generate, models, demo (and the service commands).

Errors a user can fix are printed in plain words with what to do, never as a traceback.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tunelab.config import Settings
from tunelab.errors import DatasetError, TunelabError
from tunelab.export.cli import register as register_export_commands
from tunelab.parameters import MAX_DISPLAY_NAME, cli_help
from tunelab.parameters import HyperparameterSettings as HP
from tunelab.parameters import TunedModelSettings as TM

if TYPE_CHECKING:
    from tunelab.catalog import BaseModelSpec

app = typer.Typer(
    help="tunelab: tune an open text model on your examples with LoRA, and serve it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]Error:[/] {message}", highlight=False)
    return typer.Exit(code)


@contextmanager
def reported(code: int = 2, data: str = "The training data") -> Iterator[None]:
    """A command's user errors as plain lines and exit ``code``: a dataset's problems each
    on its row (with the warnings) under "``data`` has N problems", any other tunelab error
    as its message; never a traceback."""
    try:
        yield
    except DatasetError as e:
        print_problems(e, data)
        raise typer.Exit(code) from None
    except TunelabError as e:
        raise fail(e.message, code) from None


def print_problems(e: DatasetError, data: str = "The training data") -> None:
    n = len(e.problems)
    err.print(f"[bold red]{data} has {n} problem{'s' if n != 1 else ''}:[/]")
    for p in e.problems:
        err.print(f"  [red]✗[/] {p}", highlight=False)
    print_warnings(e.warnings)


def print_warnings(warnings) -> None:
    for w in warnings:
        err.print(f"  [yellow]![/] {w}", highlight=False)


class CancelFlag:
    """Ctrl-C asks the trainer to stop after the current step; a second Ctrl-C quits."""

    def __init__(self) -> None:
        self.set = False
        self._old = None

    def __enter__(self) -> CancelFlag:
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._old)

    def _handle(self, *_):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        err.print(
            "\n[yellow]Cancelling after this step… (the parameters learned so far are kept; "
            "press Ctrl-C again to quit at once)[/]"
        )

    def __call__(self) -> bool:
        return self.set


def _load_base(settings: Settings, name: str):
    from tunelab.catalog import get_base_model, load_base_model

    spec = get_base_model(name, settings.extra_models)
    with console.status(f"Loading base model {spec.id}… (the first use converts it, ~30 s)"):
        return load_base_model(
            spec, settings.models_dir, settings.device, settings.threads, settings.precision
        )


def default_output_dir(data: Path) -> Path:
    return Path("tuned") / f"{data.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@app.command()
def tune(
    data: Annotated[Path, typer.Argument(help="Examples: a CSV, JSON or JSONL file.")],
    base_model: Annotated[
        str | None, typer.Option("--base-model", "-m", help="Catalog name, HF folder or .gguf.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help=cli_help(HP, "epoch_count"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=cli_help(HP, "batch_size"))] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help=cli_help(HP, "learning_rate"))
    ] = None,
    learning_rate_multiplier: Annotated[
        float | None, typer.Option(help=cli_help(HP, "learning_rate_multiplier")),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output directory (default tuned/…).")
    ] = None,
    input_column: Annotated[str | None, typer.Option(help="CSV/JSON input column.")] = None,
    output_column: Annotated[str | None, typer.Option(help="CSV/JSON output column.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    server: Annotated[
        str | None, typer.Option(help="Submit to a running tunelab service at this URL.")
    ] = None,
    display_name: Annotated[
        str | None, typer.Option(help="With --server: " + cli_help(TM, "display_name")
                                 + " Default: the data file's name, cut to fit.")
    ] = None,
    validation: Annotated[
        Path | None,
        typer.Option(help="Validation examples (CSV, JSON or JSONL) to score every epoch on. "
                     "Default: 10% of 40 or more examples are held out."),
    ] = None,
    free_answers: Annotated[
        bool, typer.Option("--free-answers", help="Keep every answer as the model writes it. "
                           "Default: where the training outputs are labels (a classifier), an "
                           "answer that is none of them is replaced by the most likely label; "
                           "where they all have one fixed shape (a date's 9999-99-99), answers "
                           "keep to it."),
    ] = False,
) -> None:
    """Tune a LoRA adapter on DATA and show progress, per-epoch losses and validation
    scores, and the best epoch."""
    from tunelab.data import read_file, validate
    from tunelab.data.split import split_validation
    from tunelab.training import Hyperparameters

    settings = Settings()
    hp = Hyperparameters(epochs, batch_size, learning_rate, learning_rate_multiplier,
                         answer_labels=False if free_answers else None)
    with reported():
        hp.validate()
        examples = read_file(data, input_column=input_column, output_column=output_column)
        given = None
        if validation is not None:
            given = read_file(validation, input_column=input_column,
                              output_column=output_column)
            validate(given, min_examples=1, location=str(validation))
        if server:
            from tunelab import cli_service

            cli_service.submit_and_follow(
                server,
                examples,
                hp,
                base_model or settings.default_base_model,
                display_name if display_name is not None else data.stem[:MAX_DISPLAY_NAME],
                validation=given,
            )
            return
        base = _load_base(settings, base_model or settings.default_base_model)
        warnings = validate(
            examples,
            count_tokens=lambda ex: _example_tokens(base, ex),
            context_length=base.spec.context_length,
        )
    split = split_validation(examples, given,
                             for_refit=hp.plans_refit(len(examples), given is not None))
    warnings += split.warnings
    if warnings:
        err.print("[yellow]Warnings about the training data:[/]")
        print_warnings(warnings)
    console.print(f"Validation: {split.message}", highlight=False)

    out = output or default_output_dir(data)
    with reported():
        result = train_with_progress(
            base, split.train, hp, out, settings.seed if seed is None else seed,
            validation=split.validation, validation_record=split.record(),
            train_memory_mb=settings.train_memory_mb, everything=split.examples,
        )
    report_result(result)


def train_with_progress(base, examples, hp, out: Path, seed: int, validation=None,
                        validation_record: dict | None = None,
                        train_memory_mb: int | None = None, everything=None):
    """Run the trainer with a live progress bar (which also follows the scoring of each
    epoch on the validation examples, and a refit on ``everything``, the held-out examples
    included, when the plan has one); Ctrl-C cancels cleanly."""
    from tunelab.training import train

    everything = everything or examples
    # unset values are chosen from the data (training/auto.py); one line says why for each
    resolved = hp.resolve(base.spec.recommended_learning_rate, examples,
                          validation=validation or (),
                          held_out=len(everything) - len(examples))
    per_epoch = resolved.steps_per_epoch(len(examples))
    first_total = per_epoch * resolved.epoch_count
    console.print(
        f"Tuning [bold]{base.spec.id}[/] on {len(examples)} examples: "
        f"{resolved.epoch_count} epoch{'' if resolved.epoch_count == 1 else 's'} × {per_epoch} "
        f"step{'' if per_epoch == 1 else 's'} (batch size {resolved.batch_size}), "
        f"learning rate {resolved.learning_rate:g} → {out}",
        highlight=False,
    )
    for reason in resolved.reasons:
        console.print(f"  {reason}", highlight=False, soft_wrap=True)
    console.print(f"  base weights: {base.precision.label}: {base.precision.reason}",
                  highlight=False, soft_wrap=True)
    from tunelab.allocator import allocator_note

    if (note := allocator_note()) is not None:
        console.print(f"  memory: {note}", highlight=False, soft_wrap=True)
    lines = not console.is_terminal
    progress = Progress(
        TextColumn("[bold blue]tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        # a log or a pipe shows no live bar (it would print only its last state): a plain line
        # per epoch instead (``step`` below)
        disable=lines,
    )
    started = time.monotonic()
    refit_epoch_steps = resolved.steps_per_epoch(len(everything))
    from tunelab.cli_service import progress_line

    with CancelFlag() as cancel, progress:
        task = progress.add_task(
            "tune",
            # a refit: at most every epoch again, on every example (training/refit.py)
            total=first_total + (resolved.steps_per_epoch(len(everything)) * resolved.epoch_count
                                 if resolved.refit else 0),
            epoch=1,
            epochs=resolved.epoch_count,
            loss="–",
            note="",
        )

        def scoring(epoch: int, done: int, total: int) -> None:
            what = "the base model" if epoch == 0 else f"epoch {epoch}"
            note = "" if done == total else f"scoring {what}: {done}/{total}"
            progress.update(task, note=note)

        def step(s) -> None:
            if s.step <= first_total:
                progress.update(task, completed=s.step, epoch=s.epoch, loss=f"{s.mean_loss:.4f}")
                if lines and (s.step % per_epoch == 0 or s.step == first_total):
                    progress_line(console, f"epoch {s.epoch}/{resolved.epoch_count}", s.step,
                                  progress.tasks[0].total, s.mean_loss, started)
                return
            # the refit on every example (training/refit.py): its own epochs, its real length
            epochs = -(-(s.total_steps - first_total) // refit_epoch_steps)
            progress.update(task, completed=s.step, total=s.total_steps,
                            epoch=s.epoch - resolved.epoch_count, epochs=epochs,
                            loss=f"{s.mean_loss:.4f}", note=f"refit on all {len(everything)}")
            if lines and ((s.step - first_total) % refit_epoch_steps == 0
                          or s.step == s.total_steps):
                progress_line(console, f"refit on all {len(everything)}, epoch "
                              f"{s.epoch - resolved.epoch_count}/{epochs}", s.step,
                              s.total_steps, s.mean_loss, started)

        return train(
            base,
            examples,
            resolved,
            out,
            seed=seed,
            should_cancel=cancel,
            on_snapshot=step,
            validation=validation,
            validation_record=validation_record,
            on_evaluation_progress=scoring,
            train_memory_mb=train_memory_mb,
            refit_examples=everything if resolved.refit else None,
        )


def _example_tokens(base, ex) -> int:
    from tunelab.data.batches import tokenize_example

    return tokenize_example(base.tokenizer, base.template, ex).length


def _score_columns(metric: str) -> tuple[str, str, str]:
    """The score's name in words, and the other score a table shows beside it (its name and
    key): exact match beside accuracy or token F1, token F1 beside exact match."""
    from tunelab.training.evaluate import EXACT_MATCH, TOKEN_F1, metric_words

    if metric == EXACT_MATCH:
        return metric_words(metric), metric_words(TOKEN_F1), TOKEN_F1
    return metric_words(metric), metric_words(EXACT_MATCH), EXACT_MATCH


def _print_metric_note(ev: dict | None) -> None:
    """Under a scores table, why its metric ranks the rows: one line of the console's width
    (a table's caption would wrap to the table's)."""
    from tunelab.training.evaluate import metric_note

    if ev and ev.get("metric"):
        console.print(f"[dim]{metric_note(ev['metric'])}[/]", highlight=False)


def report_result(result) -> None:
    from tunelab.catalog.labels import labels_note
    from tunelab.catalog.stopping import AnswerRules

    if result.resumed_from_epoch:
        console.print(f"(resumed from the checkpoint of epoch {result.resumed_from_epoch})")
    memory = result.manifest.get("memory") or {}
    if memory.get("recompute") or memory.get("pass_tokens"):  # short of memory: say so
        console.print(f"  memory: {memory['note']} (TUNELAB_TRAIN_MEMORY_MB)", highlight=False,
                      soft_wrap=True)
    ev = result.evaluation
    scored = {e["epoch"]: e for e in ev["epochs"]} if ev else {}
    metric, other, other_key = _score_columns(ev["metric"]) if ev else ("", "", "")
    if result.epoch_losses:
        table = Table(title="Per epoch" + (f" (validation: {ev['example_count']} examples)"
                                           if ev else ""))
        table.add_column("epoch", justify="right")
        table.add_column("train loss", justify="right")
        if ev:
            for col in ("val. loss", other, metric):
                table.add_column(col, justify="right")
        table.add_column("")
        if ev and ev.get("baseline"):
            b = ev["baseline"]
            table.add_row("base", "", f"{b['validation_loss']:.4f}", f"{b[other_key]:.3f}",
                          f"{b['score']:.3f}", "[dim]before tuning[/]")
        best = result.advice.epoch if result.advice else None
        mark = "← best" if ev else "← suggested"
        for i, loss in enumerate(result.epoch_losses, 1):
            row = [str(i), f"{loss:.4f}"]
            if ev:
                e = scored.get(i)
                row += [f"{e['validation_loss']:.4f}", f"{e[other_key]:.3f}",
                        f"{e['score']:.3f}"] if e else ["", "", ""]
            table.add_row(*row, mark if i == best else "")
        console.print(table)
        _print_metric_note(ev)
    refit = result.refit
    if result.status == "cancelled" and refit:  # the first run's served epoch remains
        console.print(f"[yellow]Tuning was cancelled.[/] {refit['message']}", highlight=False,
                      soft_wrap=True)
    elif result.status == "cancelled":
        last = ev["epochs"][-1] if ev and ev["epochs"] else None
        quality = (
            f"the last evaluated epoch, {last['epoch']}, scored {last['score']:.3f} "
            f"({metric}); the steps after it were not scored, so their quality is "
            "unpredictable"
            if last else "its quality is unpredictable"
        )
        console.print(
            f"[yellow]Tuning was cancelled after {len(result.snapshots)} steps.[/] The adapter "
            f"holds the parameters learned so far; {quality}.", highlight=False, soft_wrap=True
        )
    if result.advice:
        label = "Best epoch" if ev else "Epoch advice"
        console.print(f"[bold]{label}:[/] {result.advice.message}", highlight=False)
        last = len(result.epoch_losses)
        served = result.manifest.get("selected_epoch")
        if refit and refit.get("served"):
            console.print(f"[bold]Served:[/] {refit['message']}", highlight=False,
                          soft_wrap=True)
            console.print(f"  To serve epoch {refit['from_epoch']} of the run that held examples "
                          f"out instead: tunelab use-epoch {result.output_dir} "
                          f"{refit['from_epoch']}", highlight=False, soft_wrap=True)
        elif ev and served and served != last:
            console.print(f"  The adapter serves epoch {served}. To serve epoch {last} "
                          f"instead: tunelab use-epoch {result.output_dir} {last}")
        elif result.advice.epoch != last and result.status == "completed":
            console.print(
                f"  To serve epoch {result.advice.epoch} instead of {last}: "
                f"tunelab use-epoch {result.output_dir} {result.advice.epoch}"
            )
    labels = result.manifest.get("answer_labels")
    if labels:
        console.print(f"[bold]Answers:[/] {labels_note(labels)} (To keep every answer as "
                      "the model writes it, tune with --free-answers.)", highlight=False,
                      soft_wrap=True)
    for note in AnswerRules.from_record(result.manifest).notes():
        console.print(f"[bold]Answers:[/] {note}", highlight=False, soft_wrap=True)
    console.print(
        f"Tokens/s: {result.tokens_per_second:.0f}. Adapter: {result.adapter_dir}\n"
        f'Try it: tunelab generate {result.output_dir} "your prompt"'
    )


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="A tuning output directory or a base model name.")],
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    epoch: Annotated[
        int | None, typer.Option(help="Use this epoch's checkpoint instead of the adapter.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System instruction.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy (default).")] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    top_k: Annotated[int | None, typer.Option()] = None,
    max_output_tokens: Annotated[int | None, typer.Option()] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop sequence (repeatable).")] = None,
    candidate_count: Annotated[int, typer.Option(help="Number of answers.")] = 1,
    seed: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Generate from a tuned model (streaming) or a base model."""
    from tunelab.inference import GenerationConfig, Generator
    from tunelab.training import adapter_path, read_manifest

    settings = Settings()
    config = GenerationConfig(
        temperature, top_p, top_k, max_output_tokens, tuple(stop or ()), candidate_count, seed
    )
    with reported():
        path = Path(model)
        if (path / "manifest.json").exists():
            manifest = read_manifest(path)
            base_name, adapter = manifest["base_model"], adapter_path(path, epoch)
        else:
            base_name, adapter = model, None
        base = _load_base(settings, base_name)
        gen = Generator(base, settings.adapter_cache_bytes)
        turns = [("user", prompt)]
        if candidate_count > 1:
            for i, c in enumerate(gen.generate(turns, system, config, adapter).candidates, 1):
                console.print(f"[bold]#{i}[/] {c.text}", highlight=False)
            return
        for chunk in gen.stream(turns, system, config, adapter):
            console.print(chunk.text, end="", highlight=False, soft_wrap=True)
        console.print()


@app.command("use-epoch")
def use_epoch(
    output: Annotated[Path, typer.Argument(help="A tuning output directory.")],
    epoch: Annotated[str, typer.Argument(
        help="The epoch whose checkpoint to serve, or 'refit' for the refit on all examples.")],
) -> None:
    """Serve an earlier epoch's checkpoint instead of the last one (or the refit on every
    example again), without re-tuning."""
    from tunelab.training import select_epoch, select_refit

    with reported():
        if epoch.strip().lower() == "refit":
            select_refit(output)
            console.print(f"{output}/adapter now holds the refit on all the examples.")
            return
        if not epoch.strip().isdecimal():
            err.print(f"[red]Error:[/] EPOCH must be an epoch number or 'refit', got {epoch!r}.",
                      highlight=False)
            raise typer.Exit(2)
        select_epoch(output, int(epoch))
    console.print(f"{output}/adapter now holds the parameters after epoch {int(epoch)}.")


@app.command("eval")
def eval_models(
    models: Annotated[list[str], typer.Argument(
        help="Tuning output directories, base model names, or with --server "
        "tunedModels/ID and models/ID.")],
    data: Annotated[Path, typer.Option(help="Test examples: a CSV, JSON or JSONL file.")],
    server: Annotated[
        str | None, typer.Option(help="Call tunedModels/… and models/… on this service.")
    ] = None,
    base: Annotated[bool, typer.Option(
        help="Also score the base model of the first tuned model named.")] = True,
    input_column: Annotated[str | None, typer.Option(help="CSV/JSON input column.")] = None,
    output_column: Annotated[str | None, typer.Option(help="CSV/JSON output column.")] = None,
    show: Annotated[int, typer.Option(help="Differing answers shown side by side.")] = 10,
    json_file: Annotated[Path | None, typer.Option(
        "--json", help="Also write the scores and the differing answers to this file, as JSON "
        "shaped as the API's :evaluate response (for scripts).")] = None,
) -> None:
    """Score models on one test file: a table of scores and latency, then the examples where
    their answers differ, side by side (greedy answers; see docs/evaluation.md)."""
    from tunelab.data import read_file, validate
    from tunelab.data.split import MAX_VALIDATION
    from tunelab.training.evaluate import compare

    settings = Settings()
    if json_file is not None and not json_file.absolute().parent.is_dir():
        raise fail(f"--json {json_file}: the folder {json_file.parent} does not exist; "
                   "create it, or name a file in a folder that does.", 2)
    with reported(data="The test data"):
        examples = read_file(data, input_column=input_column, output_column=output_column)
        validate(examples, min_examples=1, location=str(data))
        if len(examples) > MAX_VALIDATION:
            raise TunelabError(
                f"{data} holds {len(examples)} examples; at most {MAX_VALIDATION} are scored "
                "(each model answers every one). Use a sample of the file.")
        answerers = _answerers(settings, list(models), examples, server, base)
        from tunelab.cli_service import elapsed

        lines = not console.is_terminal  # a log or a pipe: a line per model answered
        started = time.monotonic()
        with Progress(TextColumn("[bold blue]answering {task.fields[model]}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                      disable=lines) as progress:
            task = progress.add_task("eval", total=len(examples) * len(answerers), model="")
            answered: dict[str, int] = {}

            def advance(name: str, done: int, total: int) -> None:
                answered[name] = done
                progress.update(task, completed=sum(answered.values()), model=name)
                if lines and done == total:
                    console.print(f"answered: {name}, {done}/{total}, {elapsed(started)} "
                                  "elapsed", highlight=False)

            out = compare(examples, answerers, advance)
    show_evaluation(out, data, show)
    from rich.markup import escape

    for r in out["results"]:  # a base model asked as the tuned model is
        if r.get("asked_as"):
            console.print(
                f"[dim]{escape(r['model'])} was asked as {escape(r['asked_as'])} is, with "
                f"{r['asked_with']}, as the validation scores of tunelab tune ask a base "
                "model: its score is what those rules give a model not tuned.[/]",
                highlight=False, soft_wrap=True)

    for r in out["results"]:  # a tuned classifier tested on outputs none of its labels
        name = r["model"]
        note = _unreachable_labels(name, examples, server)
        if note:
            r["unreachable_note"] = note
            console.print(f"[yellow]{escape(name)}:[/] {escape(note)} To let it answer freely, "
                          "tune it again with --free-answers.", highlight=False, soft_wrap=True)
    if json_file is not None:
        with reported():
            _write_evaluation_json(json_file, out)


def _wire(value):
    """``value`` with every key in the API's camelCase (``mean_latency_ms`` →
    ``meanLatencyMs``), as the API's models name them (``to_camel``)."""
    from pydantic.alias_generators import to_camel

    if isinstance(value, dict):
        return {to_camel(k): _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _write_evaluation_json(path: Path, out: dict) -> None:
    """The comparison as ``:evaluate`` answers it: ``metric``, ``metricNote``,
    ``exampleCount``, ``results[]``, ``differences[]``, ``differingCount``."""
    import json

    from tunelab.training.evaluate import metric_note, metric_wire

    wire = _wire({**out, "metric": metric_wire(out["metric"]),
                  "metric_note": metric_note(out["metric"]),
                  "results": [{k: v for k, v in r.items() if k not in ("count", "metric")}
                              for r in out["results"]]})
    try:
        path.write_text(json.dumps(wire, indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    except OSError as e:
        raise TunelabError(f"Cannot write {path}: {e.strerror or e}. Choose a file in a folder "
                           "you can write to.") from None
    console.print(f"Scores written to {path}", highlight=False)


def _answerers(settings: Settings, names: list[str], examples, server: str | None,
               with_base: bool) -> list:
    """An ``Answerer`` for each model; local ones share a loaded base and answer many
    examples at once, served ones one request each."""
    from tunelab.inference import Generator
    from tunelab.inference.manifest import answer_rules_of
    from tunelab.training import adapter_path, read_manifest
    from tunelab.training.evaluate import ANSWER_MARGIN_TOKENS, Answerer, generator_answerer

    served = [n for n in names if n.startswith(("tunedModels/", "models/"))] if server else []
    if with_base:
        first = next((n for n in names if n not in served and (Path(n) / "manifest.json")
                      .exists()), None)
        if first is not None:
            extra = read_manifest(Path(first))["base_model"]
            if extra not in names and f"models/{extra}" not in names:
                names = [*names, extra]
        elif server and any(n.startswith("tunedModels/") for n in served):
            with _service_client(server) as c:
                extra = c.get(f"/v1beta/{next(n for n in served if n.startswith('tuned'))}")
                extra = _checked(extra)["baseModel"]
            if extra not in names:
                names, served = [*names, extra], [*served, extra]
    local: dict[str, tuple[str, Path | None]] = {}  # name: (base model, adapter or None)
    for name in names:
        if name in served:
            continue
        path = Path(name)
        if (path / "manifest.json").exists():
            local[name] = read_manifest(path)["base_model"], adapter_path(path)
        elif path.exists():
            raise TunelabError(f"{name} is not a tuning output directory (no manifest.json).")
        else:
            local[name] = name.removeprefix("models/"), None
    # a base model is asked as the first tuned model is, as its validation scores ask it
    rules = answer_rules_of([(n, adapter) for n, (_, adapter) in local.items()])
    generators: dict = {}
    out = []
    for name in names:
        if name in served:
            # an answer may be as long as the longest expected output in characters (a token
            # is at least one character) plus a margin: the server's tokenizer is not here
            budget = max(len(ex.output) for ex in examples) + ANSWER_MARGIN_TOKENS
            out.append(Answerer(name, _served_answer(server, name, budget)))
            continue
        base_name, adapter = local[name]
        if base_name not in generators:
            generators[base_name] = Generator(_load_base(settings, base_name),
                                              settings.adapter_cache_bytes)
        out.append(generator_answerer(name, generators[base_name], adapter, examples,
                                      asked_as=rules if adapter is None else None))
    return out


def _unreachable_labels(name: str, examples, server: str | None) -> str | None:
    """For a tuned model that answers with labels (a local tuning output, or with --server a
    tuned model whose resource lists its ``answerLabels``), how many test outputs are none of
    them (catalog/labels.py)."""
    from tunelab.catalog.labels import unreachable_note
    from tunelab.inference.manifest import served_facts
    from tunelab.training import adapter_path

    if server and name.startswith("tunedModels/"):
        with _service_client(server) as c:
            labels = _checked(c.get(f"/v1beta/{name}")).get("answerLabels")
        if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            labels = None
    elif (Path(name) / "manifest.json").exists():
        labels = served_facts(adapter_path(Path(name))).answer_labels
    else:
        return None
    return unreachable_note(labels, [ex.output for ex in examples])


def _service_client(server: str):
    from tunelab import cli_service

    return cli_service._client(server)


def _checked(resp) -> dict:
    from tunelab import cli_service

    return cli_service._check(resp)


def _served_answer(server: str, name: str, budget: int):
    """A function answering one example with a served model's generateContent (greedy)."""
    client = _service_client(server)

    def answer(ex) -> str:
        body = {"contents": [{"role": "user", "parts": [{"text": ex.text_input}]}],
                "generationConfig": {"temperature": 0, "maxOutputTokens": budget}}
        if ex.system is not None:
            body["systemInstruction"] = {"parts": [{"text": ex.system}]}
        resp = _checked(client.post(f"/v1beta/{name}:generateContent", json=body))
        return "".join(p.get("text", "") for p in resp["candidates"][0]["content"]["parts"])

    return answer


def show_evaluation(out: dict, data: Path, show: int) -> None:
    """The scores table, then the differing answers side by side."""
    metric, other, other_key = _score_columns(out["metric"])
    table = Table(title=f"Scores on {data.name} ({out['example_count']} examples)")
    for col in ("model", metric, other, "mean latency"):
        table.add_column(col, justify="left" if col == "model" else "right")
    best = max(r["score"] for r in out["results"])
    for r in out["results"]:
        mark = "[bold green]" if r["score"] == best else ""
        table.add_row(r["model"], f"{mark}{r['score']:.3f}", f"{r[other_key]:.3f}",
                      f"{r['mean_latency_ms']:.0f} ms")
    console.print(table)
    _print_metric_note(out)
    diffs = out["differences"][:show]
    if len(out["results"]) < 2:
        return
    if not out["differing_count"]:
        console.print("Every model gave the same answer to every example.")
        return
    if not diffs:
        console.print(f"The models' answers differ on {out['differing_count']} of "
                      f"{out['example_count']} examples (--show N lists them side by side).")
        return
    side = Table(title=f"Answers that differ ({out['differing_count']} of "
                 f"{out['example_count']} examples; {len(diffs)} shown)", show_lines=True)
    side.add_column("input")
    side.add_column("expected")
    for r in out["results"]:
        side.add_column(r["model"])
    for d in diffs:
        cells = []
        for a in d["answers"]:
            ok = a["text"].strip() == d["expected"].strip()
            cells.append(("[green]" if ok else "") + _cut(a["text"]) + ("[/]" if ok else ""))
        side.add_row(_cut(d["text_input"]), _cut(d["expected"]), *cells)
    console.print(side)


def _cut(text: str, n: int = 80) -> str:
    from rich.markup import escape

    text = " ".join(text.split())
    return escape(text if len(text) <= n else text[: n - 1] + "…")


@app.command()
def models() -> None:
    """List the base models that can be tuned."""
    from tunelab.catalog import list_base_models
    from tunelab.catalog.loading import pick_device
    from tunelab.catalog.precision import cpu_flags, cpu_model

    settings = Settings()
    device = pick_device(settings.device)
    table = Table(title="Base models")
    for col in ("name", "installed", "context", "rec. LR", "base weights", "weights from"):
        table.add_column(col)
    for spec in list_base_models(settings.extra_models):
        ok = spec.source.available()
        table.add_row(
            spec.id,
            "[green]yes[/]" if ok else "[red]no[/]",
            str(spec.context_length),
            f"{spec.recommended_learning_rate:g}",
            _precision_cell(settings, spec, device),
            spec.source.describe(),
        )
    console.print(table)
    flags = ", ".join(cpu_flags()) or "none of AMX/AVX512-BF16/AVX2"
    where = f"{cpu_model()} ({flags})" if device == "cpu" else device
    console.print(f"Base weights: what a model's frozen weights are held in on this machine "
                  f"(TUNELAB_PRECISION={settings.precision}; auto times a matmul of the model's "
                  f"own projection shape in fp32 and bf16). Device: {where}.",
                  highlight=False, soft_wrap=True)


def _precision_cell(settings: Settings, spec: BaseModelSpec, device: str) -> str:
    """What ``spec``'s frozen weights are held in here, for its own projection shape (a short
    probe the first time, cached in the data dir: catalog/precision.py); before the model's
    first use its config is not on this machine, and nothing is converted to read it."""
    from tunelab.catalog.loading import installed_shape, installed_weight_bytes
    from tunelab.catalog.precision import choose

    shape = installed_shape(spec, settings.models_dir)
    if shape is None:
        return "chosen on first use"
    chosen = choose(settings.precision, device, settings.models_dir, *shape,
                    weight_bytes=installed_weight_bytes(spec, settings.models_dir))
    speed = (f", bf16 at {chosen.fp32_ms / chosen.bf16_ms:.1f}x fp32's speed"
             if chosen.fp32_ms and chosen.bf16_ms else "")
    return f"{chosen.label} ({shape[0]}x{shape[1]}{speed})"


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(help="Epochs to tune.")] = 3,
    output: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo-output"),
) -> None:
    """Tune the default base model on the bundled example task and compare answers."""
    from tunelab.data import read_file, validate
    from tunelab.examples.reviews import bundled_path, make_examples
    from tunelab.inference import GenerationConfig, Generator
    from tunelab.training import Hyperparameters, adapter_path

    settings = Settings()
    with reported():
        base = _load_base(settings, settings.default_base_model)
        data = bundled_path()
        examples = read_file(data)
        validate(
            examples,
            count_tokens=lambda ex: _example_tokens(base, ex),
            context_length=base.spec.context_length,
        )
        console.print(
            f"[bold]The task[/] ({data.name}, {len(examples)} examples): turn a product review "
            "into one line of JSON with product, sentiment and rating. For example:\n"
            f"  input:  {examples[0].text_input}\n  output: {examples[0].output}",
            highlight=False,
        )
        heldout = make_examples(6, heldout=True)
        gen = Generator(base, settings.adapter_cache_bytes)
        config = GenerationConfig(max_output_tokens=48)
        with console.status("Asking the base model first…"):
            before = [gen.generate([("user", e.text_input)], None, config).text for e in heldout]
        result = train_with_progress(
            base, examples, Hyperparameters(epoch_count=epochs), output, settings.seed,
            train_memory_mb=settings.train_memory_mb,
        )
        report_result(result)
        adapter = adapter_path(output)
        after = [
            gen.generate([("user", e.text_input)], None, config, adapter).text for e in heldout
        ]
    show_comparison(heldout, before, after)


def show_comparison(heldout, before: list[str], after: list[str]) -> None:
    """Base vs tuned answers on prompts that were not in the training data."""
    import json

    def is_record(text: str) -> bool:
        try:
            obj = json.loads(text)
        except ValueError:
            return False
        return isinstance(obj, dict) and set(obj) == {"product", "sentiment", "rating"}

    table = Table(title="Held-out reviews (not in the training data)", show_lines=True)
    table.add_column("review")
    table.add_column("base model")
    table.add_column("tuned model")
    score = {"base": [0, 0], "tuned": [0, 0]}
    for ex, b, a in zip(heldout, before, after, strict=True):
        cells = []
        for key, text in (("base", b), ("tuned", a)):
            fmt, exact = is_record(text), text.strip() == ex.output
            score[key][0] += fmt
            score[key][1] += exact
            mark = (
                "[green]exact[/]"
                if exact
                else ("[yellow]format ok[/]" if fmt else "[red]wrong format[/]")
            )
            cells.append(f"{text.strip()[:160]}\n{mark}")
        table.add_row(f"{ex.text_input}\n[dim]expected: {ex.output}[/]", *cells)
    console.print(table)
    n = len(heldout)
    for key in ("base", "tuned"):
        console.print(
            f"{key:>5} model: {score[key][0]}/{n} answers in the trained format, "
            f"{score[key][1]}/{n} exactly right"
        )


def _register_service_commands() -> None:
    try:
        from tunelab import cli_service
    except ImportError:
        return
    register = getattr(cli_service, "register", None)
    if register is not None:
        register(app)


_register_service_commands()
register_export_commands(app)


TRAINING_COMMANDS = ("tune", "demo", "worker")


def _trains_here(args: list[str]) -> bool:
    """Whether the command line runs training in this process (not ``tune --server``)."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in TRAINING_COMMANDS:
        return False
    return not any(a == "--server" or a.startswith("--server=") for a in args)


def main() -> None:
    from tunelab.quiet import end_quickly, silence_library_warnings

    if _trains_here(sys.argv[1:]):
        from tunelab.allocator import restart_with_jemalloc

        restart_with_jemalloc()  # training keeps less freed memory (allocator.py)
    silence_library_warnings()
    try:
        try:
            app()
        finally:
            end_quickly()  # a command that loaded a model exits ~1 s sooner
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(130)
    except Exception as e:  # a full or read-only disk is a plain line, not a traceback
        from tunelab.fsutil import storage_fault

        fault = storage_fault(e)
        if fault is None:
            raise
        state = "full" if fault.kind == "full" else "read-only"
        err.print(f"The disk tunelab was writing to is {state}. Free some space (or make it "
                  "writable, or choose another output directory with -o) and run the same "
                  "command again: a tuning run resumes from its last checkpoint.")
        sys.exit(1)


if __name__ == "__main__":
    main()
