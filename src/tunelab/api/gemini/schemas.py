"""Pydantic schemas of the Gemini tuning protocol (v1beta), request and response side.

Requests accept lowerCamelCase **and** snake_case field names (a proto3 JSON parser does,
and google-genai 1.42–1.46 sends ``text_input``). Resource bodies reject unknown fields like
Google's front end; generation bodies ignore them (clients add new fields often).
Responses are lowerCamelCase, with ``None`` fields left out (``response_model_exclude_none``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tunelab.parameters import HyperparameterSettings as HP
from tunelab.parameters import TunedModelSettings as TM
from tunelab.parameters import api_field


class _In(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )


class _Lenient(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="ignore"
    )


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              serialize_by_alias=True)


# --------------------------------------------------------------------------- requests
class TuningExampleIn(_In):
    text_input: str | None = Field(None, description="The model input (may be empty).")
    output: str = Field(description="The expected model output.")
    system_instruction: str | None = Field(
        None, description="tunelab extension: the system prompt this example is tuned with "
        "(chat-format data has one); when every example has the same one, the tuned model "
        "uses it on calls that send none.")


class TuningExamplesIn(_In):
    examples: list[TuningExampleIn] = Field(default_factory=list)


class DatasetIn(_In):
    examples: TuningExamplesIn | None = Field(
        None, description="Inline examples: trainingData.examples.examples[]."
    )
    file: str | None = Field(
        None,
        description="tunelab extension: the name of an uploaded file ('files/{id}', see "
        "POST /v1beta/files) holding the examples (CSV, JSON or JSONL).",
    )


class HyperparametersIn(_In):
    """Limits and meanings from ``tunelab/parameters.py``; a value out of range is reported
    with every other problem of the request, not by the schema."""

    learning_rate: float | None = api_field(HP, "learning_rate")
    learning_rate_multiplier: float | None = api_field(HP, "learning_rate_multiplier")
    epoch_count: int | None = api_field(HP, "epoch_count")
    batch_size: int | None = api_field(HP, "batch_size")
    answer_labels: bool | None = Field(
        None, description="tunelab extension: false to let the tuned model answer in free text "
        "even where its training outputs are labels or have one fixed shape. Unset or true: a "
        "classifier (at most 50 short outputs, each repeated) answers with one of its labels, "
        "an answer that is none of them replaced by the label the model finds most likely; "
        "where every output has one fixed shape (a date's 9999-99-99), answers keep to it.")
    # Output-only (tunelab extension), accepted and ignored: a client that PATCHes back the
    # whole model it read sends it.
    choices: list[str] | None = None


class TuningTaskIn(_In):
    training_data: DatasetIn | None = None
    validation_data: DatasetIn | None = Field(
        None,
        description="tunelab extension: examples to score the model on after every epoch "
        "(inline or a file, as trainingData). Without them, 10% of 40 or more training "
        "examples are held out (at least 8, at most 100).",
    )
    hyperparameters: HyperparametersIn | None = None
    # Output-only fields, accepted and ignored (google-generativeai PATCHes the whole model).
    start_time: str | None = None
    complete_time: str | None = None
    snapshots: list[dict[str, Any]] | None = None


class TunedModelSourceIn(_In):
    tuned_model: str | None = None
    base_model: str | None = None


class TunedModelIn(_In):
    """A TunedModel as sent to create (POST) or patch (PATCH)."""

    base_model: str | None = Field(None, description="'models/{id}' of the base model.")
    tuned_model_source: TunedModelSourceIn | None = None
    display_name: str | None = api_field(TM, "display_name")
    description: str | None = api_field(TM, "description")
    temperature: float | None = api_field(TM, "temperature")
    top_p: float | None = api_field(TM, "top_p")
    top_k: int | None = api_field(TM, "top_k")
    tuning_task: TuningTaskIn | None = None
    reader_project_numbers: list[int | str] | None = None
    # Output-only, accepted and ignored; state may be an integer enum (2 = ACTIVE).
    cancelled: bool | None = None
    name: str | None = None
    state: str | int | None = None
    create_time: str | None = None
    update_time: str | None = None
    state_message: str | None = None
    evaluation: dict[str, Any] | None = None


class PartIn(_Lenient):
    text: str | None = None


class ContentIn(_Lenient):
    role: str | None = None
    parts: list[PartIn] = Field(default_factory=list)


class GenerationConfigIn(_Lenient):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    candidate_count: int | None = None
    seed: int | None = None


class GenerateContentRequest(_Lenient):
    contents: list[ContentIn] = Field(default_factory=list)
    system_instruction: ContentIn | None = None
    generation_config: GenerationConfigIn | None = None
    safety_settings: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: dict[str, Any] | None = None
    cached_content: str | None = None
    model: str | None = None


class CountTokensRequest(_Lenient):
    contents: list[ContentIn] | None = None
    generate_content_request: GenerateContentRequest | None = None


# --------------------------------------------------------------------------- responses
class TuningSnapshot(_Out):
    step: int
    epoch: int
    mean_loss: float
    compute_time: str


class Hyperparameters(_Out):
    """Effective values. ``learningRateMultiplier`` is never returned: the old SDK cannot
    decode it; the learning rate it produced is reported instead."""

    epoch_count: int
    batch_size: int
    learning_rate: float
    choices: list[str] | None = Field(
        None, description="tunelab extension: one line on each value, given or chosen "
        "automatically from the data (the learning rate is the peak of its schedule).")


class TuningTask(_Out):
    start_time: str | None = None
    complete_time: str | None = None
    snapshots: list[TuningSnapshot] | None = None
    hyperparameters: Hyperparameters


class TunedModelSource(_Out):
    tuned_model: str
    base_model: str


class ConfusionCount(_Out):
    expected: str
    predicted: str = Field(description="The answer given, or '(other)' when it is no label.")
    count: int


class WrongAnswer(_Out):
    text_input: str
    expected: str
    answer: str


class EvaluationScores(_Out):
    """tunelab extension: one scoring on the validation examples (epoch 0: the base model)."""

    epoch: int
    validation_loss: float
    exact_match: float
    score: float = Field(description="accuracy for label-like outputs, exact match for short "
                         "values, else token F1 (the evaluation's metric).")
    accuracy: float | None = None
    token_f1: float | None = None
    confusion: list[ConfusionCount] | None = None
    wrong_answers: list[WrongAnswer] | None = Field(
        None, description="Up to 3 answers that were not exactly the expected output.")


class ValidationSet(_Out):
    """tunelab extension: which examples score the model, and how they were chosen."""

    source: str = Field(description="HELD_OUT (from the training data), GIVEN, or NONE.")
    example_count: int
    held_out_examples: list[int] | None = Field(
        None, description="1-based numbers of the held-out training examples.")
    message: str
    warnings: list[str] | None = None


class Evaluation(_Out):
    """tunelab extension: validation scores of the base model and of every epoch so far."""

    validation: ValidationSet | None = None
    metric: str | None = Field(
        None, description="'accuracy', 'exactMatch' or 'tokenF1': what score is.")
    metric_note: str | None = Field(
        None, description="Why that metric ranks the epochs, in one sentence.")
    baseline: EvaluationScores | None = None
    epochs: list[EvaluationScores] | None = None
    best_epoch: int | None = None
    advice: str | None = Field(None, description="The best epoch and its margins, in words.")
    refit: str | None = Field(
        None, description="What the refit on every example after the epochs trains and serves, "
        "in words (the scores are those of the run that held the validation examples out).")
    evaluating: bool | None = Field(
        None, description="True while the model is being tuned (more scores to come).")


class TunedModel(_Out):
    name: str
    base_model: str | None = None
    tuned_model_source: TunedModelSource | None = None
    display_name: str | None = None
    description: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    state: str
    create_time: str
    update_time: str
    tuning_task: TuningTask
    state_message: str | None = Field(
        None,
        description="tunelab extension, only on cancelled or failed models: why the tuning "
        "ended early, and what that means for the model.",
    )
    evaluation: Evaluation | None = Field(
        None, description="tunelab extension: the validation set and the per-epoch scores.")
    answer_labels: list[str] | None = Field(
        None, description="tunelab extension, only on a tuned classifier: the labels it "
        "answers with (an answer that is none of them is replaced by the most likely one); "
        "absent where it answers freely.")
    cancelled: bool | None = Field(
        None, description="tunelab extension: true when the tuning was cancelled (the model "
        "is ACTIVE with what it learned so far, or FAILED when cancelled before it started); "
        "absent otherwise. Clients test this, not the words of stateMessage.")


class TunedModelResponse(TunedModel):
    """A TunedModel inside ``Operation.response`` (typed Any)."""

    type: str = Field(
        "type.googleapis.com/google.ai.generativelanguage.v1beta.TunedModel", alias="@type"
    )


class CreateTunedModelMetadata(_Out):
    type: str = Field(
        "type.googleapis.com/google.ai.generativelanguage.v1beta.CreateTunedModelMetadata",
        alias="@type",
    )
    tuned_model: str
    total_steps: int
    completed_steps: int
    completed_percent: float
    snapshots: list[TuningSnapshot] | None = None
    queue_position: int | None = Field(
        None,
        description="tunelab extension: 1 = next to start. Omitted once the job runs, and for "
        "google-api-core clients, which parse operations strictly.",
    )
    evaluation: Evaluation | None = Field(
        None, description="tunelab extension: the validation set and the scores so far "
        "(omitted for google-api-core clients).")
    hyperparameter_choices: list[str] | None = Field(
        None, description="tunelab extension: one line on each hyperparameter, given or chosen "
        "automatically from the data (omitted for google-api-core clients).")


class Status(_Out):
    code: int
    message: str
    details: list[dict[str, Any]] | None = None


class Operation(_Out):
    name: str
    metadata: CreateTunedModelMetadata
    done: bool | None = None
    error: Status | None = None
    response: TunedModelResponse | None = None


class ListTunedModelsResponse(_Out):
    tuned_models: list[TunedModel] | None = None
    next_page_token: str | None = None


class ListOperationsResponse(_Out):
    operations: list[Operation] | None = None
    next_page_token: str | None = None


class Model(_Out):
    name: str
    base_model_id: str
    version: str
    display_name: str
    description: str
    input_token_limit: int
    output_token_limit: int
    supported_generation_methods: list[str]
    temperature: float
    max_temperature: float
    top_p: float
    top_k: int


class ListModelsResponse(_Out):
    models: list[Model] | None = None
    next_page_token: str | None = None


class Part(_Out):
    text: str


class Content(_Out):
    role: str
    parts: list[Part]


class LabelNote(_Out):
    """tunelab extension: a tuned classifier's own answer was none of its labels, and the label
    it finds most likely was answered instead."""

    model_answer: str = Field(description="What the model wrote, which is none of its labels.")
    message: str = Field(description="What was done, in words.")


class Candidate(_Out):
    content: Content
    finish_reason: str | None = None
    index: int
    answer_label: LabelNote | None = Field(
        None, description="tunelab extension, on a tuned classifier's answer that replaced an "
        "answer that was none of its labels; SDKs ignore it.")


class UsageMetadata(_Out):
    prompt_token_count: int
    candidates_token_count: int | None = None
    total_token_count: int


class PromptFormatNote(_Out):
    """tunelab extension: the prompt does not follow the tuned model's training format."""

    follows_training_format: bool = Field(
        description="false: the prompt lacks the preamble or field labels that every training "
        "prompt had (the note is absent when it follows them).")
    message: str = Field(description="What the training prompts had and this one lacks.")


