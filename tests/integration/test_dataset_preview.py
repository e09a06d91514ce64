"""``POST /studio/datasets:preview`` against a real server on 127.0.0.1: the Studio's table is
the server's parse of the bytes (one parser, ``data/parse.py``), with every row, the problems
as ``google.rpc.BadRequest`` field violations on those rows and the warnings with a code and
the rows they concern; the same bytes uploaded to ``POST /v1beta/files`` give the same
problems. Bounded like an upload; credentials first; nothing is stored."""

from __future__ import annotations

import json

import httpx
import pytest
from service_harness import Service

PREVIEW = "/studio/datasets:preview"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("preview"), workers=0).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def c(svc):
    with svc.client() as client:
        yield client


def preview(c: httpx.Client, name: str, text: str | bytes, **form) -> dict:
    r = c.post(PREVIEW, files={"file": (name, text)}, data=form)
    assert r.status_code == 200, r.text
    return r.json()


def test_jsonl_rows_as_the_server_reads_them(c):
    lines = [json.dumps({"prompt": f"Translate to French.\nWord: w{i}", "completion": f"m{i}"})
             for i in range(1, 21)]
    got = preview(c, "words.jsonl", "\n\n".join(lines) + "\n")
    assert got["format"] == "jsonl" and got["exampleCount"] == 20
    assert got["rows"][0] == {"textInput": "Translate to French.\nWord: w1", "output": "m1",
                              "source": "line 1", "readable": True}
    assert got["rows"][19]["source"] == "line 39"  # blank lines between the records
    assert got["fieldViolations"] == [] and got["warnings"] == []
    assert got["promptFormat"] == {"preamble": "Translate to French.", "labels": ["word:"]}


def test_csv_bad_rows_are_field_violations_on_their_rows_as_an_upload_reports_them(c):
    rows = [f"w {i},W {i}" for i in range(1, 25)]
    rows[2] = "w 3,W 3,extra"
    rows[7] = "w 8,"
    text = "text_input,output\n" + "\n".join(rows) + "\n"
    got = preview(c, "d.csv", text)
    assert got["format"] == "csv" and got["columns"] == ["text_input", "output"]
    assert (got["inputColumn"], got["outputColumn"]) == ("text_input", "output")
    assert len(got["rows"]) == 24 and got["exampleCount"] == 23
    assert got["rows"][2] == {"textInput": "w 3", "output": "W 3", "source": "row 4",
                              "readable": False}
    assert got["rows"][7] == {"textInput": "w 8", "output": "", "source": "row 9",
                              "readable": True}
    fields = [v["field"] for v in got["fieldViolations"]]
    assert fields == ["examples[2]", "examples[7].output"]
    # the upload's answer for the same bytes: the same problems, in the same words
    r = c.post("/v1beta/files", files={"file": ("d.csv", text)})
    assert r.status_code == 400
    assert r.json()["error"]["details"][0]["fieldViolations"] == got["fieldViolations"]


def test_columns_to_choose_then_chosen(c):
    text = "ticket,category\n" + "".join(f"t {i},c{i % 2}\n" for i in range(20))
    got = preview(c, "tickets.csv", text)
    assert got["columns"] == ["ticket", "category"] and got["rows"] == []
    assert [v["field"] for v in got["fieldViolations"]] == ["inputColumn", "outputColumn"]
    got = preview(c, "tickets.csv", text, inputColumn="ticket", outputColumn="category")
    assert (got["inputColumn"], got["outputColumn"]) == ("ticket", "category")
    assert got["rows"][1]["textInput"] == "t 1" and got["rows"][1]["output"] == "c1"
    assert got["fieldViolations"] == []


def test_chat_format_keeps_the_system_prompt(c):
    lines = [json.dumps({"messages": [{"role": "system", "content": "Shout it."},
                                      {"role": "user", "content": f"word {i}"},
                                      {"role": "assistant", "content": f"WORD {i}"}]})
             for i in range(1, 21)]
    lines[4] = json.dumps({"contents": [{"role": "user", "parts": [{"text": "a"}]}]})
    got = preview(c, "chat.jsonl", "\n".join(lines))
    assert got["rows"][0] == {"textInput": "word 1", "output": "WORD 1",
                              "systemInstruction": "Shout it.", "source": "line 1",
                              "readable": True}
    assert got["rows"][4]["readable"] is False
    assert [v["field"] for v in got["fieldViolations"]] == ["examples[4].contents"]


