"""The Studio's evaluation, compare and download views (issue 20), and the keys page's errors.

Each test drives headless Chromium against a real server with real tuned models on the tiny
model: one tuned on 44 examples, so 8 are held out and every epoch is scored on them, and one
tuned on 24 (no validation, the training-loss advice). The model page is photographed at 1280
and 375 px."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile

import httpx
import pytest
from conftest import Client, open_model, screenshot, sign_in, start_studio

pytestmark = pytest.mark.e2e

PREAMBLE = "Say whether the item's number is even or odd."


def parity(i: int) -> dict:
    """An example in one training format: a preamble, then an "Item:" field."""
    return {"textInput": f"{PREAMBLE}\nItem: item {i}", "output": "even" if i % 2 == 0 else "odd"}


@pytest.fixture(scope="module")
def studio_service(tmp_path_factory):
    """This module's server: no step delay, and at most 2 API keys a user."""
    svc = start_studio(tmp_path_factory.mktemp("studio-views"), {"TUNELAB_MAX_API_KEYS": "2"})
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def alice(studio_service):
    a = Client(studio_service, "alice")
    a.tune("parity", [parity(i) for i in range(44)],
           epochCount=2, batchSize=8, learningRate=0.01)
    a.tune("words", [{"textInput": f"word {i}", "output": f"WORD {i}"} for i in range(24)],
           epochCount=2, batchSize=4, learningRate=0.01)
    a.tune("codes", [{"textInput": f"code of item {i}", "output": f"A-{i}"} for i in range(44)],
           epochCount=2, batchSize=8, learningRate=0.01)
    yield a
    a.c.close()


CHART_JS = """() => {
    const svg = document.querySelector('#chart svg');
    return {
        val: [...svg.querySelectorAll('path.val-pt')].map((p) => [p.dataset.epoch, +p.dataset.step,
            +p.getAttribute('d').split(' ')[0].slice(1)]),
        points: Object.fromEntries([...svg.querySelectorAll('circle.pt')]
            .map((c) => [c.dataset.step, +c.getAttribute('cx')])),
        title: svg.querySelector('title').textContent,
    };
}"""


