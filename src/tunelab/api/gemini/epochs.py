"""tunelab extension: the per-epoch view of a tuning run, and serving an earlier epoch.

The Gemini API can only serve the last step's parameters; tunelab keeps a checkpoint per epoch,
so a user who sees the loss curve flatten at epoch 3 of 5 can serve epoch 3 instead of
re-tuning (the same as ``tunelab use-epoch`` for local runs).

    GET  /v1beta/tunedModels/{id}/epochs          → EpochsResponse
    POST /v1beta/tunedModels/{id}:selectEpoch     {"epoch": 3} → EpochsResponse
    POST /v1beta/tunedModels/{id}:selectEpoch     {"refit": true} → EpochsResponse

A small dataset's run may end with a refit (training/refit.py): after the epochs, chosen on
held-out examples, a second run on every example is served; ``refit`` describes it and its
steps are not counted in any epoch.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tunelab.api.deps import Principal, current_principal, rule_for
from tunelab.api.lenient import LenientJSONRoute
from tunelab.auth.rules import OWNER
from tunelab.errors import InvalidArgument
from tunelab.models import Epochs
from tunelab.store import TunedModelRow

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


class RefitOut(_Camel):
    status: str = Field(description="PLANNED, RUNNING, COMPLETED or CANCELLED.")
    served: bool = Field(description="Whether the refit's parameters are served.")
    examples: int = Field(description="The examples it trains on: all of them.")
    held_out: int = Field(description="How many of them the epochs were scored on.")
    steps: int | None = Field(None, description="Its optimizer steps (null until the epochs "
                              "are done and its length is known).")
    from_epoch: int | None = Field(None, description="The epoch the scores chose: the refit "
                                   "trains that many epochs of every example.")
    first_step: int = Field(description="Its first step in the model's snapshots.")
    mean_loss: float | None = Field(None, description="Mean of its step losses so far.")
    message: str


class EpochsResponse(_Camel):
    tuned_model: str
    epochs: list[EpochOut] = []
    selected_epoch: int | None = Field(
        None, description="The epoch whose parameters are served (null: none yet, or the "
        "refit is served).")
    advice: AdviceOut | None = None
    example_count: int | None = None
    steps_per_epoch: int | None = None
    refit: RefitOut | None = Field(
        None, description="A refit on every example after the epochs, when the run has one.")


class SelectEpochRequest(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    epoch: int | None = None
    refit: bool | None = Field(None, description="true: serve the refit on every example.")


def _model(request: Request, model_id: str, principal: Principal) -> TunedModelRow:
    """The model, if the caller has the role the route's rule names (auth/rules.py)."""
    return request.app.state.models.get(model_id, principal.owner,
                                        rule_for(request).role or OWNER)


def _out(view: Epochs) -> EpochsResponse:
    return EpochsResponse(
        tuned_model=f"tunedModels/{view.model_id}",
        epochs=[EpochOut(**asdict(e)) for e in view.epochs],
        selected_epoch=view.selected_epoch,
        advice=AdviceOut(**view.advice) if view.advice else None,
        example_count=view.example_count,
        steps_per_epoch=view.steps_per_epoch,
        refit=RefitOut(**{**view.refit, "status": view.refit["status"].upper()})
        if view.refit else None,
    )


@router.get("/tunedModels/{model_id}/epochs", response_model=EpochsResponse,
            tags=["tunedModels"], response_model_exclude_none=True, response_model_by_alias=True)
def get_epochs(model_id: str, request: Request, principal: Auth) -> EpochsResponse:
    """tunelab extension: mean loss per epoch (and validation loss and score, with validation
    examples), which epochs have a checkpoint, the epoch advice (the best validation score,
    else where the training loss plateaus) and the epoch being served."""
    return _out(request.app.state.models.epochs(_model(request, model_id, principal)))


@router.post("/tunedModels/{model_id}:selectEpoch", response_model=EpochsResponse,
             tags=["tunedModels"], response_model_exclude_none=True, response_model_by_alias=True)
def select_epoch(model_id: str, body: SelectEpochRequest, request: Request,
                 principal: Auth) -> EpochsResponse:
    """tunelab extension: serve an earlier (or the last) epoch's checkpoint from now on. A
    cancelled model may serve any epoch that finished before the cancel (its own weights, from
    the middle of the next epoch, are replaced)."""
    if (body.epoch is None) == (not body.refit):
        raise InvalidArgument("Give either epoch (the epoch to serve) or refit: true (the refit "
                              "on every example), not both and not neither.")
    row = _model(request, model_id, principal)
    if body.refit:
        return _out(request.app.state.models.select_refit(row))
    return _out(request.app.state.models.select_epoch(row, body.epoch))
