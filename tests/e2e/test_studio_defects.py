"""The Studio's second pass (issue 20): a page that knows who is looking, and the defects a new
user hit. One browser test per defect, each against a real server and headless Chromium; the
model page is photographed at 1280 and 375 px as its owner and as a reader."""

from __future__ import annotations

import re

import pytest
from conftest import Client, open_model, screenshot, sign_in
from service_harness import wait_op
from test_studio import good_csv, upload

pytestmark = pytest.mark.e2e

STEPS_PER_EPOCH = 6  # 24 examples, batch 4
WORDS = [{"textInput": f"word {i}", "output": f"WORD {i}"} for i in range(1, 25)]


def create(client: Client, model_id: str, epochs: int, wait: bool = True) -> dict:
    """A model on 24 examples: 6 steps an epoch."""
    return client.tune(model_id, WORDS, wait=wait, epochCount=epochs, batchSize=4,
                       learningRate=0.01)


@pytest.fixture(scope="module")
def alice(studio_service):
    a = Client(studio_service, "alice")
    create(a, "shared-words", 2)
    # a cancelled run whose last epoch was cut short. The worker looks for a cancel every
    # 0.2 s and, after an epoch's checkpoint, at the next step: a cancel asked during the
    # checkpoint lands at an epoch's end, so the run is made again until one lands mid-epoch.
    for _ in range(6):
        op = create(a, "cut-short", 100, wait=False)
        wait_op(a.c, op["name"], until=lambda o: o["metadata"]["completedSteps"] >= 8)
        a.c.post("/v1beta/tunedModels/cut-short:cancel")
        done = wait_op(a.c, op["name"])
        if done["metadata"]["completedSteps"] % STEPS_PER_EPOCH:
            break
        a.c.delete("/v1beta/tunedModels/cut-short").raise_for_status()
    else:
        pytest.fail("six cancels in a row landed at an epoch's end")
    yield a
    a.c.close()


def test_1_each_control_only_for_a_role_that_may_use_it(new_page, alice):
    alice.share("shared-words", "bob", "READER")
    page, _ = new_page()
    sign_in(page, "bob")
    open_model(page, "shared-words")
    assert page.locator("#m-role").get_attribute("data-role") == "READER"
    for control in ("#delete", "#cancel", "#edit", "#share", "#perms", "button[data-epoch]"):
        assert page.locator(control).count() == 0, f"a reader sees {control}"
    assert page.locator("#run").is_enabled()   # a reader may call it
    screenshot(page, "model-reader")

    page, errors = new_page()
    sign_in(page, "alice")
    open_model(page, "shared-words")
    assert page.locator("#m-role").get_attribute("data-role") == "OWNER"
    for control in ("#delete", "#edit", "#share", "button[data-epoch='1']"):
        assert page.locator(control).count() == 1, f"the owner does not see {control}"
    screenshot(page, "model-owner")

    # A failed action says so on the page (here: the model was deleted meanwhile)
    create(alice, "doomed", 1)
    open_model(page, "doomed")
    alice.c.delete("/v1beta/tunedModels/doomed")
    errors.expect("/v1beta/tunedModels/doomed", 404)
    page.click("#delete")
    assert page.locator("#confirm-no").inner_text() == "Keep the model"
    page.click("#confirm-yes")
    page.wait_for_selector("#action-error:visible")
    assert "no longer exists" in page.locator("#action-error").inner_text()
    assert "#/models/doomed" in page.url


def test_2_sharing_can_be_changed_and_removed(new_page, alice):
    alice.share("shared-words", "bob", "READER")
    page, errors = new_page()
    errors.expect("/v1beta/tunedModels/shared-words/permissions", 409)  # shared already
    errors.expect("/v1beta/tunedModels/shared-words/permissions", 400)  # no such user
    sign_in(page, "alice")
    open_model(page, "shared-words")
    bob = page.locator("#perms li:has-text('bob')")
    bob.wait_for()
    assert bob.locator("select").input_value() == "READER"

    # Sharing again with a higher role changes the role
    page.fill("#share input[name=email]", "bob")
    page.select_option("#share select[name=role]", "WRITER")
    page.click("#share button[type=submit]")
    page.wait_for_selector("#toast:has-text('bob is now a writer')")
    assert alice.roles("shared-words")["bob"] == "WRITER"
    assert page.locator("#share-error").is_hidden()

    # The role can be changed in the list, and the access removed
    with page.expect_response(lambda r: r.request.method == "PATCH"):
        bob.locator("select").select_option("READER")
    assert alice.roles("shared-words")["bob"] == "READER"
    page.locator("#perms li:has-text('bob') button[data-unshare]").click()
    page.click("#confirm-yes")
    page.wait_for_selector("#perms li:has-text('bob')", state="detached")
    assert "bob" not in alice.roles("shared-words")

    # Studio words, not CLI commands, for an unknown user and for sharing twice
    page.fill("#share input[name=email]", "nobody")
    page.click("#share button[type=submit]")
    page.wait_for_selector("#share-error:visible")
    text = page.locator("#share-error").inner_text()
    assert "no user \"nobody\"" in text and "tunelab users" not in text
    alice.share("shared-words", "bob", "READER")
    page.fill("#share input[name=email]", "bob")
    page.select_option("#share select[name=role]", "READER")
    page.click("#share button[type=submit]")
    page.wait_for_selector("#share-error:has-text('already has access as reader')")
    assert "PATCH" not in page.locator("#share-error").inner_text()


