"""The HTTP API: FastAPI app factory, Gemini routes, the error mapping."""
