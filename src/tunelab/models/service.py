"""``TunedModels``: the one owner of a tuned model's life, whatever protocol asks.

The Gemini routes (``api/gemini/``), the Vertex tuning jobs (``api/vertex/``), the
OpenAI-compatible API (``api/openai/``), the Studio and the CLI all call this object and only
translate names and shapes: create (with the caller's quotas), read and list what a caller may
see, update (every value checked here, once), cancel, delete, the per-epoch view and choosing
the served epoch, the checkpoints a protocol may call, and the uploads a model is tuned on.
A new protocol is a translation layer over these methods, not a copy of their rules.

Beneath it, ``jobs/service.py`` (``TuningService``) validates a create request and queues
the job, the store (``store/``) keeps the rows, ``auth/`` decides who may do what, and
``training/`` reads and writes a run's checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.auth.accounts import Accounts
from tunelab.auth.rules import OWNER
from tunelab.catalog import BaseModelSpec
from tunelab.config import Settings
from tunelab.data import MIN_EXAMPLES, Example
from tunelab.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from tunelab.jobs.requests import Submitted, TuningRequest
from tunelab.jobs.service import TuningService
from tunelab.paging import Page
from tunelab.parameters import TunedModelSettings, problems, sentence
from tunelab.store import FileRow, JobRow, OperationRow, SnapshotRow, Store, TunedModelRow

# What an update may change, by the engine's names; each protocol maps its own names onto
# these (Gemini: displayName, topP, …).
UPDATABLE = ("display_name", "description", "temperature", "top_p", "top_k")
LIST_PAGE = 1000  # rows per query when every visible model is gathered


@dataclass
class EpochView:
    """One epoch of a run: its mean training loss, whether its parameters can be served,
    and its validation scores when there are validation examples."""

    epoch: int
    mean_loss: float
    last_step: int
    checkpoint: bool
    validation_loss: float | None = None
    validation_score: float | None = None


@dataclass
class Epochs:
    """A tuned model's per-epoch view: what each protocol shows as its epochs or checkpoints."""

    model_id: str
    epochs: list[EpochView] = field(default_factory=list)
    selected_epoch: int | None = None
    advice: dict | None = None  # the epoch advice (training/advice.py), as a dict
    example_count: int | None = None
    steps_per_epoch: int | None = None  # of the run the epochs belong to
    # the refit on every example (training/refit.py), planned, running or done: its record
    # with ``first_step`` (its steps follow the epochs') and ``mean_loss``; None without one
    refit: dict | None = None