def test_3_skip_link_keeps_the_route_and_unsaved_rows_are_not_lost(new_page, studio_service):
    page, _ = new_page()
    sign_in(page, "bob")
    page.click("a:has-text('New tuned model')")
    page.wait_for_selector("#drop")
    upload(page, good_csv())
    page.wait_for_selector("#data-ok")
    page.locator(".brand").focus()
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.url.endswith("#/new")
    assert page.locator("tr[data-row]").count() == 24

    # Leaving asks first; staying keeps every row
    page.click("nav a:has-text('My Library')")
    page.wait_for_selector("#confirm[open]")
    assert "not saved" in page.locator("#confirm-body").inner_text()
    page.click("#confirm-no")
    assert page.url.endswith("#/new")
    assert page.locator("tr[data-row]").count() == 24
    page.click("nav a:has-text('My Library')")
    page.click("#confirm-yes")
    page.wait_for_selector("h1:has-text('My Library')")


CHART_JS = """() => {
    const svg = document.querySelector('#chart svg');
    const band = svg.querySelector('rect.epoch-partial');
    return {
        band: band && band.dataset.epoch,
        label: [...svg.querySelectorAll('text.epoch-label.partial')].map((t) => t.textContent),
        bandClass: band && band.getAttribute('class'),
        planned: svg.querySelectorAll('line.epoch-planned').length,
        lines: [...svg.querySelectorAll('line.epoch')]
            .map((l) => [l.dataset.epoch, +l.getAttribute('x1')]),
        points: Object.fromEntries([...svg.querySelectorAll('circle.pt')]
            .map((c) => [c.dataset.step, +c.getAttribute('cx')])),
    };
}"""


def test_4_epoch_marks_only_for_finished_epochs(new_page, alice):
    op = create(alice, "long-marks", 100, wait=False)
    wait_op(alice.c, op["name"], until=lambda o: o["metadata"]["completedSteps"] >= 8)
    page, _ = new_page()
    sign_in(page, "alice")
    page.goto("/studio/#/models/long-marks")
    # one drawing of the chart, read at once (it is redrawn every second while tuning runs, and
    # a drawing made right at an epoch's end has no running band: wait for one that has)
    # (a loop, not wait_for_function: the Studio's CSP forbids the eval that needs)
    page.wait_for_selector("#chart rect.epoch-partial.running")
    for _ in range(100):
        chart = page.evaluate(CHART_JS)
        if chart["bandClass"] and "running" in chart["bandClass"]:
            break
        page.wait_for_timeout(100)
    else:
        pytest.fail(f"no drawing of the chart had a running band in 10 s: {chart}")
    running = int(chart["band"])
    assert running >= 2 and chart["label"] == [f"E{running} running"]
    ends = dict(chart["lines"])
    # each finished epoch's mark is at its last step (marks closer than 8 px to the one before
    # are left out, so with 100 epochs on the axis not every epoch has one); the running
    # epoch has no end mark
    assert ends and all(int(e) < running for e in ends)
    for epoch, x in ends.items():
        assert x == pytest.approx(chart["points"][str(int(epoch) * STEPS_PER_EPOCH)], abs=0.2)
    assert str(running) not in ends

    page.click("#cancel")
    assert page.locator("#confirm-no").inner_text() == "Keep tuning"
    page.click("#confirm-yes")
    page.wait_for_selector('#m-badge [data-state="CANCELLED"]', timeout=300_000)
    page.wait_for_selector("#chart[data-points]")
    chart = page.evaluate(CHART_JS)
    last = max(int(step) for step in chart["points"])
    ends = dict(chart["lines"])
    assert chart["planned"] == 0, chart          # no marks for epochs that will never run
    if last % STEPS_PER_EPOCH:                    # cut short: drawn as partial, no end mark
        epoch = last // STEPS_PER_EPOCH + 1
        assert chart["band"] == str(epoch) and "partial" in chart["bandClass"], chart
        assert chart["label"] == [f"E{epoch} partial"] and str(epoch) not in ends
    else:                                         # cancelled right at an epoch's end
        assert chart["band"] is None and str(last // STEPS_PER_EPOCH) in ends, chart
    page.set_viewport_size({"width": 375, "height": 812})
    page.wait_for_timeout(300)
    labels = page.locator("#chart text.epoch-label")
    boxes = [labels.nth(i).bounding_box() for i in range(labels.count())]
    for a, b in zip(boxes, boxes[1:], strict=False):   # no label drawn over another
        assert a["x"] + a["width"] <= b["x"] + 0.5 or b["x"] + b["width"] <= a["x"] + 0.5


def test_5_cancelled_model_epoch_panel_is_consistent(new_page, alice):
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "cut-short")
    rows = page.locator("#epochs tbody tr")
    last = rows.last
    assert "partial" in last.inner_text() and "cancelled" in last.inner_text()
    assert "✔ served (the weights at step" in last.locator("td.served").inner_text()
    assert page.locator("#epochs button[data-epoch='1']").count() == 1
    page.click("#epochs button[data-epoch='1']")
    assert "cannot be served again" in page.locator("#confirm-body").inner_text()
    page.click("#confirm-yes")
    page.wait_for_selector("#epochs tr[data-epoch-row='1'] td.served:has-text('✔ served')")
    assert last.locator("td.served").inner_text() == ""
    page.wait_for_selector("#chart line.epoch.selected[data-epoch='1']", state="attached")
    screenshot(page, "model-cancelled")


