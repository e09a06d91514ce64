"""Pydantic schemas of Vertex AI's ``TuningJob`` (v1 / v1beta1), request and response side.

Requests accept lowerCamelCase and snake_case names, like every proto3 JSON front end, and
int64 fields as numbers or strings. Unknown fields are refused (400 naming them), as
Vertex's front end does, so a setting tunelab cannot honour is never dropped silently.
Responses are lowerCamelCase with int64 values as JSON strings (proto3 JSON), ``None`` left
out; google-genai parses both forms.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tunelab.parameters import HyperparameterSettings as HP
from tunelab.parameters import api_field


class _In(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )


class _Open(_In):
    """A body whose unknown fields the route names in its own 400 (what tunelab runs
    instead), rather than the generic unknown-field answer."""

    model_config = ConfigDict(extra="allow")


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              serialize_by_alias=True)


# --------------------------------------------------------------------------- requests
class SupervisedHyperParametersIn(_Open):
    """Limits and meanings from ``tunelab/parameters.py``, as the Gemini API's."""

    epoch_count: int | None = api_field(HP, "epoch_count")
    learning_rate_multiplier: float | None = api_field(HP, "learning_rate_multiplier")
    adapter_size: str | int | None = Field(
        None, description="The LoRA rank: ADAPTER_SIZE_ONE, _TWO, _FOUR, _EIGHT, _SIXTEEN or "
        "_THIRTY_TWO (rank 1 to 32); unset: chosen from the data (8, 16 from 1,000 examples).")
    batch_size: int | None = api_field(HP, "batch_size")
    learning_rate: float | None = api_field(HP, "learning_rate")


class SupervisedTuningSpecIn(_Open):
    training_dataset_uri: str | None = Field(
        None, description="'files/{id}' of an uploaded file (POST /v1beta/files), or a gs:// "
        "or s3:// URI where the server's artifact store reads that scheme "
        "(TUNELAB_ARTIFACT_STORE): JSONL in Vertex's format (contents + systemInstruction), "
        "or CSV/JSON/JSONL as tunelab reads them, at most 4 MB.")
    validation_dataset_uri: str | None = Field(
        None, description="'files/{id}' or a gs:// / s3:// URI: examples to score every epoch "
        "on.")
    hyper_parameters: SupervisedHyperParametersIn | None = None


class PreTunedModelIn(_Open):
    tuned_model_name: str | None = None
    checkpoint_id: str | None = None
    base_model: str | None = None


class TuningJobIn(_Open):
    """The body of ``POST …/tuningJobs`` (supervised tuning)."""

    base_model: str | None = Field(
        None, description="A base model: 'tiny-random', 'models/tiny-random' or "
        "'publishers/google/models/tiny-random'.")
    pre_tuned_model: PreTunedModelIn | None = None
    supervised_tuning_spec: SupervisedTuningSpecIn | None = None
    tuned_model_display_name: str | None = Field(None, description="At most 40 characters.")
    description: str | None = None


# --------------------------------------------------------------------------- responses
class SupervisedHyperParameters(_Out):
    epoch_count: str  # int64
    learning_rate_multiplier: float | None = None
    adapter_size: str
    batch_size: str  # int64
    learning_rate: float


class SupervisedTuningSpec(_Out):
    training_dataset_uri: str | None = None
    validation_dataset_uri: str | None = None
    hyper_parameters: SupervisedHyperParameters


class TunedModelRef(_Out):
    model: str
    endpoint: str


class SupervisedTuningDataStats(_Out):
    tuning_dataset_example_count: str  # int64
    tuning_step_count: str  # int64


class TuningDataStats(_Out):
    supervised_tuning_data_stats: SupervisedTuningDataStats


class Status(_Out):
    code: int = Field(description="The google.rpc code: 1 CANCELLED, 13 INTERNAL, …")
    message: str


class TuningJob(_Out):
    name: str
    tuned_model_display_name: str | None = None
    description: str | None = None
    base_model: str
    state: str = Field(description="JOB_STATE_PENDING, _RUNNING, _CANCELLING, _SUCCEEDED, "
                       "_FAILED or _CANCELLED.")
    create_time: str
    start_time: str | None = None
    end_time: str | None = None
    update_time: str
    error: Status | None = None
    supervised_tuning_spec: SupervisedTuningSpec
    tuned_model: TunedModelRef | None = Field(
        None, description="Once the job has a model to call (also after a cancel that kept "
        "the parameters learned so far).")
    tuning_data_stats: TuningDataStats


class ListTuningJobsResponse(_Out):
    tuning_jobs: list[TuningJob] | None = None
    next_page_token: str | None = None


class Empty(_Out):
    pass

