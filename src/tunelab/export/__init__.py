"""Taking a tuned model elsewhere, and bringing one in.

``export_model`` writes a tuning output directory as a PEFT adapter folder, merged full
weights, or one GGUF file; ``import_adapter`` turns a PEFT LoRA adapter trained elsewhere into
a tuning output directory that tunelab serves, evaluates, shares and exports like its own.
Nothing loaded from a user's file can run code: adapters are read as safetensors only.
"""

from tunelab.export.formats import FORMATS, QUANTIZATIONS, check_options, export_model

__all__ = ["FORMATS", "QUANTIZATIONS", "check_options", "export_model"]
