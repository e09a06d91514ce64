"""An upload's warnings on the wire (``api/gemini/convert.py``'s ``warning_out``): as the
Studio's preview gives them, from a finding, from what an upload stores, and from an upload
stored before warnings had codes (only their words)."""

from __future__ import annotations

from tunelab.api.gemini.convert import warning_out
from tunelab.errors import Problem


def test_a_finding_and_its_stored_form_answer_the_same():
    found = Problem("rows 2 and 5 are identical", "d.csv, row 5", field="text_input",
                    code="DUPLICATE_EXAMPLES", rows=(2, 5, 9))
    stored = {"code": found.code, "message": found.message, "field": found.field,
              "rows": list(found.rows)}
    for w in (found, stored):
        out = warning_out(w, count=6).model_dump(by_alias=True, exclude_none=True)
        assert out == {"code": "DUPLICATE_EXAMPLES", "message": "rows 2 and 5 are identical",
                       "field": "textInput", "examples": [1, 4]}  # row 9 is past the data


def test_an_upload_stored_before_codes_keeps_its_words():
    out = warning_out("d.csv, row 5: rows 2 and 5 are identical", count=6)
    assert (out.code, out.message, out.examples) == (
        "", "d.csv, row 5: rows 2 and 5 are identical", [])
