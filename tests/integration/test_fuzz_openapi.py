"""Schemathesis over the OpenAPI document of a real ``tunelab serve``: a few generated
requests per operation, valid and invalid ones, once with an OAuth token (tuning scope) and
once with an API key. No answer may be a 5xx, every error must be in Google's error shape
(RFC 6749's for ``/oauth2/*``), and every status code must be one the document lists for
that operation, so the document tells clients the errors they really get.

Each operation's cases come from schemathesis's Hypothesis strategy (``as_strategy``) and are
checked with its own checks; every failing operation is reported, not only the first."""

from __future__ import annotations

import re

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from service_harness import Service

EXAMPLES = 3  # per operation, credential and mode: bounded (the suite runs on 2 cores)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("fuzz"), workers=0).start()
    yield svc
    svc.stop()


def google_shape(ctx, response, case) -> None:
    """Every error answer is ``{"error": {"code", "message", "status"}}`` with the answer's
    own code (``/oauth2/*``: ``{"error": "...", "error_description": "..."}``), and a message
    a person can act on."""
    if response.status_code < 400:
        return
    body = response.json()
    if case.path.startswith("/oauth2/") and isinstance(body.get("error"), str):
        assert body.get("error_description"), body
        return
    err = body["error"]
    assert err["code"] == response.status_code, body
    assert isinstance(err["status"], str) and err["status"].isupper(), body
    assert isinstance(err["message"], str) and len(err["message"]) > 10, body
    assert "Traceback" not in err["message"], body


CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance, google_shape]


def _fuzz(url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """(cases sent, one line per failing operation and mode)."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    sent = 0
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                                 database=None, suppress_health_check=list(hypothesis.HealthCheck),
                                 phases=[hypothesis.Phase.generate])
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                nonlocal sent
                sent += 1
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS,
                                       timeout=120)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass  # no invalid request to make (e.g. only string path parameters)
            except Exception as e:  # noqa: BLE001 - collected, reported together below
                failures.append(f"{operation.label} ({mode.value}): {str(e)[:1500]}")
    return sent, failures


@pytest.mark.parametrize("credential", ["token", "api_key"])
def test_openapi_fuzz(fuzzed, credential):
    headers = ({"Authorization": f"Bearer {fuzzed.token}"} if credential == "token"
               else {"x-goog-api-key": fuzzed.api_key})
    sent, failures = _fuzz(fuzzed.url, headers)
    assert sent > 100, sent  # every operation was reached
    assert not failures, "\n\n".join(failures)


def test_openapi_lists_real_errors_only(fuzzed):
    """422 (never sent) is gone; each operation lists the errors it sends, in one schema."""
    import httpx

    doc = httpx.get(fuzzed.url + "/openapi.json").json()
    ops = {(p, m): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert len(ops) > 50
    for (path, method), op in ops.items():
        codes = set(op["responses"])
        assert "422" not in codes, (path, method)
        if not path.startswith("/oauth2/"):
            assert {"400", "401", "403"} <= codes, (path, method, codes)
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}
        if re.search(r"\{(model_id|op_id|file_id|perm_id|key_id)\}", path):  # a resource
            assert "404" in codes, (path, method)
        if "requestBody" in op:
            assert "413" in codes, (path, method)
    assert "503" in ops[("/v1beta/models/{model_id}:generateContent", "post")]["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
