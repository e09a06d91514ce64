"""Request and response bodies of the OpenAI routes, with OpenAI's field names.

Requests ignore fields tunelab has no use for and that change nothing in the answer
(``user``, ``metadata``, ``store``…); a field that would change the answer and that tunelab
cannot honour (tools, logprobs, penalties…) is refused by the routes with its name, never
dropped silently.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Auto = Literal["auto"]


class _In(BaseModel):
    model_config = ConfigDict(extra="allow")


# ----------------------------------------------------------------------------- objects
class FileObject(BaseModel):
    id: str = Field(description="file-{id}; the same upload is files/{id} in the Gemini API.")
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune"] = "fine-tune"
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = Field(None, description="The upload's warnings, if any.")


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class HyperparametersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: int | Auto | None = None
    batch_size: int | Auto | None = None
    learning_rate_multiplier: float | Auto | None = None


class Hyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class SupervisedIn(BaseModel):
    hyperparameters: HyperparametersIn | None = None


class MethodIn(_In):
    type: str
    supervised: SupervisedIn | None = None


class JobCreate(_In):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Supervised(BaseModel):
    hyperparameters: Hyperparameters


class Method(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: Supervised


class Job(BaseModel):
    id: str = Field(description="ftjob-{id}; the same run is tunedModels/{id} in the Gemini API.")
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    error: JobError | None = None
    fine_tuned_model: str | None = None
    hyperparameters: Hyperparameters
    method: Method
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed",
                    "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None


class Event(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"] = "info"
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class Metrics(BaseModel):
    step: float
    train_loss: float
    valid_loss: float | None = None
    full_valid_loss: float | None = None


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: Metrics
    step_number: int


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ListOf(BaseModel):
    """A list answer; ``has_more`` tells a cursor-paged client to ask again with
    ``after`` = the last item's id (the models list has no pages)."""

    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool | None = None
    first_id: str | None = None
    last_id: str | None = None


# -------------------------------------------------------------------------- generation
class ChatMessage(_In):
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(_In):
    include_usage: bool | None = None


class _Sampling(_In):
    model: str
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
