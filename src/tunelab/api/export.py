"""tunelab extension: download a tuned model's weights, and import a LoRA adapter trained
elsewhere. The Gemini API never gives the weights; a self-hosted service should.

    GET  /v1beta/tunedModels/{id}:export?format=peft|merged|gguf[&epoch=N][&quantization=q8_0]
         → a .tar.gz of the adapter or merged folder, or the .gguf file (attachment)
    POST /v1beta/tunedModels:import   multipart/form-data → TunedModel (ACTIVE)
         baseModel, [displayName], [description], [tunedModelId], and the adapter as
         adapterConfig (adapter_config.json) + adapterModel (adapter_model.safetensors)
         or as archive (a .tar.gz holding both, e.g. a peft export)

Who may: exporting needs an OAuth token with the tuning (or tuning.readonly) scope and the
WRITER role on the model: a READER may call a shared model but not take its weights. An API
key cannot export (keys end up inside apps). Importing needs the tuning scope, like creating
a tuned model, and counts against the same limits.
"""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from tunelab.api.deps import Principal, current_principal, rule_for
from tunelab.api.gemini import convert
from tunelab.api.gemini import schemas as s
from tunelab.api.lenient import LenientJSONRoute
from tunelab.errors import InvalidArgument
from tunelab.export.adapter_import import (
    MAX_ADAPTER_BYTES,
    MAX_CONFIG_BYTES,
    PICKLE_NAMES,
    pickle_refusal,
)
from tunelab.export.formats import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from tunelab.export.service import ExportService

router = APIRouter(route_class=LenientJSONRoute)
Auth = Annotated[Principal, Depends(current_principal)]


def _service(request: Request) -> ExportService:
    svc = getattr(request.app.state, "export", None)
    if svc is None:
        svc = request.app.state.export = ExportService(request.app.state.settings,
                                                      request.app.state.store)
    return svc


@router.get("/tunedModels/{model_id}:export", tags=["tunedModels"], responses={200: {
    "content": {"application/gzip": {}, "application/octet-stream": {}},
    "description": "peft/merged: a .tar.gz of the folder; gguf: the .gguf file."}})
async def export_tuned_model(
    model_id: str,
    request: Request,
    principal: Auth,
    format: Annotated[str, Query(description="peft, merged or gguf")] = "peft",  # noqa: A002
    epoch: Annotated[int | None, Query(description="An epoch's checkpoint instead of the "
                                                   "served parameters.")] = None,
    quantization: Annotated[str, Query(description="gguf only: f16 or q8_0")] = "f16",
) -> FileResponse:
    """tunelab extension: the model's weights, with tokenizer, chat template and model card."""
    from tunelab.auth.rules import OWNER

    row = request.app.state.models.get(model_id, principal.owner,
                                       rule_for(request).role or OWNER)
    out = await run_in_threadpool(_service(request).export, row, format, epoch, quantization)
    return FileResponse(out.path, media_type=out.media_type, filename=out.filename,
                        background=BackgroundTask(shutil.rmtree, out.workdir, True))


async def _save(upload: UploadFile, path, limit: int, what: str) -> None:
    """Copy an upload to ``path``, refusing it past ``limit`` bytes."""
    total = 0
    with open(path, "wb") as f:
        while block := await upload.read(2**20):
            total += len(block)
            if total > limit:
                raise InvalidArgument(f"{what} is larger than {limit // 2**20 or 1} MB "
                                      f"({limit} bytes); that is not a LoRA adapter file.")
            f.write(block)


@router.post("/tunedModels:import", response_model=s.TunedModel, tags=["tunedModels"],
             response_model_exclude_none=True)
async def import_tuned_model(
    request: Request,
    principal: Auth,
    base_model: Annotated[str | None, Form(alias="baseModel")] = None,
    display_name: Annotated[str | None, Form(alias="displayName")] = None,
    description: Annotated[str | None, Form()] = None,
    tuned_model_id_form: Annotated[str | None, Form(alias="tunedModelId")] = None,
    tuned_model_id: Annotated[str | None, Query(alias="tunedModelId")] = None,
    adapter_config: Annotated[UploadFile | None, File(alias="adapterConfig",
                                                      description=ADAPTER_CONFIG)] = None,
    adapter_model: Annotated[UploadFile | None, File(alias="adapterModel",
                                                     description=ADAPTER_WEIGHTS)] = None,
    archive: Annotated[UploadFile | None, File(description="a .tar.gz holding both")] = None,
) -> s.TunedModel:
    """tunelab extension: register a PEFT LoRA adapter trained elsewhere on a catalog base
    model as a tuned model (checked first: LoRA, safetensors only, shapes of the base)."""
    from tunelab.export.archive import read_members

    svc = _service(request)
    request.app.state.accounts.check_create_limits(principal.owner)
    names = [u.filename or "" for u in (adapter_config, adapter_model, archive) if u]
    pickled = [n for n in names if n.rsplit("/", 1)[-1] in PICKLE_NAMES or n.endswith(".bin")]
    if pickled:
        raise InvalidArgument("Cannot import the adapter: " + pickle_refusal(pickled[0]) + ".")
    if archive is None and (adapter_config is None or adapter_model is None):
        raise InvalidArgument(
            "Send the adapter as two files, adapterConfig (adapter_config.json) and "
            "adapterModel (adapter_model.safetensors), or as one archive (a .tar.gz of the "
            "adapter folder), in a multipart/form-data request.")
    work = svc.workdir()
    try:
        if archive is not None:
            await _save(archive, work / "upload.tar.gz", MAX_ADAPTER_BYTES, "The archive")
            found = await run_in_threadpool(read_members, work / "upload.tar.gz",
                                            {ADAPTER_CONFIG, ADAPTER_WEIGHTS, *PICKLE_NAMES},
                                            work / "adapter", MAX_ADAPTER_BYTES)
            if ADAPTER_WEIGHTS not in found and (set(found) & set(PICKLE_NAMES)):
                raise InvalidArgument("Cannot import the adapter: " + pickle_refusal(
                    sorted(set(found) & set(PICKLE_NAMES))[0]) + ".")
            missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if n not in found]
            if missing:
                raise InvalidArgument(f"The archive holds no {' and no '.join(missing)}; "
                                      "archive the folder that save_pretrained wrote.")
            config_path, weights = found[ADAPTER_CONFIG], found[ADAPTER_WEIGHTS]
            if config_path.stat().st_size > MAX_CONFIG_BYTES:
                raise InvalidArgument(f"{ADAPTER_CONFIG} is larger than {MAX_CONFIG_BYTES} "
                                      "bytes; that is not an adapter config.")
            config = config_path.read_bytes()
        else:
            config = await adapter_config.read(MAX_CONFIG_BYTES + 1)
            weights = work / ADAPTER_WEIGHTS
            await _save(adapter_model, weights, MAX_ADAPTER_BYTES, ADAPTER_WEIGHTS)
        row = await run_in_threadpool(
            svc.import_adapter, principal.owner, config, weights, base_model,
            display_name=display_name, description=description,
            tuned_model_id=tuned_model_id or tuned_model_id_form)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return convert.tuned_model_out(row, [])
