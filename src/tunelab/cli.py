"""The ``tunelab`` command line: tune, generate, models, demo (and the service commands).

Errors a user can fix are printed in plain words with what to do, never as a traceback.
"""

from __future__ import annotations

import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

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


def print_problems(e: DatasetError) -> None:
    n = len(e.problems)
    err.print(f"[bold red]The training data has {n} problem{'s' if n != 1 else ''}:[/]")
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
        return load_base_model(spec, settings.models_dir, settings.device, settings.threads)


def default_output_dir(data: Path) -> Path:
    return Path("tuned") / f"{data.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@app.command()
def tune(
    data: Annotated[Path, typer.Argument(help="Examples: a CSV, JSON or JSONL file.")],
    base_model: Annotated[
        str | None, typer.Option("--base-model", "-m", help="Catalog name, HF folder or .gguf.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data (default 5).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Examples per optimizer step (default 4).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate (default 0.001).")
    ] = None,
    learning_rate_multiplier: Annotated[
        float | None,
        typer.Option(help="× the base model's recommended learning rate (instead of a rate)."),
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
        str | None, typer.Option(help="Display name of the tuned model (with --server).")
    ] = None,
) -> None:
    """Tune a LoRA adapter on DATA and show progress, per-epoch losses and epoch advice."""
    from tunelab.data import read_file, validate
    from tunelab.training import Hyperparameters

    settings = Settings()
    hp = Hyperparameters(epochs, batch_size, learning_rate, learning_rate_multiplier)
    try:
        hp.validate()
        examples = read_file(data, input_column=input_column, output_column=output_column)
        if server:
            from tunelab import cli_service

            cli_service.submit_and_follow(
                server,
                examples,
                hp,
                base_model or settings.default_base_model,
                display_name or data.stem,
            )
            return
        base = _load_base(settings, base_model or settings.default_base_model)
        warnings = validate(
            examples,
            count_tokens=lambda ex: _example_tokens(base, ex),
            context_length=base.spec.context_length,
        )
    except DatasetError as e:
        print_problems(e)
        raise typer.Exit(2) from None
    except TunelabError as e:
        raise fail(e.message, 2) from None
    if warnings:
        err.print("[yellow]Warnings about the training data:[/]")
        print_warnings(warnings)

    out = output or default_output_dir(data)
    try:
        result = train_with_progress(
            base, examples, hp, out, settings.seed if seed is None else seed
        )
    except TunelabError as e:
        raise fail(e.message, 2) from None
    report_result(result)


def train_with_progress(base, examples, hp, out: Path, seed: int):
    """Run the trainer with a live progress bar; Ctrl-C cancels cleanly."""
    from tunelab.training import train

    resolved = hp.resolve(base.spec.recommended_learning_rate)
    per_epoch = resolved.steps_per_epoch(len(examples))
    console.print(
        f"Tuning [bold]{base.spec.id}[/] on {len(examples)} examples: "
        f"{resolved.epoch_count} epochs × {per_epoch} steps (batch size {resolved.batch_size}), "
        f"learning rate {resolved.learning_rate:g} → {out}",
        highlight=False,
    )
    progress = Progress(
        TextColumn("[bold blue]tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    with CancelFlag() as cancel, progress:
        task = progress.add_task(
            "tune",
            total=per_epoch * resolved.epoch_count,
            epoch=1,
            epochs=resolved.epoch_count,
            loss="–",
        )
        return train(
            base,
            examples,
            hp,
            out,
            seed=seed,
            should_cancel=cancel,
            on_snapshot=lambda s: progress.update(
                task, completed=s.step, epoch=s.epoch, loss=f"{s.mean_loss:.4f}"
            ),
        )


def _example_tokens(base, ex) -> int:
    from tunelab.data.batches import tokenize_example

    return tokenize_example(base.tokenizer, base.template, ex).length


def report_result(result) -> None:
    if result.resumed_from_epoch:
        console.print(f"(resumed from the checkpoint of epoch {result.resumed_from_epoch})")
    if result.epoch_losses:
        table = Table(title="Mean loss per epoch")
        table.add_column("epoch", justify="right")
        table.add_column("mean loss", justify="right")
        table.add_column("")
        best = result.advice.epoch if result.advice else None
        for i, loss in enumerate(result.epoch_losses, 1):
            table.add_row(str(i), f"{loss:.4f}", "← suggested" if i == best else "")
        console.print(table)
    if result.status == "cancelled":
        console.print(
            f"[yellow]Tuning was cancelled after {len(result.snapshots)} steps.[/] The adapter "
            "holds the parameters learned so far; its quality is unpredictable."
        )
    if result.advice:
        console.print(f"[bold]Epoch advice:[/] {result.advice.message}")
        last = len(result.epoch_losses)
        if result.advice.epoch != last and result.status == "completed":
            console.print(
                f"  To serve epoch {result.advice.epoch} instead of {last}: "
                f"tunelab use-epoch {result.output_dir} {result.advice.epoch}"
            )
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
    try:
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
    except TunelabError as e:
        raise fail(e.message, 2) from None


@app.command("use-epoch")
def use_epoch(
    output: Annotated[Path, typer.Argument(help="A tuning output directory.")],
    epoch: Annotated[int, typer.Argument(help="The epoch whose checkpoint to serve.")],
) -> None:
    """Serve an earlier epoch's checkpoint instead of the last one, without re-tuning."""
    from tunelab.training import select_epoch

    try:
        select_epoch(output, epoch)
    except TunelabError as e:
        raise fail(e.message, 2) from None
    console.print(f"{output}/adapter now holds the parameters after epoch {epoch}.")


@app.command()
def models() -> None:
    """List the base models that can be tuned."""
    from tunelab.catalog import list_base_models

    settings = Settings()
    table = Table(title="Base models")
    for col in ("name", "installed", "context", "rec. LR", "weights from"):
        table.add_column(col)
    for spec in list_base_models(settings.extra_models):
        ok = spec.source.available()
        table.add_row(
            spec.id,
            "[green]yes[/]" if ok else "[red]no[/]",
            str(spec.context_length),
            f"{spec.recommended_learning_rate:g}",
            spec.source.describe(),
        )
    console.print(table)


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
    try:
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
            base, examples, Hyperparameters(epoch_count=epochs), output, settings.seed
        )
        report_result(result)
        adapter = adapter_path(output)
        after = [
            gen.generate([("user", e.text_input)], None, config, adapter).text for e in heldout
        ]
    except DatasetError as e:
        print_problems(e)
        raise typer.Exit(2) from None
    except TunelabError as e:
        raise fail(e.message, 2) from None
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


def main() -> None:
    from tunelab.quiet import silence_library_warnings

    silence_library_warnings()
    try:
        app()
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(130)


if __name__ == "__main__":
    main()