class GenerateContentResponse(_Out):
    candidates: list[Candidate]
    usage_metadata: UsageMetadata
    model_version: str
    prompt_format: PromptFormatNote | None = Field(
        None, description="tunelab extension, on a tuned model's answer to a prompt that does "
        "not follow its training format; SDKs ignore it.")


class CountTokensResponse(_Out):
    total_tokens: int


class Empty(_Out):
    pass


class DatasetWarning(_Out):
    """A warning about a dataset: the data can still be tuned on."""

    code: str = Field(description="The kind of warning (DUPLICATE_EXAMPLES, "
                      "CONFLICTING_OUTPUTS, MIXED_FORMATS, MIXED_SYSTEM_PROMPTS, "
                      "PROMPT_FORMAT, CONTROL_TOKEN, TASK_SIZE).")
    message: str = Field(description="What is wrong and what to do, rows named as in the data.")
    field: str | None = Field(None, description="textInput, output or systemInstruction, when "
                              "the warning concerns one field.")
    examples: list[int] = Field(description="The rows (0-based indexes of rows) it concerns.")


class File(_Out):
    """tunelab extension: an uploaded training-data file."""

    name: str
    display_name: str
    mime_type: str
    size_bytes: str  # int64 → JSON string
    sha256_hash: str
    create_time: str
    example_count: int
    input_column: str | None = None
    output_column: str | None = None
    preview: list[dict[str, str]] | None = None
    warnings: list[DatasetWarning] | None = Field(
        None, description="tunelab extension: advice on the data (it can still be tuned), as "
        "the Studio's preview (POST /studio/datasets:preview) gives it.")


class ListFilesResponse(_Out):
    files: list[File] | None = None
    next_page_token: str | None = None