def test_model_page_shows_validation_scores_the_best_epoch_and_wrong_answers(new_page, alice):
    epochs = alice.c.get("/v1beta/tunedModels/parity/epochs").json()
    evaluation = alice.c.get("/v1beta/tunedModels/parity").json()["evaluation"]
    assert epochs["advice"]["basis"] == "validation"
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "parity")

    # the table: the base model's row first, then each epoch's losses and scores
    heads = page.locator("#epochs thead th").all_text_contents()
    assert heads[:5] == ["Epoch", "Training loss", "Validation loss", "Exact match", "Accuracy"]
    base = page.locator("#epochs tr[data-epoch-row='0']")
    assert "Base model" in base.inner_text()
    assert base.locator("td.score").inner_text() == f"{evaluation['baseline']['score']:.3f}"
    for e in epochs["epochs"]:
        row = page.locator(f"#epochs tr[data-epoch-row='{e['epoch']}']")
        cells = row.locator("td").all_inner_texts()
        assert cells[2] == f"{e['validationLoss']:.4f}"
        assert cells[4] == f"{e['validationScore']:.3f}"
    # the best epoch, from the evidence, and the epoch served
    best = page.locator(f"#epochs tr[data-epoch-row='{epochs['advice']['epoch']}']")
    assert "★ advised by the validation scores" in best.inner_text()
    assert page.locator("#epoch-advice").get_attribute("data-basis") == "validation"
    assert page.locator("#epoch-advice").inner_text().startswith("From the validation scores:")
    served = page.locator(f"#epochs tr[data-epoch-row='{epochs['selectedEpoch']}'] td.served")
    assert served.inner_text() == "✔ served"
    assert "held out for validation" in page.locator("#validation-note").inner_text()

    # the validation curve: one diamond per scored epoch, at the epoch's last step
    chart = page.evaluate(CHART_JS)
    assert [(v[0], v[1]) for v in chart["val"]] == [
        (str(e["epoch"]), e["lastStep"]) for e in epochs["epochs"]]
    for _, step, x in chart["val"]:
        assert x == pytest.approx(chart["points"][str(step)], abs=0.2)
    assert "validation loss epoch 1" in chart["title"]
    assert page.locator("#chart-legend").is_visible()

    # a few wrong answers per epoch, the base model's first
    wrong = page.locator("#wrong details.wrong")
    with_wrong = [e for e in [evaluation["baseline"], *evaluation["epochs"]] if e["wrongAnswers"]]
    assert wrong.count() == len(with_wrong)
    first = with_wrong[-1]
    box = page.locator(f"#wrong details[data-wrong-epoch='{first['epoch']}']")
    box.locator("summary").click()
    assert box.locator("tbody tr").count() == len(first["wrongAnswers"])
    assert first["wrongAnswers"][0]["expected"] in box.locator("tbody tr").first.inner_text()

    # why accuracy ranks the epochs, in the server's words
    assert page.locator("#score-note").inner_text() == evaluation["metricNote"]
    assert evaluation["metricNote"].startswith("Accuracy ranks them")

    # the reason for each setting
    reasons = page.locator("#choices-list li").all_inner_texts()
    assert reasons == evaluation_choices(alice, "parity")
    screenshot(page, "model-validation")

    # without validation examples: the training-loss advice, labelled so, and no score columns
    open_model(page, "words")
    assert page.locator("#epoch-advice").get_attribute("data-basis") == "training_loss"
    assert page.locator("#epoch-advice").inner_text().startswith("From the training loss:")
    assert "Validation loss" not in page.locator("#epochs thead").inner_text()
    assert page.locator("#chart path.val-pt").count() == 0
    assert "fewer than 40" in page.locator("#validation-note").inner_text()
    assert page.locator("#score-note").count() == 0

    # short values (codes): ranked by exact match, token F1 beside it, the advice in its words
    codes = alice.c.get("/v1beta/tunedModels/codes").json()["evaluation"]
    assert codes["metric"] == "exactMatch"
    open_model(page, "codes")
    heads = page.locator("#epochs thead th").all_text_contents()
    assert heads[:5] == ["Epoch", "Training loss", "Validation loss", "Token F1", "Exact match"]
    for e in codes["epochs"]:
        cells = page.locator(f"#epochs tr[data-epoch-row='{e['epoch']}'] td").all_inner_texts()
        assert cells[3] == f"{e['tokenF1']:.3f}" and cells[4] == f"{e['exactMatch']:.3f}"
    assert "exact match" in page.locator("#epoch-advice").inner_text()
    assert "a near miss is a miss" in page.locator("#score-note").inner_text()


def test_model_page_shows_the_refit_and_serves_it_or_an_epoch(new_page, alice):
    """44 examples, nothing set: 15 held out (a third) score the epochs, then a refit on all 44
    is served (training/refit.py); its row has no scores, its steps are a band of their own."""
    alice.tune("refit", [parity(i) for i in range(44)])
    epochs = alice.c.get("/v1beta/tunedModels/refit/epochs").json()
    refit = epochs["refit"]
    assert refit["served"] and refit["status"] == "COMPLETED"
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "refit")
    row = page.locator("#epochs tr[data-epoch-row='refit']")
    cells = row.locator("td").all_inner_texts()
    assert cells[0].startswith(f"Refit on all 44 examples, {refit['steps']} steps")
    assert cells[1] == f"{refit['meanLoss']:.4f}" and cells[4] == "not scored"
    assert row.locator("td.served").inner_text() == "✔ served"
    assert page.locator("#epochs td.served:has-text('✔ served')").count() == 1
    assert "The served model is a refit" in page.locator("#refit-note").inner_text()
    # the chart: the first run's epochs, then the refit's band from its first step
    band = page.locator("#chart g.refit")
    assert band.get_attribute("data-refit-from") == str(refit["firstStep"])
    assert "refit on all 44" in band.locator("text").text_content()
    assert page.locator("#chart polyline.refit-line").count() == 1
    marked = {int(m) for m in page.locator("#chart line.epoch").evaluate_all(
        "ls => ls.map((l) => l.dataset.epoch)")}
    assert marked and max(marked) <= len(epochs["epochs"])  # no epoch marks in the refit
    # serve an epoch of the first run, then the refit again
    page.click("#epochs button[data-epoch='2']")
    page.wait_for_selector("#epochs tr[data-epoch-row='2'] td.served:has-text('✔ served')")
    assert row.locator("td.served").inner_text() == ""
    assert "Epoch 2 of the run that held 15 examples out is served" in (
        page.locator("#refit-note").inner_text())
    page.click("#epochs button[data-refit]")
    page.wait_for_selector("#epochs tr[data-epoch-row='refit'] td.served:has-text('✔ served')")
    assert alice.c.get("/v1beta/tunedModels/refit/epochs").json()["refit"]["served"]
    screenshot(page, "model-refit")


