"""tunelab: a self-hosted model tuning service that speaks the Gemini API tuning protocol.

Importing the package does no work beyond capping two kernel caches (below): heavy
dependencies (torch, transformers, Ray, database drivers) are imported by the modules that need
them, when they need them.
"""

from tunelab.allocator import bound_kernel_caches

__version__ = "0.1.0"

# Before any matmul: oneDNN's kernel caches would otherwise grow with every new batch length
# (allocator.py, "Bounded kernel caches").
bound_kernel_caches()
