"""Store rows → wire schemas (and wire → engine values). No HTTP here."""

from __future__ import annotations

from datetime import UTC, datetime

from tunelab.api.gemini import schemas as s
from tunelab.catalog import BaseModelSpec
from tunelab.data import Example
from tunelab.errors import Problem
from tunelab.inference import GenerationConfig
from tunelab.store import FileRow, OperationRow, SnapshotRow, TunedModelRow

GENERATION_METHODS = ["generateContent", "streamGenerateContent", "countTokens",
                      "createTunedModel"]


def ts(dt: datetime | None) -> str | None:
    """RFC 3339 UTC with microseconds and ``Z``."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def model_out(spec: BaseModelSpec) -> s.Model:
    return s.Model(
        name=spec.name,
        base_model_id=spec.id,
        version=spec.version,
        display_name=spec.display_name,
        description=spec.description,
        input_token_limit=spec.context_length,
        output_token_limit=spec.output_token_limit,
        supported_generation_methods=GENERATION_METHODS,
        temperature=spec.temperature,
        max_temperature=2.0,
        top_p=spec.top_p,
        top_k=spec.top_k,
    )


def snapshot_out(row: SnapshotRow) -> s.TuningSnapshot:
    return s.TuningSnapshot(
        step=row.step, epoch=row.epoch, mean_loss=row.mean_loss, compute_time=ts(row.compute_time)
    )


def _scores_out(d: dict) -> s.EvaluationScores:
    return s.EvaluationScores(
        epoch=d["epoch"],
        validation_loss=d["validation_loss"],
        exact_match=d["exact_match"],
        score=d["score"],
        accuracy=d.get("accuracy"),
        token_f1=d.get("token_f1"),
        confusion=[s.ConfusionCount(**c) for c in d.get("confusion") or []] or None,
        wrong_answers=[s.WrongAnswer(**w) for w in d.get("wrong") or []] or None,
    )


def evaluation_out(evaluation: dict | None, row: TunedModelRow) -> s.Evaluation | None:
    """The trainer's evaluation record (training/loop.py) on the wire. The advice names the
    best epoch; a cancelled model's names its last evaluated score instead."""
    from tunelab.training.evaluate import advice_of, metric_note, metric_wire

    if not evaluation or not {"validation", "metric"} & evaluation.keys():
        return None  # e.g. only the hyperparameter choices
    v = evaluation.get("validation")
    validation = s.ValidationSet(
        source=v["source"], example_count=v["example_count"],
        held_out_examples=v.get("held_out") or None, message=v["message"],
        warnings=v.get("warnings") or None,
    ) if v else None
    if "metric" not in evaluation:  # queued: only the split is known
        return s.Evaluation(validation=validation, evaluating=row.state == "CREATING" or None)
    epochs = evaluation.get("epochs") or []
    base = evaluation.get("baseline")
    advice = advice_of(evaluation) if epochs else None
    text = advice.message if advice else None
    metric = metric_wire(evaluation["metric"])
    refit = evaluation.get("refit") or {}
    if row.cancelled and refit.get("status") == "cancelled":
        pass  # cancelled in the refit: the first run completed, its advice holds
    elif row.cancelled and epochs:
        last = epochs[-1]
        text = (
            f"Tuning was cancelled. The last evaluated epoch, {last['epoch']}, scored "
            f"{last['score']:.3f} ({metric})"
            + (f" against the base model's {base['score']:.3f}" if base else "")
            + "; the parameters learned after it were not scored, so their quality is "
            "unpredictable."
        )
    elif row.cancelled:
        text = "Tuning was cancelled before the first epoch ended; no epoch was scored."
    return s.Evaluation(
        validation=validation,
        metric=metric,
        metric_note=metric_note(evaluation["metric"]),
        baseline=_scores_out(base) if base else None,
        epochs=[_scores_out(e) for e in epochs] or None,
        best_epoch=advice.epoch if advice and (
            not row.cancelled or refit.get("status") == "cancelled") else None,
        advice=text,
        refit=refit.get("message"),
        evaluating=row.state == "CREATING" or None,
    )


def tuned_model_fields(
    row: TunedModelRow, snapshots: list[SnapshotRow], *, extensions: bool = True,
    evaluation: dict | None = None,
) -> dict:
    return dict(
        name=f"tunedModels/{row.id}",
        base_model=row.base_model,
        display_name=row.display_name or None,
        description=row.description or None,
        temperature=row.temperature,
        top_p=row.top_p,
        top_k=row.top_k,
        state=row.state,
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        tuning_task=s.TuningTask(
            start_time=ts(row.start_time),
            complete_time=ts(row.complete_time),
            snapshots=[snapshot_out(x) for x in snapshots] or None,
            hyperparameters=s.Hyperparameters(
                epoch_count=row.epoch_count,
                batch_size=row.batch_size,
                learning_rate=row.learning_rate,
                choices=(evaluation or {}).get("hyperparameter_choices") if extensions else None,
            ),
        ),
        state_message=(row.state_message or None) if extensions else None,
        evaluation=evaluation_out(evaluation, row) if extensions else None,
        answer_labels=(evaluation or {}).get("answer_labels") if extensions else None,
        cancelled=True if extensions and row.cancelled else None,
    )