def evaluation_choices(client: Client, model_id: str) -> list[str]:
    model = client.c.get(f"/v1beta/tunedModels/{model_id}").json()
    return model["tuningTask"]["hyperparameters"]["choices"]


def test_compare_view_scores_models_side_by_side(new_page, alice, tmp_path):
    test = [parity(i) for i in range(500, 506)]
    expected = alice.c.post("/v1beta/tunedModels/parity:evaluate", json={
        "testData": {"examples": {"examples": test}},
        "compareWith": ["models/tiny-random", "tunedModels/words"]}).json()
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "parity")
    page.click("#compare")
    page.wait_for_selector("h1:has-text('Compare on test data')")
    assert page.locator("#run-compare").is_disabled()

    # a test file, as for training (JSONL here)
    lines = "".join(json.dumps({"text_input": t["textInput"], "output": t["output"]}) + "\n"
                    for t in test)
    page.set_input_files("#test-file", files=[{
        "name": "test.jsonl", "mimeType": "application/json", "buffer": lines.encode()}])
    page.wait_for_selector("#data-ready:has-text('6 test examples from test.jsonl')")
    page.check("input[name=other][value='tunedModels/words']")
    page.click("#run-compare")
    page.wait_for_selector("#scores")
    for r in expected["results"]:
        row = page.locator(f"#scores tr[data-model='{r['model']}']")
        assert row.locator("td.score").inner_text() == f"{r['score']:.3f}"
        assert row.locator("td").nth(3).inner_text().endswith(" ms")
    assert page.locator("#differences tbody tr").count() == len(expected["differences"])
    assert expected["differences"]  # this model's wrong answers are listed first
    assert "those Parity (this model) answers wrongly first" in " ".join(
        page.locator("#results p.hint").all_inner_texts())
    heads = page.locator("#differences thead th").all_text_contents()
    assert heads[:2] == ["Input", "Expected"] and len(heads) == 2 + len(expected["results"])
    screenshot(page, "compare")

    # pasted rows from a spreadsheet: this model alone
    page.fill("#pasted", "item 500\teven\nitem 501\todd\nitem 502\teven\n")
    page.wait_for_selector("#data-ready:has-text('3 test examples from the pasted rows')")
    page.uncheck("input[name=other][value='models/tiny-random']")
    page.uncheck("input[name=other][value='tunedModels/words']")
    page.click("#run-compare")
    page.wait_for_selector("#scores tbody tr >> nth=0")
    page.wait_for_selector("#res-h")
    assert page.locator("#scores tbody tr").count() == 1

    # short values (codes): ranked by exact match, token F1 beside it
    page.fill("#pasted", "item 500\tA-500\nitem 501\tA-501\nitem 502\tA-502\n")
    page.wait_for_selector("#data-ready:has-text('3 test examples from the pasted rows')")
    page.click("#run-compare")
    page.wait_for_selector("#scores th:has-text('Token F1')")
    heads = page.locator("#scores thead th").all_text_contents()
    assert heads == ["Model", "Exact match", "Token F1", "Time per answer"]
    assert "a near miss is a miss" in page.locator("#results p.hint").inner_text()

    # pasted text without columns says how to paste
    page.fill("#pasted", "just one column")
    page.wait_for_selector("#data-bad:has-text('separated by a tab')")
    assert page.locator("#run-compare").is_disabled()


