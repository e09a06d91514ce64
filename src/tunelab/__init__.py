"""tunelab: a self-hosted model tuning service that speaks the Gemini API tuning protocol.

Importing the package does no work: heavy dependencies (torch, transformers, Ray, database
drivers) are imported by the modules that need them, when they need them.
"""

__version__ = "0.1.0"
