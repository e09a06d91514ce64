"""``tunelab export`` and ``tunelab import`` (registered by cli.py).

export: MODEL is a tuning output directory, a tuned model of the local service
(``tunedModels/ID`` in TUNELAB_HOME), or, with ``--server``, a tuned model of a running
service, downloaded through ``GET /v1beta/tunedModels/{id}:export``.
import: an adapter folder becomes a tuned model of the local service, of a running one
(``--server``: ``POST /v1beta/tunedModels:import``), or a tuning output directory (``-o``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.export.formats import ADAPTER_CONFIG, ADAPTER_WEIGHTS, FORMATS, QUANTIZATIONS

console = Console()
err = Console(stderr=True)
MAX_DOWNLOAD_BYTES = 64 * 2**30

LOADS = {
    "peft": "peft.PeftModel.from_pretrained(base_model, '{p}')",
    "merged": "transformers.AutoModelForCausalLM.from_pretrained('{p}')",
    "gguf": "llama-cli -m {p} -cnv",
}


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]Error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _default_dest(name: str, fmt: str, quantization: str, epoch: int | None) -> Path:
    stem = f"{name}-{fmt}" + (f"-epoch{epoch}" if epoch else "")
    return Path(f"{stem}-{quantization}.gguf" if fmt == "gguf" else stem)


def export(
    model: Annotated[str, typer.Argument(
        help="A tuning output directory, or tunedModels/ID (local service, or --server).")],
    format: Annotated[str, typer.Option(  # noqa: A002
        "--format", "-f", help=f"One of {', '.join(FORMATS)}.")] = "peft",
    epoch: Annotated[int | None, typer.Option(
        help="Export this epoch's checkpoint instead of the served parameters.")] = None,
    quantization: Annotated[str, typer.Option(
        help=f"gguf only: {' or '.join(QUANTIZATIONS)}.")] = "f16",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Folder (peft, merged) or .gguf file to write.")] = None,
    server: Annotated[str | None, typer.Option(
        help="Download from a running tunelab service at this URL.")] = None,
) -> None:
    """Export a tuned model: a PEFT adapter folder, merged full weights, or a GGUF file."""
    from tunelab.export.formats import check_options

    try:
        check_options(format, quantization, epoch)
        path = Path(model)
        if server:
            model_id = model.removeprefix("tunedModels/")
            dest = output or _default_dest(model_id, format, quantization, epoch)
            _download(server, model_id, format, epoch, quantization, dest)
        elif (path / "manifest.json").exists():
            dest = output or _default_dest(path.resolve().name, format, quantization, epoch)
            _export_local(path, format, epoch, quantization, dest)
        else:
            model_id = model.removeprefix("tunedModels/")
            dest = output or _default_dest(model_id, format, quantization, epoch)
            _export_from_store(model_id, format, epoch, quantization, dest)
    except TunelabError as e:
        raise _fail(e.message) from None
    console.print(f"Wrote {dest} ({format}). Load it with: "
                  + LOADS[format].format(p=dest), highlight=False)


def _export_local(path: Path, fmt: str, epoch: int | None, quantization: str,
                  dest: Path) -> None:
    from tunelab.catalog import get_base_model, materialize
    from tunelab.export.formats import export_model
    from tunelab.training import read_manifest

    settings = Settings()
    spec = get_base_model(read_manifest(path)["base_model"], settings.extra_models)
    with console.status(f"Exporting {path} as {fmt}…"):
        export_model(path, fmt, dest, spec=spec, base_path=materialize(spec, settings.models_dir),
                     epoch=epoch, quantization=quantization)


def _export_from_store(model_id: str, fmt: str, epoch: int | None, quantization: str,
                       dest: Path) -> None:
    from tunelab.export.service import ExportService
    from tunelab.store import Store

    settings = Settings()
    svc = ExportService(settings, Store.open(settings))
    row = svc.store.get_tuned_model(model_id, None)
    with console.status(f"Exporting tunedModels/{model_id} as {fmt}…"):
        out = svc.export(row, fmt, epoch, quantization)
    try:
        _place(out.path, fmt, dest)
    finally:
        shutil.rmtree(out.workdir, ignore_errors=True)


def _place(file: Path, fmt: str, dest: Path) -> None:
    """Move a downloaded/built export to ``dest`` (archives are unpacked into a folder)."""
    from tunelab.export.archive import unpack

    if fmt == "gguf":
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(file), dest)
        return
    if dest.exists():
        raise TunelabError(f"{dest} exists already; choose another --output or remove it.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent if
                                dest.parent.exists() else None))
    try:
        unpack(file, tmp / "out", MAX_DOWNLOAD_BYTES)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp / "out"), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(server: str, model_id: str, fmt: str, epoch: int | None, quantization: str,
              dest: Path) -> None:
    from tunelab.cli_service import _check, _client

    params: dict = {"format": fmt}
    if epoch is not None:
        params["epoch"] = epoch
    if fmt == "gguf":
        params["quantization"] = quantization
    with tempfile.TemporaryDirectory(prefix="tunelab-export-") as tmp:
        file = Path(tmp) / "download"
        with _client(server) as c, console.status(f"Exporting tunedModels/{model_id}…"):
            c.timeout = None  # a merged export of a large model takes a while to build
            with c.stream("GET", f"/v1beta/tunedModels/{model_id}:export",
                          params=params) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _check(resp)
                with open(file, "wb") as f:
                    for block in resp.iter_bytes(2**20):
                        f.write(block)
        _place(file, fmt, dest)


def import_(
    adapter_dir: Annotated[Path, typer.Argument(
        help="A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors).")],
    base_model: Annotated[str, typer.Option(
        "--base-model", "-m", help="The catalog base model it was trained on.")],
    display_name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    tuned_model_id: Annotated[str | None, typer.Option(
        "--id", help="The tuned model's id (default: from the display name).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write a tuning output directory instead of registering it.")
    ] = None,
    server: Annotated[str | None, typer.Option(
        help="Register it with a running tunelab service at this URL.")] = None,
) -> None:
    """Import a PEFT LoRA adapter trained elsewhere, to serve, evaluate, share and export."""
    from tunelab.export.adapter_import import adapter_files

    try:
        config, weights = adapter_files(adapter_dir)
        if server:
            from tunelab.cli_service import _check, _client

            with _client(server) as c, open(weights, "rb") as w:
                c.timeout = None
                data = {k: v for k, v in {
                    "baseModel": _model_name(base_model), "displayName": display_name,
                    "description": description, "tunedModelId": tuned_model_id}.items() if v}
                model = _check(c.post("/v1beta/tunedModels:import", data=data, files={
                    "adapterConfig": (ADAPTER_CONFIG, config.read_bytes(), "application/json"),
                    "adapterModel": (ADAPTER_WEIGHTS, w, "application/octet-stream")}))
            name = model["name"]
            console.print(f"Imported {name} on {server}. Call it with POST "
                          f"{server.rstrip('/')}/v1beta/{name}:generateContent", highlight=False)
        elif output is not None:
            _import_local(config, weights, base_model, display_name, output)
            console.print(f"Wrote the tuning output directory {output}. Try it: "
                          f'tunelab generate {output} "your prompt"', highlight=False)
        else:
            from tunelab.auth.bootstrap import OWNER
            from tunelab.export.service import ExportService
            from tunelab.store import Store

            settings = Settings()
            # The local service's owner account (the one `tunelab serve` creates first).
            row = ExportService(settings, Store.open(settings)).import_adapter(
                OWNER,
                config.read_bytes(), weights, _model_name(base_model),
                display_name=display_name, description=description,
                tuned_model_id=tuned_model_id)
            console.print(f"Imported tunedModels/{row.id} into the service in "
                          f"{settings.home}; `tunelab serve` serves it.", highlight=False)
    except TunelabError as e:
        raise _fail(e.message) from None


def _model_name(name: str) -> str:
    return name if name.startswith("models/") else f"models/{name}"


def _import_local(config: Path, weights: Path, base_model: str, display_name: str | None,
                  output: Path) -> None:
    from tunelab.catalog import get_base_model, materialize
    from tunelab.export.adapter_import import check_adapter, import_adapter

    if (output / "manifest.json").exists():
        raise TunelabError(f"{output} holds a tuning run already; choose another --output.")
    settings = Settings()
    spec = get_base_model(base_model, settings.extra_models)
    base_path = materialize(spec, settings.models_dir)
    checked = check_adapter(config.read_bytes(), weights, base_path)
    import_adapter(checked, output, spec=spec, base_path=base_path, display_name=display_name)


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command("import")(import_)
