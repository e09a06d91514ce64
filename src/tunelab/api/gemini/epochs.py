"""tunelab extension: the per-epoch view of a tuning run, and serving an earlier epoch.

The Gemini API can only serve the last step's parameters; tunelab keeps a checkpoint per epoch,
so a user who sees the loss curve flatten at epoch 3 of 5 can serve epoch 3 instead of
re-tuning (the same as ``tunelab use-epoch`` for local runs).

    GET  /v1beta/tunedModels/{id}/epochs          → EpochsResponse
    POST /v1beta/tunedModels/{id}:selectEpoch     {"epoch": 3} → EpochsResponse
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tunelab.api.deps import Principal, current_principal, rule_for
from tunelab.api.lenient import LenientJSONRoute
from tunelab.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound

router = APIRouter(route_class=LenientJSONRoute)
Auth = Annotated[Principal, Depends(current_principal)]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class EpochOut(_Camel):
    epoch: int
    mean_loss: float = Field(description="Mean of the epoch's step losses.")
    last_step: int
    checkpoint: bool = Field(description="Whether this epoch's parameters can be served.")
    validation_loss: float | None = Field(None, description="Mean loss on the validation set.")
    validation_score: float | None = Field(
        None, description="Accuracy (label-like outputs) or token F1 on the validation set.")


class AdviceOut(_Camel):
    epoch: int
    plateaued: bool
    message: str
    basis: str = Field(description="'validation' (best validation score) or 'training_loss' "
                       "(where the training loss plateaus, without validation examples).")
    score: float | None = None
    over_last: float | None = None
    over_base: float | None = None


class EpochsResponse(_Camel):
    tuned_model: str
    epochs: list[EpochOut] = []
    selected_epoch: int | None = Field(
        None, description="The epoch whose parameters are served (null: none yet).")
    advice: AdviceOut | None = None
    example_count: int | None = None


class SelectEpochRequest(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    epoch: int


def _model(request: Request, model_id: str, principal: Principal):
    """The model, if the caller has the role the route's rule names (auth/rules.py)."""
    from tunelab.auth.rules import OWNER

    need = rule_for(request).role or OWNER
    return request.app.state.accounts.require(model_id, principal.owner, need)


def _epochs(request: Request, model_id: str, principal: Principal) -> EpochsResponse:
    from tunelab.training import advise_epoch, list_checkpoints, read_manifest
    from tunelab.training.evaluate import advice_of

    store = request.app.state.store
    row = _model(request, model_id, principal)
    out_dir = request.app.state.tuning.model_dir(model_id)
    by_epoch: dict[int, list] = {}
    for snap in store.snapshots(model_id):
        by_epoch.setdefault(snap.epoch, []).append(snap)
    try:
        manifest = read_manifest(out_dir)
    except NotFound:
        manifest = {}
    except DataLoss as e:
        raise DataLoss(f"tunedModels/{model_id}: {e.message} Restore the server's data "
                       "directory from a backup, or delete the model and tune it again.") from None
    have = set(list_checkpoints(out_dir)) if out_dir.exists() else set()
    evaluation = request.app.state.tuning.evaluation(model_id) or {}
    scored = {e["epoch"]: e for e in evaluation.get("epochs") or []}
    epochs = [
        EpochOut(epoch=e, mean_loss=sum(s.mean_loss for s in snaps) / len(snaps),
                 last_step=snaps[-1].step, checkpoint=e in have,
                 validation_loss=scored.get(e, {}).get("validation_loss"),
                 validation_score=scored.get(e, {}).get("score"))
        for e, snaps in sorted(by_epoch.items())
    ]
    finished = [x for x in epochs if x.checkpoint]
    advice = advice_of(evaluation) if scored else None
    if advice is None and finished:
        advice = advise_epoch([x.mean_loss for x in finished])
    selected = manifest.get("selected_epoch") if row.state == "ACTIVE" else None
    return EpochsResponse(
        tuned_model=f"tunedModels/{model_id}",
        epochs=epochs,
        selected_epoch=selected,
        advice=AdviceOut(**advice.to_dict()) if advice else None,
        example_count=row.example_count,
    )


@router.get("/tunedModels/{model_id}/epochs", response_model=EpochsResponse,
            tags=["tunedModels"], response_model_exclude_none=True, response_model_by_alias=True)
def get_epochs(model_id: str, request: Request, principal: Auth) -> EpochsResponse:
    """tunelab extension: mean loss per epoch (and validation loss and score, with validation
    examples), which epochs have a checkpoint, the epoch advice (the best validation score,
    else where the training loss plateaus) and the epoch being served."""
    return _epochs(request, model_id, principal)


@router.post("/tunedModels/{model_id}:selectEpoch", response_model=EpochsResponse,
             tags=["tunedModels"], response_model_exclude_none=True, response_model_by_alias=True)
def select_epoch(model_id: str, body: SelectEpochRequest, request: Request,
                 principal: Auth) -> EpochsResponse:
    """tunelab extension: serve an earlier (or the last) epoch's checkpoint from now on. A
    cancelled model may serve any epoch that finished before the cancel (its own weights, from
    the middle of the next epoch, are replaced)."""
    from tunelab.training import list_checkpoints
    from tunelab.training import select_epoch as use_epoch

    row = _model(request, model_id, principal)
    if row.state != "ACTIVE":
        raise FailedPrecondition(
            f"tunedModels/{model_id} has state {row.state}; an epoch can be chosen only for a "
            "model whose tuning has ended (state ACTIVE).")
    out_dir = request.app.state.tuning.model_dir(model_id)
    if body.epoch < 1 or body.epoch > row.epoch_count:
        raise InvalidArgument(
            f"epoch must be between 1 and {row.epoch_count} (the model's epochCount); "
            f"got {body.epoch}.")
    finished = list_checkpoints(out_dir) if out_dir.exists() else []
    if body.epoch not in finished:
        raise FailedPrecondition(
            f"epoch {body.epoch} of tunedModels/{model_id} did not finish (the tuning was "
            "cancelled before its end), so it has no weights to serve; finished epochs: "
            f"{', '.join(map(str, finished)) or 'none'}.")
    use_epoch(out_dir, body.epoch)
    return _epochs(request, model_id, principal)
