"""Submitting, cancelling and deleting tuning jobs (the data files: ``files.py``; a create
request's types and ids: ``requests.py``).

The API calls these; they validate everything a user sent up front (reporting every problem
at once), write the examples as an artifact, and create the model + operation + queued job
in one transaction. Nothing here trains: a worker picks the job up from the queue.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from tunelab.catalog import BaseModelSpec
from tunelab.config import Settings
from tunelab.data import Example
from tunelab.data.split import split_validation
from tunelab.errors import (
    DataLoss,
    DatasetError,
    FailedPrecondition,
    InvalidArgument,
    Problem,
)
from tunelab.ids import random_id
from tunelab.jobs.base_models import served_base_model, unknown_base_model
from tunelab.jobs.files import DataFiles, write_examples
from tunelab.jobs.requests import (
    ID_RE,
    NO_TRAINING_DATA,
    CreateRequestError,
    Submitted,
    TuningRequest,
    derive_id,
)
from tunelab.parameters import TunedModelSettings
from tunelab.parameters import problems as problems_of
from tunelab.store import FileRow, JobRow, OperationRow, Store, TunedModelRow

CANCEL_MESSAGE = "Tuning was cancelled by the user."
CANCELLED_BEFORE_START = ("Tuning was cancelled by the user before it started; the model has "
                          "no tuned parameters.")


class TuningService(DataFiles):
    """What the API (and the CLI) can ask of the tuning side."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    # -- paths --------------------------------------------------------------------------
    def model_dir(self, model_id: str) -> Path:
        return self.settings.artifacts_dir / "tuned" / model_id

    def adapter_dir(self, model_id: str) -> Path:
        return self.model_dir(model_id) / "adapter"

    # -- create -------------------------------------------------------------------------
    def request_problems(self, req: TuningRequest) -> list[Problem]:
        """Every problem with a create request's own fields (not its examples), each naming
        its field; the limits are ``tunelab/parameters.py``'s."""
        out = []
        if req.tuned_model_id is not None and not ID_RE.match(req.tuned_model_id):
            out.append(Problem(
                f"'{req.tuned_model_id}' is not valid: use 1-40 lowercase letters, digits and "
                "hyphens, starting with a letter and not ending with a hyphen",
                field="tunedModelId"))
        out += problems_of(TunedModelSettings, {
            "display_name": req.display_name, "temperature": req.temperature,
            "top_p": req.top_p, "top_k": req.top_k})
        if not req.base_model:
            out.append(Problem("is required, e.g. 'models/"
                               f"{self.settings.default_base_model}'", field="baseModel"))
        if req.examples is not None and req.file is not None:
            out.append(Problem("give examples or file, not both",
                               field="tuningTask.trainingData"))
        if req.validation_examples is not None and req.validation_file is not None:
            out.append(Problem("give examples or file, not both",
                               field="tuningTask.validationData"))
        return out

    def submit(
        self,
        req: TuningRequest,
        count_tokens_for: Callable[[BaseModelSpec], Callable[[Example], int]] | None = None,
    ) -> Submitted:
        from tunelab.data.validate import validate
        from tunelab.training import Hyperparameters, total_steps

        problems = self.request_problems(req)
        hp = Hyperparameters(
            req.epoch_count, req.batch_size, req.learning_rate, req.learning_rate_multiplier,
            req.lora_rank, req.answer_labels,
        )
        problems += hp.problems()
        if req.source_tuned_model:
            raise InvalidArgument(
                "Tuning on top of a tuned model (tunedModelSource) is not supported yet; "
                "give baseModel ('models/...') and include the earlier examples instead."
            )
        if req.examples is None and req.file is None:
            raise InvalidArgument(NO_TRAINING_DATA)
        spec = None
        unknown = None
        if req.base_model:
            spec = served_base_model(req.base_model, self.settings.extra_models)
            if spec is None:  # said with the other problems, first (CreateRequestError)
                unknown = self._unknown_base_model(req.base_model)
                problems.insert(0, unknown)
            if spec is not None and not req.base_model.startswith("models/"):
                problems.append(Problem(f"must look like 'models/{spec.id}', got "
                                        f"'{req.base_model}'", field="baseModel"))
                spec = None
        # The examples are checked even when the request's fields have problems, so that one
        # answer names them all (the fields', and the examples' by row).
        count = count_tokens_for(spec) if count_tokens_for and spec else None
        context = spec.context_length if count else None
        examples: list[Example] = []
        rows: list[Problem] = []
        warnings: list[Problem] = []
        if req.examples is None or req.file is None:
            examples = self.load_examples(req.examples, req.file, req.owner)
            try:
                warnings = validate(examples, count_tokens=count, context_length=context,
                                    location="trainingData" if req.file is None else req.file)
            except DatasetError as e:
                rows, warnings = e.problems, e.warnings
        given = None
        if (req.validation_examples is None) != (req.validation_file is None):
            given = self.load_examples(req.validation_examples, req.validation_file, req.owner)
            if not given:
                problems.append(Problem(
                    "holds no examples; give at least one, or leave validationData out to let "
                    "tunelab hold out 10% of 40 or more examples", field="validationData"))
            else:  # the validation data's problems are reported in the same answer
                rows += self._validation_problems(given, req, count, spec)
        if problems or rows:
            raise CreateRequestError(rows, warnings, request_problems=problems,
                                     base_model_unknown=unknown is not None)
        assert spec is not None  # a request without problems names a base model
        split = split_validation(examples, given, for_refit=hp.plans_refit(
            len(examples), given is not None))
        warnings += split.warnings
        train_examples = split.train
        # unset fields chosen from the training examples (training/auto.py)
        resolved = hp.resolve(spec.recommended_learning_rate, train_examples,
                              validation=split.validation,
                              held_out=len(split.held_out))
        steps = total_steps(len(train_examples), resolved.batch_size, resolved.epoch_count)
        if resolved.refit:  # at most every epoch again on every example (training/refit.py)
            steps += total_steps(len(examples), resolved.batch_size, resolved.epoch_count)

        model_id = req.tuned_model_id or derive_id(req.display_name)
        op_name = f"tunedModels/{model_id}/operations/{random_id(12)}"
        ds_id = f"ds-{model_id}-{random_id(6)}"
        ds_rel = Path("datasets") / f"{ds_id}.jsonl"
        if req.tuned_model_id is not None and self.store.model_exists(model_id):
            from tunelab.errors import AlreadyExists

            raise AlreadyExists(
                f"Tuned model 'tunedModels/{model_id}' already exists; choose another "
                "tunedModelId or delete the existing model."
            )
        data = write_examples(self.settings.artifacts_dir / ds_rel, train_examples)
        val_rel = None
        if split.validation:
            val_rel = Path("datasets") / f"{ds_id}-validation.jsonl"
            write_examples(self.settings.artifacts_dir / val_rel, split.validation)
        model = TunedModelRow(
            id=model_id,
            owner=req.owner,
            display_name=req.display_name or "",
            description=req.description or "",
            base_model=spec.name,
            state="CREATING",
            state_message="",
            cancelled=False,
            # The tuned model's sampling defaults start as the base model's.
            temperature=req.temperature if req.temperature is not None else spec.temperature,
            top_p=req.top_p if req.top_p is not None else spec.top_p,
            top_k=req.top_k if req.top_k is not None else spec.top_k,
            epoch_count=resolved.epoch_count,
            batch_size=resolved.batch_size,
            learning_rate=resolved.learning_rate,
            learning_rate_multiplier=req.learning_rate_multiplier,
            example_count=len(train_examples),
            total_steps=steps,
            dataset_file=ds_id,
        )
        dataset = FileRow(
            id=ds_id,
            owner=req.owner,
            kind="dataset",
            display_name=f"training data of tunedModels/{model_id}",
            mime_type="application/jsonl",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            path=str(ds_rel),
            example_count=len(train_examples),
            info={},
        )
        op = OperationRow(name=op_name, tuned_model_id=model_id, owner=req.owner, done=False)
        job = JobRow(
            tuned_model_id=model_id,
            operation=op_name,
            owner=req.owner,
            state="queued",
            cancel_requested=False,
            attempts=0,
            completed_steps=0,
            spec={
                "model_id": model_id,
                "base_model": spec.id,
                "dataset": str(ds_rel),
                "output_dir": str(Path("tuned") / model_id),
                # Resolved already, so a change of defaults cannot change a queued job.
                "epoch_count": resolved.epoch_count,
                "batch_size": resolved.batch_size,
                "learning_rate": resolved.learning_rate,
                "seed": req.seed if req.seed is not None else self.settings.seed,
                # the uploads it was created from, as the OpenAI API shows a job's files
                "training_file": req.file,
                "validation_file": req.validation_file,
                "total_steps": steps,
                # which examples score each epoch (the record the API shows; see split.py)
                "validation_dataset": str(val_rel) if val_rel else None,
                "validation": split.record(),
                "plan": resolved.plan(),
            },
        )
        try:
            self.store.create_tuned_model(model, op, job, dataset)
        except Exception:
            (self.settings.artifacts_dir / ds_rel).unlink(missing_ok=True)
            if val_rel:
                (self.settings.artifacts_dir / val_rel).unlink(missing_ok=True)
            raise
        return Submitted(model_id, op_name, warnings)

    def _unknown_base_model(self, name: str) -> Problem:
        """A base model this server does not have, with the ones it has (a create request
        names a catalog model: the local folders the CLI may tune are not offered here)."""
        return Problem(unknown_base_model(name, self.settings.extra_models), field="baseModel")

    @staticmethod
    def _validation_problems(given: list[Example], req: TuningRequest, count, spec) -> list:
        """The validation examples' own problems (empty or over-long fields, too many
        tokens), located as 'validationData, example N' (or the file's name)."""
        from tunelab.data.validate import validate

        try:
            validate(given, count_tokens=count, context_length=spec.context_length if count
                     else None, min_examples=1,
                     location=req.validation_file or "validationData")
        except DatasetError as e:
            return e.problems
        return []

    def evaluation(self, model_id: str) -> dict | None:
        """A model's validation record and per-epoch scores: the trainer's evaluation.json,
        or, before the first score, the split recorded when the job was queued."""
        from tunelab.catalog.labels import labels_note
        from tunelab.inference.manifest import served_facts
        from tunelab.training.loop import read_evaluation

        found = read_evaluation(self.model_dir(model_id))
        job = self.store.job_of(model_id)
        spec = (job.spec or {}) if job is not None else {}
        # one line on each hyperparameter choice, shown with the hyperparameters
        choices = list((spec.get("plan") or {}).get("reasons") or [])
        # and, once trained, whether its answers are chosen among labels (catalog/labels.py)
        # or may not end before the format every training output shares (catalog/stopping.py)
        facts = served_facts(self.model_dir(model_id) / "adapter")
        labels = facts.answer_labels
        if labels:
            choices.append(f"Answers: {labels_note(labels)}")
        choices += [f"Answers: {note}" for note in facts.rules.notes()]
        extra = ({"hyperparameter_choices": choices} if choices else {}) | (
            {"answer_labels": list(labels)} if labels else {})
        if found is not None:
            return {**found, **extra}
        record = spec.get("validation")
        return ({"validation": record} if record else {}) | extra or None

    # -- cancel / delete ----------------------------------------------------------------
    def cancel(self, model_id: str, owner: str | None) -> None:
        """Stop the model's job within one step (or at once if it has not started)."""
        self.store.request_cancel(model_id, owner, CANCEL_MESSAGE, CANCELLED_BEFORE_START)

    def delete(self, model_id: str, owner: str | None) -> None:
        row = self.store.get_tuned_model(model_id, owner)
        ds = self.store.dataset_path(row.dataset_file) if row.dataset_file else None
        may_remove = self.store.delete_tuned_model(model_id, owner)
        if ds:  # a running worker holds the examples in memory already
            (self.settings.artifacts_dir / ds).unlink(missing_ok=True)
            validation = Path(ds).with_name(Path(ds).stem + "-validation.jsonl")
            (self.settings.artifacts_dir / validation).unlink(missing_ok=True)
        if may_remove:
            shutil.rmtree(self.model_dir(model_id), ignore_errors=True)
        # else: a worker is training it; it stops within a step and removes the artifacts.

    def usable_adapter(self, row: TunedModelRow) -> Path:
        """The adapter to serve for a model, or a FAILED_PRECONDITION saying why there is none
        (DATA_LOSS when its files are not the ones written: checked once per version)."""
        from tunelab.training.checkpoint import adapter_damage

        name = f"tunedModels/{row.id}"
        if row.state == "CREATING":
            raise FailedPrecondition(
                f"{name} is still being tuned (state CREATING); poll its operation and call "
                "it when the state is ACTIVE."
            )
        if row.state != "ACTIVE":
            why = f" {row.state_message}" if row.state_message else ""
            raise FailedPrecondition(f"{name} cannot be called: its tuning failed.{why}")
        path = self.adapter_dir(row.id)
        if not (path / "adapter_model.safetensors").exists():
            raise FailedPrecondition(f"{name} has no adapter weights on this server.")
        why = adapter_damage(path)
        if why:
            raise DataLoss(
                f"{name} cannot be called: its adapter weights on the server are damaged "
                f"({why}). Serve them again from a checkpoint (POST {name}:selectEpoch with "
                '{"epoch": N}; GET ' + name + "/epochs lists them), or delete the model and "
                "tune it again.")
        return path