def test_compare_view_says_when_expected_outputs_are_none_of_the_labels(new_page, alice):
    """A tuned classifier (it answers with its labels) compared on test rows whose expected
    outputs are partly none of its labels: one notice on its row, in the Studio's words."""
    labels = ["refund", "delivery", "account"]
    alice.tune("route", [{"textInput": f"message {i} from a customer", "output": labels[i % 3]}
                         for i in range(24)], epochCount=1, batchSize=4, learningRate=0.01)
    assert alice.c.get("/v1beta/tunedModels/route").json()["answerLabels"] == sorted(labels)
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "route")
    page.click("#compare")
    page.wait_for_selector("h1:has-text('Compare on test data')")
    page.fill("#pasted", "message 900\trefund\nmessage 901\twarranty\nmessage 902\twarranty\n")
    page.wait_for_selector("#data-ready:has-text('3 test examples from the pasted rows')")
    page.click("#run-compare")
    page.wait_for_selector("#scores")
    notice = " ".join(page.locator(".notice.unreachable").all_inner_texts())
    assert "2 of the 3 expected outputs are none of its 3 labels (warranty)" in notice
    assert "Free answers" in notice and "--free-answers" not in notice
    assert page.locator(".notice.unreachable").count() == 1  # not on the base model's row
    # the base beside it was asked with its labels, as each epoch's scores ask a base model
    asked = page.locator("p.asked-as").inner_text()
    assert "(base) was asked as" in asked and "with its 3 labels" in asked

    # rows within the labels: no notice
    page.fill("#pasted", "message 903\trefund\nmessage 904\taccount\n")
    page.wait_for_selector("#data-ready:has-text('2 test examples from the pasted rows')")
    page.click("#run-compare")
    page.wait_for_selector("#results p.hint:has-text('2 examples')")
    assert page.locator(".notice.unreachable").count() == 0


def test_download_only_for_a_role_that_may_export(new_page, alice, studio_service, tmp_path):
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "parity")
    page.wait_for_selector("#download:not([hidden])")
    options = page.locator("#download select[name=epoch] option").all_inner_texts()
    assert options[0].startswith("The served weights") and "Epoch 1" in options
    page.select_option("#download select[name=format]", "peft")
    page.select_option("#download select[name=epoch]", "1")
    with page.expect_download() as dl:
        page.click("#dl-go")
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(path)
    assert path.name == "parity-peft-epoch1.tar.gz"   # epoch 1, as chosen
    with tarfile.open(path) as tar:
        names = [m.name.rsplit("/", 1)[-1] for m in tar.getmembers()]
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(names)
    page.wait_for_selector("#dl-status:has-text('Downloaded parity-peft-epoch1.tar.gz')")

    # a reader may call the model and compare it, not take its weights
    alice.share("parity", "bob", "READER")
    page, _ = new_page()
    sign_in(page, "bob")
    open_model(page, "parity")
    assert page.locator("#download").count() == 0
    assert page.locator("#compare").is_visible()
    # the server agrees: the same URL answers 403 to a reader
    bob = Client(studio_service, "bob")
    r = bob.c.get("/v1beta/tunedModels/parity:export", params={"format": "peft"})
    assert r.status_code == 403
    alice.share("parity", "bob", "WRITER")
    page.reload()
    page.wait_for_selector("#download:not([hidden])")


def test_settings_reasons_after_creating_and_on_the_model_page(new_page, alice):
    page, _ = new_page()
    sign_in(page, "bob")
    page.click("a:has-text('New tuned model')")
    page.wait_for_selector("#drop")
    rows = "".join(f"word {i},WORD {i}\n" for i in range(1, 25))
    page.set_input_files("#file", files=[{"name": "words.csv", "mimeType": "text/csv",
                                          "buffer": ("text_input,output\n" + rows).encode()}])
    page.wait_for_selector("#data-ok")
    page.select_option("#base", "models/tiny-random")
    page.click("#advanced summary")
    assert page.locator("input[name=batchSize]").input_value() == ""   # automatic
    page.fill("input[name=epochCount]", "1")
    page.click("#create")
    page.wait_for_selector("#created-choices")
    created = page.locator("#created-choices li").all_inner_texts()
    assert "epochCount 1: as given." in created
    assert any(c.startswith("batchSize 4 (automatic)") for c in created)
    page.wait_for_selector("#choices-list li")
    assert page.locator("#choices-list li").all_inner_texts() == created
    page.reload()
    page.wait_for_selector("#choices-list li")
    assert page.locator("#created-choices").count() == 0   # the notice is shown once