def test_json_gemini_shape_read_and_training_data_wrapper_refused(c):
    examples = [{"textInput": f"q {i}", "output": f"a {i}"} for i in range(20)]
    got = preview(c, "d.json", json.dumps({"examples": {"examples": examples}}))
    assert got["format"] == "json" and got["exampleCount"] == 20
    assert got["rows"][3]["source"] == "example 4"
    # a create request's body is not a dataset file: the server says so, there is no row
    got = preview(c, "d.json", json.dumps({"trainingData": {"examples": {"examples": examples}}}))
    assert got["rows"] == [] and got["exampleCount"] == 0
    (v,) = got["fieldViolations"]
    assert v["field"] == "d.json" and "single object" in v["description"]


def test_warnings_carry_a_code_and_their_rows(c):
    # 20 examples of 2 labels: a duplicate, and fewer than a classification task needs
    rows = [f"ticket {i},{'billing' if i % 2 else 'bug'}" for i in range(20)] + ["ticket 1,billing"]
    got = preview(c, "t.csv", "text_input,output\n" + "\n".join(rows) + "\n")
    assert got["fieldViolations"] == [] and got["taskType"] == "classification"
    codes = {w["code"]: w for w in got["warnings"]}
    assert codes["DUPLICATE_EXAMPLES"]["examples"] == [1, 20]
    assert "rows 3 and 22 are identical" in codes["DUPLICATE_EXAMPLES"]["message"]
    assert codes["TASK_SIZE"]["examples"] == []


def test_too_few_and_unreadable_files_are_violations_without_rows(c):
    got = preview(c, "few.csv", "text_input,output\na,b\n")
    assert [v["field"] for v in got["fieldViolations"]] == ["few.csv"]
    assert "at least 20" in got["fieldViolations"][0]["description"]
    got = preview(c, "latin.csv", "text_input,output\ncaf\xe9,x\n".encode("latin-1"))
    assert got["rows"] == [] and "not valid UTF-8" in got["fieldViolations"][0]["description"]
    assert "format" not in got


def test_bounded_like_an_upload_and_credentials_first(svc, c):
    # over 4 MB but within the upload's framing: read, then refused with a 400
    big = "text_input,output\n" + "x" * (4 * 2**20) + ",y\n"
    r = c.post(PREVIEW, files={"file": ("big.csv", big)})
    assert r.status_code == 400
    assert "larger than 4 MB" in r.json()["error"]["message"]
    # over the upload limit: refused unread, 413 in Google's shape
    huge = big + "z" * (2**20)
    r = c.post(PREVIEW, files={"file": ("huge.csv", huge)})
    assert r.status_code == 413
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"
    # no credentials: 401 before the body is read
    r = httpx.post(svc.url + PREVIEW, files={"file": ("d.csv", "text_input,output\na,b\n")})
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    # an API key may not (as for uploads)
    r = httpx.post(svc.url + PREVIEW, headers={"x-goog-api-key": svc.api_key},
                   files={"file": ("d.csv", "text_input,output\na,b\n")})
    assert r.status_code == 403
    # nothing of any preview was stored
    assert not c.get("/v1beta/files").json().get("files")


def test_the_file_limit_served_to_the_studio_is_the_servers_bound(c):
    """The Studio refuses a file over ``GET /studio/limits``' ``datasetFile.maxBytes`` before
    sending it: that number is the bound the server reads uploads and previews under (a file
    of exactly that size is read, one byte more is refused), not one typed into the page."""
    limit = c.get("/studio/limits").json()["datasetFile"]
    top = limit["maxBytes"]
    assert limit["range"] == f"at most {top / 2**20:g} MB"
    head = "text_input,output\n"
    at = head + "x" * (top - len(head) - 3) + ",y\n"
    assert len(at.encode()) == top
    r = c.post(PREVIEW, files={"file": ("at.csv", at)})
    assert r.status_code == 200, r.text  # read: what is wrong with it is its rows, not its size
    assert not any("larger than" in v["description"] for v in r.json()["fieldViolations"])
    for path in (PREVIEW, "/v1beta/files"):
        r = c.post(path, files={"file": ("over.csv", at + "y")})
        assert r.status_code == 400, r.text
        assert f"larger than {top // 2**20} MB" in r.json()["error"]["message"]
    assert not c.get("/v1beta/files").json().get("files")
