"""Export and import for the service: what the REST routes (api/export.py) and the CLI's
``--server``-less commands ask of it. Tuned models live where the worker writes them
(``artifacts/tuned/{id}``), so an imported adapter is served exactly like a tuned one.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tunelab.catalog import materialize
from tunelab.config import Settings
from tunelab.errors import AlreadyExists, InvalidArgument
from tunelab.export.adapter_import import check_adapter, import_adapter
from tunelab.export.formats import check_options, export_model
from tunelab.ids import random_id
from tunelab.jobs.base_models import require_served_base_model
from tunelab.jobs.requests import ID_RE, derive_id
from tunelab.jobs.service import TuningService
from tunelab.parameters import MAX_DISPLAY_NAME
from tunelab.store import OperationRow, Store, TunedModelRow
from tunelab.store.tables import utcnow

# merged and gguf exports hold a full fp32 copy of the base model in memory (~0.6 GB for the
# default base): one export at a time per process keeps a burst of downloads from piling up.
_EXPORT_SLOT = threading.BoundedSemaphore(1)


@dataclass(frozen=True)
class Exported:
    path: Path  # a .tar.gz archive or a .gguf file, inside ``workdir``
    workdir: Path  # remove it when the file has been sent
    filename: str
    media_type: str


class ExportService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.tuning = TuningService(settings, store)

    def _base(self, base_model: str):
        """One of the server's base models (an import names it over the API: never a server
        folder) and where its weights are."""
        spec = require_served_base_model(base_model, self.settings.extra_models)
        return spec, materialize(spec, self.settings.models_dir)

    def workdir(self) -> Path:
        root = self.settings.artifacts_dir / "exports"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="export-", dir=root))

    def export(self, row: TunedModelRow, fmt: str, epoch: int | None,
               quantization: str = "f16") -> Exported:
        """Build the download of a tuned model: a ``.tar.gz`` of the peft/merged folder, or
        the ``.gguf`` file, in a fresh work folder the caller removes after sending."""
        from tunelab.export.archive import pack

        check_options(fmt, quantization, epoch)
        self.tuning.usable_adapter(row)  # ACTIVE with weights, else says why not
        spec, base_path = self._base(row.base_model)
        stem = f"{row.id}-{fmt}" + (f"-epoch{epoch}" if epoch else "")
        work = self.workdir()
        try:
            with _EXPORT_SLOT:
                if fmt == "gguf":
                    path = export_model(
                        self.tuning.model_dir(row.id), fmt, work / f"{stem}-{quantization}.gguf",
                        spec=spec, base_path=base_path, epoch=epoch, quantization=quantization,
                        name=row.display_name or row.id)
                    return Exported(path, work, path.name, "application/octet-stream")
                folder = export_model(self.tuning.model_dir(row.id), fmt, work / stem, spec=spec,
                                      base_path=base_path, epoch=epoch,
                                      name=row.display_name or row.id)
                archive = pack(folder, work / f"{stem}.tar.gz")
                shutil.rmtree(folder)
                return Exported(archive, work, archive.name, "application/gzip")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def import_adapter(
        self,
        owner: str,
        config: bytes,
        weights: Path,
        base_model: str | None,
        *,
        display_name: str | None = None,
        description: str | None = None,
        tuned_model_id: str | None = None,
    ) -> TunedModelRow:
        """Check an uploaded adapter and register it as an ACTIVE tuned model of ``owner``."""
        problems = []
        if not base_model:
            problems.append("baseModel is required: the catalog base model the adapter was "
                            f"trained on, e.g. 'models/{self.settings.default_base_model}'")
        if tuned_model_id is not None and not ID_RE.match(tuned_model_id):
            problems.append(f"tunedModelId '{tuned_model_id}' is not valid: use 1-40 lowercase "
                            "letters, digits and hyphens, starting with a letter and not "
                            "ending with a hyphen")
        if display_name and len(display_name) > MAX_DISPLAY_NAME:
            problems.append(f"displayName is {len(display_name)} characters; the limit is "
                            f"{MAX_DISPLAY_NAME}")
        if problems:
            raise InvalidArgument("Cannot import the adapter: " + "; ".join(problems) + ".")
        spec, base_path = self._base(base_model or "")
        checked = check_adapter(config, weights, base_path)
        model_id = tuned_model_id or derive_id(display_name or "imported adapter")
        now = utcnow()
        row = TunedModelRow(
            id=model_id, owner=owner, display_name=display_name or "",
            description=description if description is not None else (
                f"Imported PEFT LoRA adapter (rank {checked.rank}, {checked.modules} layers)."),
            base_model=spec.name, state="CREATING", state_message="", cancelled=False,
            temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
            # No tuning ran here: no epochs, batches or learning rate to report.
            epoch_count=0, batch_size=0, learning_rate=0.0, example_count=0, total_steps=0,
            create_time=now, update_time=now, start_time=now)
        op = OperationRow(name=f"tunedModels/{model_id}/operations/{random_id(12)}",
                          tuned_model_id=model_id, owner=owner, done=True)
        # The row claims the id first (atomically); only then are files written under it.
        taken = AlreadyExists(f"Tuned model 'tunedModels/{model_id}' already exists; choose "
                              "another tunedModelId or delete the existing model.")
        if not self.store.add_tuned_model(row, op):
            raise taken
        try:
            import_adapter(checked, self.tuning.model_dir(model_id), spec=spec,
                           base_path=base_path, display_name=display_name)
        except BaseException:
            self.tuning.delete(model_id, None)
            raise
        return self.store.update_tuned_model(model_id, None, {
            "state": "ACTIVE", "complete_time": utcnow()})
