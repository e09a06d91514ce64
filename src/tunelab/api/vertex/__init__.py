"""The Vertex AI tuning protocol (``projects/{p}/locations/{l}/tuningJobs``), as google-genai
sends it with ``vertexai=True``: a thin translation over the same tuned-model service, store
and generators as the Gemini routes, so a job is one tuned model seen through two protocols."""
