"""tunelab extension: the per-epoch view of a tuning run, and serving an earlier epoch.

The Gemini API can only serve the last step's parameters; tunelab keeps a checkpoint per epoch,
so a user who sees the loss curve flatten at epoch 3 of 5 can serve epoch 3 instead of
re-tuning (the same as ``tunelab use-epoch`` for local runs).

    GET  /v1beta/tunedModels/{id}/epochs          → EpochsResponse
    POST /v1beta/tunedModels/{id}:selectEpoch     {"epoch": 3} → EpochsResponse
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
    row = _model(request, model_id, principal)
    return _out(request.app.state.models.select_epoch(row, body.epoch))
