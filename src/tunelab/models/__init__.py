"""A tuned model's life in one place: ``TunedModels`` (``models/service.py``)."""

from tunelab.models.service import Epochs, EpochView, TunedModels

__all__ = ["EpochView", "Epochs", "TunedModels"]
