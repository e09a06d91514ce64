"""The Gemini API tuning protocol (v1beta routes + pydantic schemas)."""
