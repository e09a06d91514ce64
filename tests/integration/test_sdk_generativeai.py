"""The real google-generativeai SDK (0.8.6, transport='rest') against a real server."""

from __future__ import annotations

import warnings

import pytest
from service_harness import examples

genai = pytest.importorskip("google.generativeai")
from google.api_core import exceptions  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def configured(service):
    from google.oauth2.credentials import Credentials

    creds = Credentials(token=service.token, refresh_token=service.creds["refresh_token"],
                        token_uri=f"{service.url}/oauth2/token", client_id="tunelab",
                        client_secret="")
    genai.configure(credentials=creds, transport="rest",
                    client_options={"api_endpoint": service.url})
    return service


def _data():
    rows = examples()
    return ([{"text_input": r["textInput"], "output": r["output"]} for r in rows[:10]]
            + [(r["textInput"], r["output"]) for r in rows[10:]])


def test_full_flow(configured, capsys):
    op = genai.create_tuned_model(
        source_model="models/tiny-random", training_data=_data(), id="old-sdk",
        display_name="Old SDK", epoch_count=2, batch_size=4, learning_rate=0.01,
    )
    assert op.metadata.tuned_model == "tunedModels/old-sdk"
    assert op.metadata.total_steps == 10
    op.wait_bar()
    model = op.result()
    assert model.name == "tunedModels/old-sdk" and model.state.name == "ACTIVE"
    assert [s["step"] for s in model.tuning_task.snapshots] == list(range(1, 11))
    assert model.tuning_task.hyperparameters.learning_rate == pytest.approx(0.01)

    got = genai.get_tuned_model("tunedModels/old-sdk")
    assert got.display_name == "Old SDK" and got.base_model == "models/tiny-random"
    assert "tunedModels/old-sdk" in [m.name for m in genai.list_tuned_models(page_size=5)]
    updated = genai.update_tuned_model("tunedModels/old-sdk", {"description": "changed"})
    assert updated.description == "changed"
    assert genai.get_tuned_model("tunedModels/old-sdk").description == "changed"

    gm = genai.GenerativeModel("tunedModels/old-sdk")
    r = gm.generate_content("word 3", generation_config={"max_output_tokens": 5})
    assert r.candidates[0].finish_reason.name in ("STOP", "MAX_TOKENS")
    chunks = list(gm.generate_content("word 3", stream=True,
                                      generation_config={"max_output_tokens": 5}))
    assert chunks and chunks[-1].candidates[0].finish_reason.name in ("STOP", "MAX_TOKENS")

    assert "models/tiny-random" in [m.name for m in genai.list_models()]
    assert genai.get_model("models/tiny-random").input_token_limit == 512

    genai.delete_tuned_model("tunedModels/old-sdk")
    with pytest.raises(exceptions.NotFound):
        genai.get_tuned_model("tunedModels/old-sdk")


def test_cancel_and_errors(configured):
    from service_harness import create_body

    c = configured.client()

    # A job ahead in the queue: the SDK's operation waits, and its strict parser must not
    # see tunelab's queuePosition extension.
    blocker = c.post("/v1beta/tunedModels", json=create_body(n=40, epochs=50)).json()
    op = genai.create_tuned_model(
        source_model="models/tiny-random", training_data=examples(40) and [
            (r["textInput"], r["output"]) for r in examples(40)],
        id="old-sdk-cancel", epoch_count=50, batch_size=4, learning_rate=0.01,
    )
    assert not op.done()  # polls GET …/operations/… with the strict parser
    raw = c.get(f"/v1beta/{op.operation.name}").json()
    assert raw["metadata"]["queuePosition"] >= 1  # other clients do see it
    op.cancel()
    c.post(f"/v1beta/{blocker['name']}:cancel")
    with pytest.raises(exceptions.Cancelled):
        op.result()
    assert op.cancelled()
    with pytest.raises(exceptions.BadRequest, match="at least 20"):
        genai.create_tuned_model(source_model="models/tiny-random",
                                 training_data=[("a", "b")] * 3, id="too-few")
    with pytest.raises(exceptions.Conflict):
        genai.create_tuned_model(source_model="models/tiny-random",
                                 training_data=[(r["textInput"], r["output"]) for r in examples()],
                                 id="old-sdk-cancel")