def test_6_every_row_problem_in_one_pass(new_page, studio_service):
    page, errors = new_page()
    errors.expect("/v1beta/files", 400)
    sign_in(page, "bob")
    page.click("a:has-text('New tuned model')")
    page.wait_for_selector("#drop")
    lines = ["text_input,output"] + [f"word {i},WORD {i}" for i in range(1, 25)]
    lines[3] = "word 3,WORD 3,extra"   # file row 4: a field too many
    lines[8] = "word 8,"               # file row 9: an empty output
    upload(page, ("\n".join(lines) + "\n").encode(), "two-problems.csv")
    page.wait_for_selector('tr.bad[data-label="row 9"]')
    assert page.locator('tr.bad[data-label="row 4"]').count() == 1
    assert "3 fields" in page.locator('tr.msg[data-msg-for="2"]').inner_text()
    assert "output is empty" in page.locator('tr.msg[data-msg-for="7"]').inner_text()
    assert "Fix 2 rows" in page.locator("#data-errors").inner_text()
    assert page.locator("#create-why").inner_text() == "Fix the data errors shown next to the rows."


def test_6b_a_workbook_is_said_to_be_one(new_page, studio_service):
    """An Excel workbook dropped on the page: what it is and what to do, above the table (it
    used to be read as a CSV whose header was its bytes)."""
    page, errors = new_page()
    errors.expect("/v1beta/files", 400)
    sign_in(page, "bob")
    page.click("a:has-text('New tuned model')")
    page.wait_for_selector("#drop")
    page.set_input_files("#file", files=[{
        "name": "orders.xlsx", "buffer": b"PK\x03\x04" + bytes(300),
        "mimeType": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}])
    page.wait_for_selector("#data-errors:has-text('Excel workbook')")
    said = page.locator("#data-errors").inner_text()
    assert "not text. Save or export the examples as CSV UTF-8" in said
    assert "\x00" not in said and "PK" not in said
    assert page.locator("tr[data-row]").count() == 0
    assert page.locator("#create").is_disabled()
    assert page.locator("#create-why").inner_text() == (
        "Fix the data errors shown under Training data.")