def test_playground_says_when_a_prompt_lacks_the_training_format(new_page, alice):
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "parity")
    page.fill("#play input[name=maxOutputTokens]", "3")
    page.fill("#play textarea[name=prompt]", "item 7")
    page.click("#run")
    page.wait_for_selector("#ans-tuned[data-done='1']")
    page.wait_for_selector("#prompt-format:not([hidden])")
    assert "does not look like the training inputs" in page.locator("#prompt-format").inner_text()
    page.wait_for_selector("#ans-base[data-done='1']")
    page.fill("#play textarea[name=prompt]", f"{PREAMBLE}\nItem: item 7")
    page.click("#run")
    page.wait_for_selector("#ans-tuned[data-done='1']")
    page.wait_for_selector("#ans-base[data-done='1']")
    assert page.locator("#prompt-format").is_hidden()


def test_keys_page_says_why_a_key_was_not_created(new_page, studio_service):
    page, errors = new_page()
    errors.expect("/v1beta/apiKeys", 429)   # the limit of 2 keys, answered on purpose
    sign_in(page, "bob")
    page.click("a:has-text('API keys')")
    for n in (1, 2):
        page.fill("#new-key input[name=name]", f"app {n}")
        page.click("#new-key button[type=submit]")
        page.wait_for_selector(f"tr[data-key]:has-text('app {n}')")
    page.fill("#new-key input[name=name]", "app 3")
    page.click("#new-key button[type=submit]")
    page.wait_for_selector("#key-error:visible")
    assert "as many keys as this server allows" in page.locator("#key-error").inner_text()
    assert "TUNELAB_" not in page.locator("#key-error").inner_text()
    assert page.locator("#new-key input[name=name]").input_value() == "app 3"   # nothing lost
    assert page.locator("#create-key").is_enabled()

    # revoking one makes room; the error goes away with the next try
    page.click("tr[data-key]:has-text('app 1') button[data-revoke]")
    page.click("#confirm-yes")
    page.wait_for_selector("tr[data-key]:has-text('app 1')", state="detached")
    page.click("#new-key button[type=submit]")
    page.wait_for_selector("tr[data-key]:has-text('app 3')")
    assert page.locator("#key-error").is_hidden()


def test_a_one_time_password_is_changed_at_first_sign_in(new_page, studio_service):
    # the administrator's way: tunelab users add prints a one-time password
    out = subprocess.run([sys.executable, "-m", "tunelab.cli", "users", "add", "carol"],
                         env=studio_service.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    once = re.search(r"One-time password \(shown once\): (\S+)", out.stdout).group(1)
    assert "asked to choose their own" in out.stdout

    page, errors = new_page()
    errors.expect("/v1beta/account:changePassword", 400)   # the wrong password below
    sign_in(page, "carol", once, library=False)
    page.wait_for_selector("#one-time")                     # asked first, before the library
    assert page.url.endswith("#/account")
    screenshot(page, "account-one-time")

    page.fill("input[name=currentPassword]", "not the one")
    page.fill("input[name=newPassword]", "carol's own words")
    page.fill("input[name=confirm]", "carol's own words")
    page.click("#change")
    page.wait_for_selector("#current-error:visible")
    assert "current password is wrong" in page.locator("#current-error").inner_text()
    page.fill("input[name=currentPassword]", once)
    page.fill("input[name=confirm]", "something else")
    page.click("#change")
    page.wait_for_selector("#new-error:has-text('differ')")
    page.fill("input[name=confirm]", "carol's own words")
    page.click("#change")
    page.wait_for_selector("h1:has-text('My Library')")
    page.wait_for_selector("#toast:has-text('Password changed')")

    # the next sign-in goes straight to the library; the page is there to change it again
    page.click("#signout")
    sign_in(page, "carol", "carol's own words", library=False)
    page.wait_for_selector("h1:has-text('My Library')")
    page.click("nav a:has-text('Account')")
    page.wait_for_selector("#password")
    assert page.locator("#one-time").count() == 0
    r = httpx.post(studio_service.url + "/oauth2/token", data={
        "grant_type": "password", "username": "carol", "password": once})
    assert r.status_code == 400   # the one-time password no longer works