class TunedModels:
    """Create, read, list, update, cancel and delete tuned models, their epochs and uploads,
    with the caller's role and quotas checked here."""

    def __init__(self, settings: Settings, store: Store, accounts: Accounts,
                 tuning: TuningService):
        self.settings, self.store, self.accounts, self.tuning = settings, store, accounts, tuning

    @classmethod
    def open(cls, settings: Settings, store: Store) -> TunedModels:
        """The service over ``store``, with its own accounts and tuning service (the CLI's;
        the API builds them once and shares them)."""
        return cls(settings, store, Accounts(store, settings), TuningService(settings, store))

    # -- access -------------------------------------------------------------------------
    def get(self, model_id: str, user: str, need: str = OWNER) -> TunedModelRow:
        """The model, if ``user`` has at least role ``need`` on it (none → NOT_FOUND as if it
        did not exist, too low → PERMISSION_DENIED)."""
        return self.accounts.require(model_id, user, need)

    def row(self, model_id: str) -> TunedModelRow:
        """The model as stored now, for a caller whose access was already checked."""
        return self.store.get_tuned_model(model_id, None)

    def list(self, user: str, mode: str, page_size: int, page_token: str | None,
             text: str | None) -> Page:
        """One page of the models ``user`` may see, newest first (``mode``: ``default``,
        ``owner``, ``writers``, ``readers``, ``everyone``; see ``auth/permissions.py``)."""
        return self.accounts.list_visible(user, mode, page_size, page_token, text)

    def list_all(self, user: str) -> list[TunedModelRow]:
        """Every model ``user`` owns or may read, newest first (for protocols that page by
        cursor rather than by token)."""
        rows: list[TunedModelRow] = []
        token = None
        while True:
            page = self.list(user, "default", LIST_PAGE, token, None)
            rows += page.items
            token = page.next_token
            if not token:
                return rows

    def snapshots(self, model_id: str) -> list[SnapshotRow]:
        return self.store.snapshots(model_id)

    def evaluation(self, model_id: str) -> dict | None:
        return self.tuning.evaluation(model_id)

    def job_of(self, model_id: str) -> JobRow | None:
        return self.store.job_of(model_id)

    def queue_position(self, model_id: str) -> int:
        """1 for the next job to start; 0 when the model's job is not waiting."""
        job = self.store.job_of(model_id)
        return self.store.queue_position(job) if job is not None else 0

    def operation(self, name: str) -> OperationRow:
        return self.store.get_operation(name, None)

    def operations(self, model_id: str, page_size: int, page_token: str | None) -> Page:
        return self.store.list_operations(model_id, None, page_size, page_token)

    # -- create -------------------------------------------------------------------------
    def create(
        self,
        req: TuningRequest,
        count_tokens_for: Callable[[BaseModelSpec], Callable[[Example], int]] | None = None,
    ) -> Submitted:
        """Check the caller's quotas, then validate the request (every problem at once) and
        queue its job; the store checks the quotas again in the write's transaction."""
        self.accounts.check_create_limits(req.owner)
        return self.tuning.submit(req, count_tokens_for)

    # -- update -------------------------------------------------------------------------
    def update(self, model_id: str, fields: dict) -> TunedModelRow:
        """Change what may change (``UPDATABLE``), every value checked and every problem
        reported at once. ``None`` clears a text field."""
        unknown = sorted(set(fields) - set(UPDATABLE))
        if unknown:  # a protocol mapped a name it should not have: its own message is better
            raise InvalidArgument(f"These fields cannot be updated: {', '.join(unknown)}.")
        problems = update_problems(fields)
        if problems:
            raise InvalidArgument("Invalid tuned model: " + "; ".join(problems) + ".")
        values = {k: ("" if v is None and k in ("display_name", "description") else v)
                  for k, v in fields.items()}
        return self.store.update_tuned_model(model_id, None, values)

    # -- cancel / delete ----------------------------------------------------------------
    def cancel(self, model_id: str) -> None:
        """Stop the model's job within one step (at once if it has not started); the model
        keeps what it learned so far."""
        self.tuning.cancel(model_id, None)

    def cancel_operation(self, name: str) -> None:
        """Cancel the job of an operation; one that is done already is left as it is."""
        op = self.store.get_operation(name, None)
        if not op.done:
            self.tuning.cancel(op.tuned_model_id, None)

    def delete(self, model_id: str) -> None:
        """Delete the model, its job (which stops within a step), files and shares."""
        self.tuning.delete(model_id, None)
        self.accounts.forget_model(model_id)

    # -- serving ------------------------------------------------------------------------
    def usable_adapter(self, row: TunedModelRow) -> Path:
        return self.tuning.usable_adapter(row)

    def adapter_dir(self, model_id: str) -> Path:
        return self.tuning.adapter_dir(model_id)

    # -- epochs and checkpoints ---------------------------------------------------------
    def finished_epochs(self, model_id: str) -> set[int]:
        """The epochs whose parameters were saved (each can be served)."""
        from tunelab.training import list_checkpoints

        out_dir = self.tuning.model_dir(model_id)
        return set(list_checkpoints(out_dir)) if out_dir.exists() else set()

    def trained_tokens(self, row: TunedModelRow) -> int | None:
        """The tokens the run trained on, every step's (so each example's tokens × the
        epochs), as its worker counted them into the run's manifest; None while it runs, or
        when it left no readable manifest (a run that failed before training)."""
        from tunelab.training import read_manifest

        if row.state == "CREATING":
            return None
        try:
            tokens = read_manifest(self.tuning.model_dir(row.id)).get("tokens")
        except (NotFound, DataLoss):
            return None
        return tokens if isinstance(tokens, int) else None

    def epochs(self, row: TunedModelRow) -> Epochs:
        """Mean loss per epoch, which epochs have a checkpoint, their validation scores, the
        epoch advice (the best validation score, else where the training loss plateaus) and
        the epoch being served."""
        from tunelab.training import advise_epoch, read_manifest
        from tunelab.training.evaluate import advice_of

        name = f"tunedModels/{row.id}"
        try:
            manifest = read_manifest(self.tuning.model_dir(row.id))
        except NotFound:
            manifest = {}
        except DataLoss as e:
            raise DataLoss(f"{name}: {e.message} Restore the server's data directory from a "
                           "backup, or delete the model and tune it again.") from None
        spe = math.ceil(row.example_count / row.batch_size) if row.batch_size else None
        refit = self._refit(row, manifest, spe)
        by_epoch: dict[int, list[SnapshotRow]] = {}
        refit_losses = []
        for snap in self.store.snapshots(row.id):
            if refit and snap.step >= refit["first_step"]:  # the refit's steps: not epochs
                refit_losses.append(snap.mean_loss)
            else:
                by_epoch.setdefault(snap.epoch, []).append(snap)
        if refit:
            refit["mean_loss"] = sum(refit_losses) / len(refit_losses) if refit_losses else None
        have = self.finished_epochs(row.id)
        evaluation = self.evaluation(row.id) or {}
        scored = {e["epoch"]: e for e in evaluation.get("epochs") or []}
        views = [
            EpochView(epoch=e, mean_loss=sum(s.mean_loss for s in snaps) / len(snaps),
                      last_step=snaps[-1].step, checkpoint=e in have,
                      validation_loss=scored.get(e, {}).get("validation_loss"),
                      validation_score=scored.get(e, {}).get("score"))
            for e, snaps in sorted(by_epoch.items())
        ]
        advice = advice_of(evaluation) if scored else None
        finished = [v for v in views if v.checkpoint]
        if advice is None and finished:
            advice = advise_epoch([v.mean_loss for v in finished])
        return Epochs(
            model_id=row.id, epochs=views,
            selected_epoch=manifest.get("selected_epoch") if row.state == "ACTIVE" else None,
            advice=advice.to_dict() if advice else None, example_count=row.example_count,
            steps_per_epoch=spe, refit=refit)

    def _refit(self, row: TunedModelRow, manifest: dict, spe: int | None) -> dict | None:
        """The refit's record (training/refit.py) once it started; before, what is planned."""
        first_steps = (spe or 0) * row.epoch_count
        if manifest.get("refit"):
            keep = ("status", "served", "examples", "held_out", "steps", "from_epoch", "message")
            return {**{k: manifest["refit"].get(k) for k in keep},
                    "first_step": manifest.get("total_steps", first_steps) + 1}
        job = self.store.job_of(row.id)
        plan = ((job.spec or {}).get("plan") or {}) if job is not None else {}
        if not plan.get("refit") or row.state != "CREATING":
            return None
        held = len(((job.spec or {}).get("validation") or {}).get("held_out") or [])
        n = row.example_count + held
        return {"status": "planned", "served": False, "examples": n, "held_out": held,
                "steps": None, "from_epoch": None, "first_step": first_steps + 1,
                "message": f"After the {row.epoch_count} epochs, a refit trains on all {n} "
                           "examples for as many epochs as the served epoch, and is served."}

    def select_refit(self, row: TunedModelRow) -> Epochs:
        """Serve the refit on every example again, after an epoch was chosen instead."""
        from tunelab.training import select_refit

        if row.state != "ACTIVE":
            raise FailedPrecondition(
                f"tunedModels/{row.id} has state {row.state}; the refit can be chosen only for "
                "a model whose tuning has ended (state ACTIVE).")
        select_refit(self.tuning.model_dir(row.id))
        return self.epochs(row)

    def select_epoch(self, row: TunedModelRow, epoch: int) -> Epochs:
        """Serve an earlier (or the last) epoch's checkpoint from now on. A cancelled model
        may serve any epoch that finished before the cancel."""
        from tunelab.training import select_epoch

        name = f"tunedModels/{row.id}"
        if row.state != "ACTIVE":
            raise FailedPrecondition(
                f"{name} has state {row.state}; an epoch can be chosen only for a model whose "
                "tuning has ended (state ACTIVE).")
        if epoch < 1 or epoch > row.epoch_count:
            raise InvalidArgument(f"epoch must be between 1 and {row.epoch_count} (the model's "
                                  f"epochCount); got {epoch}.")
        finished = sorted(self.finished_epochs(row.id))
        if epoch not in finished:
            raise FailedPrecondition(
                f"epoch {epoch} of {name} did not finish (the tuning was cancelled before its "
                "end), so it has no weights to serve; finished epochs: "
                f"{', '.join(map(str, finished)) or 'none'}.")
        select_epoch(self.tuning.model_dir(row.id), epoch)
        return self.epochs(row)

    def checkpoint_adapter(self, row: TunedModelRow, epoch: int, name: str) -> Path:
        """The adapter of a finished epoch, to call it as a model (``name``: how the caller
        named the checkpoint, for the message when its files are damaged)."""
        from tunelab.training.checkpoint import adapter_damage, checkpoint_dir

        path = checkpoint_dir(self.tuning.model_dir(row.id), epoch)
        why = adapter_damage(path)
        if why:
            raise DataLoss(f"The checkpoint '{name}' is damaged on the server ({why}); call "
                           "another checkpoint or the model itself.")
        return path

    # -- uploads ------------------------------------------------------------------------
    def upload(self, owner: str, data: bytes, filename: str, mime_type: str,
               display_name: str | None, input_column: str | None,
               output_column: str | None, min_examples: int = MIN_EXAMPLES) -> FileRow:
        """Keep an upload's examples; ``min_examples`` is lower where an upload may be
        validation data (OpenAI's files), the training minimum being checked at create."""
        return self.tuning.store_upload(owner, data, filename, mime_type, display_name,
                                        input_column, output_column, min_examples)

    def examples_of_file(self, file: str, owner: str) -> list[Example]:
        """The examples of the caller's upload ``file`` ('files/ID'), e.g. to score a model
        on; NOT_FOUND saying how to upload one when the caller has no such file."""
        return self.tuning.load_examples(None, file, owner)

    def get_file(self, file_id: str, owner: str) -> FileRow:
        return self.tuning.get_upload(file_id, owner)

    def list_files(self, owner: str, page_size: int, page_token: str | None) -> Page:
        return self.store.list_files(owner, page_size, page_token)

    def delete_file(self, file_id: str, owner: str) -> None:
        self.tuning.delete_upload(file_id, owner)


def update_problems(fields: dict) -> list[str]:
    """Every problem with the values of an update, each naming its field; the limits are
    ``tunelab/parameters.py``'s, as at create."""
    values = {k: fields.get(k) for k in ("display_name", "temperature", "top_p", "top_k")}
    return [sentence(p) for p in problems(TunedModelSettings, values)]