def test_7_column_picker_and_studio_words(new_page, studio_service):
    page, errors = new_page()
    errors.expect("/v1beta/files", 400)
    sign_in(page, "bob")
    page.click("a:has-text('New tuned model')")
    page.wait_for_selector("#drop")
    rows = "".join(f"ticket {i},category {i % 3}\n" for i in range(1, 25))
    upload(page, ("ticket,category\n" + rows).encode(), "tickets.csv")
    page.wait_for_selector("#columns-why:has-text('Which columns hold the examples?')")
    assert page.locator("tr[data-row]").count() == 0       # nothing shown as input/output yet
    assert page.locator("#create").is_disabled()
    assert "--input-column" not in page.locator("main").inner_text()
    page.select_option("#col-input", "ticket")
    page.select_option("#col-output", "category")
    page.wait_for_selector("#data-ok:has-text('24 examples')")
    first = page.locator("tr[data-row]").first
    assert first.locator("textarea[data-f=input]").input_value() == "ticket 1"
    assert first.locator("textarea[data-f=output]").input_value() == "category 1"
    # an edit keeps the chosen columns' data (the table is sent as input/output)
    first.locator("textarea[data-f=output]").fill("category 9")
    page.wait_for_selector("#data-ok:has-text('24 examples')")

    # A model that is not there: the Studio's words, no REST path
    errors.expect("/v1beta/tunedModels/not-there", 404)
    page.goto("/studio/#/models/not-there")
    page.click("#confirm-yes")   # leave the table's rows
    page.wait_for_selector("main .notice.bad")
    text = page.locator("main .notice.bad").inner_text()
    assert "was not found" in text and "GET /v1beta" not in text


def test_8_smaller_defects(new_page, alice):
    page, _ = new_page()
    sign_in(page, "alice")
    open_model(page, "shared-words")
    page.click("#code-tabs button:has-text('tunelab CLI')")
    code = page.locator("#code").inner_text()
    tune_again = code[code.index("tunelab tune"):]
    for option in ("--epochs 2", "--batch-size 4", "--learning-rate 0.01",
                   "--base-model tiny-random"):
        assert option in tune_again

    # The display name follows the file until the user writes one
    page.click("a:has-text('New tuned model')")
    page.wait_for_selector("#drop")
    upload(page, good_csv(), "first_file.csv")
    page.wait_for_selector("#data-ok")
    assert page.locator("#display-name").input_value() == "first file"
    upload(page, good_csv(), "second-file.csv")
    page.wait_for_selector("#data-ok")
    assert page.locator("#display-name").input_value() == "second file"
    page.click("#clear")
    assert page.locator("#display-name").input_value() == ""
    upload(page, good_csv(), "third.csv")
    page.wait_for_selector("#data-ok")
    page.fill("#display-name", "My own name")
    upload(page, good_csv(), "fourth.csv")
    page.wait_for_selector("#data-ok")
    assert page.locator("#display-name").input_value() == "My own name"

    # The completion toast says the model is ready
    page.select_option("#base", "models/tiny-random")
    page.click("#advanced summary")
    page.fill("input[name=epochCount]", "1")
    page.click("#create")
    page.wait_for_selector("#m-title")
    page.wait_for_selector("#toast:has-text('is ready: tuning finished')", state="attached",
                           timeout=300_000)
    assert "active" not in page.locator("#toast").inner_text().lower()


def test_9_examples_table_is_one_tab_stop_with_arrow_keys(new_page, studio_service):
    page, _ = new_page()
    sign_in(page, "bob")
    page.click("a:has-text('New tuned model')")
    page.wait_for_selector("#drop")
    upload(page, good_csv())
    page.wait_for_selector("#data-ok")
    active = "document.activeElement.dataset.cell || document.activeElement.id"
    page.locator("#col-output").focus()             # the columns the file's rows came from
    page.keyboard.press("Tab")
    assert page.evaluate(active) == "0:0"
    assert page.evaluate("document.activeElement.getAttribute('role')") == "gridcell"
    page.keyboard.press("Tab")                       # one Tab leaves the whole table
    assert page.evaluate(active) == "base"
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"  # advanced settings

    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")                 # back into the table, where it was
    assert page.evaluate(active) == "0:0"
    for key in ("ArrowDown", "ArrowDown", "ArrowRight"):
        page.keyboard.press(key)
    assert page.evaluate(active) == "2:1"
    page.keyboard.press("Enter")                     # edit the cell
    assert page.evaluate("document.activeElement.dataset.f") == "output"
    page.keyboard.type(" X")
    page.keyboard.press("Escape")                    # back to moving between cells
    assert page.evaluate(active) == "2:1"
    assert page.locator("textarea[data-i='2'][data-f=output]").input_value() == "WORD 3 X"
    page.keyboard.press("ArrowLeft")
    page.keyboard.type("Z")                          # typing on a cell edits it
    assert page.locator("textarea[data-i='2'][data-f=input]").input_value() == "word 3Z"
    assert re.fullmatch(r"\d+ examples?", page.locator("#count").inner_text())
