"""Generation, adapter cache and streaming."""

from tunelab.inference.generate import (
    Candidate,
    Chunk,
    GenerationConfig,
    GenerationResult,
    Generator,
)

__all__ = ["Candidate", "Chunk", "GenerationConfig", "GenerationResult", "Generator"]