def tuned_model_out(
    row: TunedModelRow, snapshots: list[SnapshotRow], evaluation: dict | None = None
) -> s.TunedModel:
    return s.TunedModel(**tuned_model_fields(row, snapshots, evaluation=evaluation))


def operation_out(
    op: OperationRow,
    model: TunedModelRow,
    snapshots: list[SnapshotRow],
    queue_position: int = 0,
    strict: bool = False,
    evaluation: dict | None = None,
) -> s.Operation:
    total = model.total_steps
    completed = max((x.step for x in snapshots), default=0)
    if op.done and op.error_code is None:
        completed = total
    percent = round(100.0 * completed / total, 6) if total else 0.0
    metadata = s.CreateTunedModelMetadata(
        tuned_model=f"tunedModels/{model.id}",
        total_steps=total,
        completed_steps=completed,
        completed_percent=percent,
        snapshots=[snapshot_out(x) for x in snapshots] or None,
        queue_position=(queue_position or None) if not strict else None,
        evaluation=evaluation_out(evaluation, model) if not strict else None,
        hyperparameter_choices=(evaluation or {}).get("hyperparameter_choices")
        if not strict else None,
    )
    out = s.Operation(name=op.name, metadata=metadata, done=op.done or None)
    if op.done:
        if op.error_code is not None:
            out.error = s.Status(code=op.error_code, message=op.error_message or "")
        else:
            out.response = s.TunedModelResponse(
                **tuned_model_fields(model, snapshots, extensions=not strict,
                                     evaluation=evaluation)
            )
    return out


def file_out(row: FileRow) -> s.File:
    info = row.info or {}
    return s.File(
        name=f"files/{row.id}",
        display_name=row.display_name,
        mime_type=row.mime_type,
        size_bytes=str(row.size_bytes),
        sha256_hash=row.sha256,
        create_time=ts(row.create_time),
        example_count=row.example_count,
        input_column=info.get("input_column"),
        output_column=info.get("output_column"),
        preview=info.get("preview") or None,
        warnings=[warning_out(w, row.example_count) for w in info.get("warnings") or []]
        or None,
    )


_WIRE_FIELD = {"text_input": "textInput", "system": "systemInstruction"}


def warning_out(w: Problem | dict | str, count: int) -> s.DatasetWarning:
    """A dataset warning as the Studio's preview and the files API give it: its code, its
    words, its field and the rows it concerns (0-based, of ``count``). ``w`` is the finding,
    or as an upload stores it (``jobs/service.py``: a dict; before warnings had codes, only
    their words, then the code is empty)."""
    if isinstance(w, str):
        return s.DatasetWarning(code="", message=w, examples=[])
    if isinstance(w, Problem):
        w = {"code": w.code, "message": w.message, "field": w.field, "rows": w.rows}
    field = w.get("field") or ""
    return s.DatasetWarning(code=w.get("code") or "", message=w["message"],
                            field=_WIRE_FIELD.get(field, field) or None,
                            examples=[n - 1 for n in w.get("rows") or () if 0 < n <= count])


def example_in(e: s.TuningExampleIn) -> Example:
    """A wire example as the engine's: its system prompt (a tunelab extension) kept."""
    return Example(e.text_input or "", e.output, e.system_instruction)


def turns_of(contents: list[s.ContentIn]) -> list[tuple[str, str]]:
    turns = []
    for c in contents:
        role = "model" if (c.role or "user") in ("model", "assistant") else "user"
        turns.append((role, "".join(p.text or "" for p in c.parts)))
    return turns


def system_of(content: s.ContentIn | None) -> str | None:
    if content is None:
        return None
    return "".join(p.text or "" for p in content.parts)


def generation_config(
    cfg: s.GenerationConfigIn | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
) -> GenerationConfig:
    """The request's generationConfig, with the model's own defaults where it is silent."""
    cfg = cfg or s.GenerationConfigIn()
    return GenerationConfig(
        temperature=cfg.temperature if cfg.temperature is not None else temperature,
        top_p=cfg.top_p if cfg.top_p is not None else top_p,
        top_k=cfg.top_k if cfg.top_k is not None else top_k,
        max_output_tokens=cfg.max_output_tokens,
        stop_sequences=tuple(cfg.stop_sequences or ()),
        candidate_count=cfg.candidate_count or 1,
        seed=cfg.seed,
    )
