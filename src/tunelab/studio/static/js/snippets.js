// "Get code": the same call in curl, google-genai and the tunelab CLI, for one model.

export function snippets(name, origin, model = {}) {
  const id = name.replace("tunedModels/", "");
  // "the same settings": every hyperparameter the model was tuned with, and its base model
  const hp = model.tuningTask?.hyperparameters || {};
  const same = [
    model.baseModel ? `--base-model ${model.baseModel.replace(/^models\//, "")}` : "",
    hp.epochCount ? `--epochs ${hp.epochCount}` : "",
    hp.batchSize ? `--batch-size ${hp.batchSize}` : "",
    hp.learningRate ? `--learning-rate ${hp.learningRate}` : "",
  ].filter(Boolean).join(" \\\n  ");
  return [
    { label: "curl", code: `# An API key from the Studio's "API keys" page
export TUNELAB_API_KEY=...

curl -s -X POST "${origin}/v1beta/${name}:generateContent" \\
  -H "x-goog-api-key: $TUNELAB_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"contents": [{"parts": [{"text": "Your input here"}]}]}' \\
  | jq -r '.candidates[0].content.parts[0].text'

# Streamed (server-sent events)
curl -s -N -X POST "${origin}/v1beta/${name}:streamGenerateContent?alt=sse" \\
  -H "x-goog-api-key: $TUNELAB_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"contents": [{"parts": [{"text": "Your input here"}]}]}'` },
    { label: "Python (google-genai)", code: `# pip install google-genai
import os

from google import genai
from google.genai import types

client = genai.Client(
    api_key=os.environ["TUNELAB_API_KEY"],
    http_options=types.HttpOptions(base_url="${origin}", api_version="v1beta"),
)
reply = client.models.generate_content(
    model="${name}",
    contents="Your input here",
)
print(reply.text)

for chunk in client.models.generate_content_stream(model="${name}", contents="Your input here"):
    print(chunk.text or "", end="")` },
    { label: "tunelab CLI", code: `# Sign in once (keeps a refresh token in TUNELAB_HOME/login.json)
tunelab login --server ${origin} YOUR_USER_NAME

# Follow the tuning job and list the queue
tunelab jobs --server ${origin}

# Cancel it while it is tuning
tunelab cancel --server ${origin} ${name}

# Tune again on new data, with the same settings
tunelab tune --server ${origin} data.csv --display-name "${id} v2"${same ? ` \\\n  ${same}` : ""}` },
  ];
}
