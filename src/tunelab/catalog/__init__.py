"""Base models: names, where the weights come from, recommended LR, loading."""

from tunelab.catalog.loading import LoadedBase, load_base_model, materialize, pick_device
from tunelab.catalog.specs import (
    CATALOG,
    BaseModelSpec,
    get_base_model,
    list_base_models,
    local_spec,
)
from tunelab.catalog.templates import Template

__all__ = [
    "CATALOG",
    "BaseModelSpec",
    "LoadedBase",
    "Template",
    "get_base_model",
    "list_base_models",
    "load_base_model",
    "local_spec",
    "materialize",
    "pick_device",
]
