"""Request bounds and load against a real ``tunelab serve`` (docs/reliability.md, "Request
bounds and load"): bodies refused before they are read, credentials checked before a body is
read, prompts bounded before they are tokenized, a burst of generations that leaves the rest
of the API responsive, and the smaller protocol errors (405 ``Allow``, an empty body, a number
of more than 4,300 digits)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import socket
import threading

import httpx
import pytest
from service_harness import create_body

MiB = 2**20
GENERATE = "/v1beta/models/tiny-random:generateContent"


def raw_exchange(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], dict]:
    """Send ``head`` (request line and headers) and ``body`` on a new connection and read the
    answer. The body may be much shorter than the declared Content-Length: an answer at all
    proves the server did not wait to read the rest (a server that waits makes this time out).
    The body is sent from a thread while the answer is read: a server that stops reading a
    body and closes the connection resets it, and a reader that only started after sending
    everything would lose the answer to that reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        def send() -> None:
            with contextlib.suppress(OSError):  # the server may close before all is sent
                s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)

        sender = threading.Thread(target=send)
        sender.start()
        data = b""
        with contextlib.suppress(ConnectionResetError):  # after the answer: see above
            while chunk := s.recv(65536):
                data += chunk
        sender.join()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(payload[:int(headers["content-length"])])


def assert_google_error(body: dict, code: int, *words: str) -> str:
    err = body["error"]
    assert err["code"] == code and err["status"], body
    for w in words:
        assert w in err["message"], err["message"]
    return err["message"]


# ---------------------------------------------------------------------------- bodies
def test_a_50_mb_body_is_refused_before_it_is_read(service):
    head = (f"POST /v1beta/tunedModels HTTP/1.1\nHost: x\nAuthorization: Bearer {service.token}\n"
            f"Content-Type: application/json\nContent-Length: {50 * MiB}\n")
    code, headers, body = raw_exchange(service.port, head)  # not one byte of the body sent
    assert code == 413
    assert headers["connection"] == "close"
    assert_google_error(body, 413, "8,388,608 bytes", "POST /v1beta/files")


def test_a_chunked_body_is_counted_as_it_arrives(service):
    """No Content-Length: the server counts the chunks and stops at the limit."""
    chunk = b"x" * MiB
    head = (f"POST /v1beta/tunedModels HTTP/1.1\nHost: x\nAuthorization: Bearer {service.token}\n"
            "Content-Type: application/json\nTransfer-Encoding: chunked\n")
    body = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 9 + b"0\r\n\r\n"
    code, headers, answer = raw_exchange(service.port, head, body)
    assert code == 413 and headers["connection"] == "close"
    assert_google_error(answer, 413, "8,388,608 bytes")


def test_an_upload_without_credentials_is_refused_before_its_body(service):
    """1,000 MiB declared, none sent: 401 at once, nothing read or spooled to disk."""
    head = ("POST /v1beta/files HTTP/1.1\nHost: x\n"
            "Content-Type: multipart/form-data; boundary=b\n"
            f"Content-Length: {1000 * MiB}\n")
    code, headers, body = raw_exchange(service.port, head)
    assert code == 401 and headers["connection"] == "close"
    assert_google_error(body, 401, "API key")


def test_an_upload_over_4_mb_is_refused_before_its_body(service):
    head = (f"POST /v1beta/files HTTP/1.1\nHost: x\nAuthorization: Bearer {service.token}\n"
            f"Content-Type: multipart/form-data; boundary=b\nContent-Length: {5 * MiB}\n")
    code, _, body = raw_exchange(service.port, head)
    assert code == 413
    assert_google_error(body, 413, "at most 4 MB")


def test_an_upload_of_4_mb_still_fits(client):
    """The upload limit leaves room for the multipart framing around a 4 MB file."""
    line = b'{"text_input": "word", "output": "WORD"}\n'
    data = line * (4 * MiB // len(line))
    r = client.post("/v1beta/files", files={"file": ("big.jsonl", data, "application/jsonl")},
                    data={"displayName": "x" * 1000})
    assert r.status_code != 413, r.text


@pytest.mark.parametrize(("path", "form"), [
    ("/v1beta/files", {}),
    ("/v1/files", {}),  # Gemini's client (its v1 API version) on the path both protocols have
    ("/openai/v1/files", {"purpose": "fine-tune"}),
    ("/studio/datasets:preview", {}),
])
def test_a_file_just_over_4_mb_is_read_and_refused_alike_by_every_upload(client, path, form):
    """Over 4 MB but within the multipart framing: the body is read, and each upload (Gemini's,
    OpenAI's, the Studio's preview) refuses the file with the same words, in its API's shape."""
    line = b'{"text_input": "a", "output": "b"}\n'
    data = line * (4 * MiB // len(line) + 10)
    assert 4 * MiB < len(data) < 4 * MiB + 64 * 1024
    r = client.post(path, files={"file": ("big.jsonl", data, "application/jsonl")}, data=form)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "larger than 4 MB" in error["message"]
    assert "remove examples or shorten them" in error["message"]
    if path.startswith("/openai/"):  # OpenAI's error shape
        assert error["type"] == "invalid_request_error"
    else:  # Google's
        assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"


# ------------------------------------------------------------------------- prompts
@pytest.mark.parametrize("method", ["generateContent", "countTokens"])
def test_a_prompt_longer_than_the_context_could_hold_is_refused_untokenized(client, method):
    text = "x" * MiB  # tiny-random: 511 tokens of at most 13 characters = 6,643 characters
    r = client.post(f"/v1beta/models/tiny-random:{method}",
                    json={"contents": [{"role": "user", "parts": [{"text": text}]}]})
    assert r.status_code == 400
    assert_google_error(r.json(), 400, "1,048,576 characters", "6,643 characters")


def test_a_prompt_within_the_bound_is_still_counted_exactly(client):
    r = client.post("/v1beta/models/tiny-random:countTokens",
                    json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]})
    assert r.status_code == 200 and r.json()["totalTokens"] > 5


# ---------------------------------------------------------------------------- load
def test_sixty_concurrent_generations_leave_the_api_responsive(service):
    """One generation runs, 8 wait (TUNELAB_MAX_QUEUED_GENERATIONS), the rest get 503 with
    Retry-After at once; GET /models answers while generations are still in flight."""
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}],
            "generationConfig": {"maxOutputTokens": 256, "temperature": 0}}

    async def burst() -> tuple[list[httpx.Response], httpx.Response, int]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=service.url, timeout=600, limits=limits,
                                     headers={"x-goog-api-key": service.api_key}) as c:
            tasks = [asyncio.create_task(c.post(GENERATE, json=body)) for _ in range(60)]
            pending = set(tasks)
            while pending:  # until the line is full: the first refusal
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.result().status_code == 503 for t in done):
                    break
            models = await c.get("/v1beta/models")
            in_flight = sum(1 for t in tasks if not t.done())
            return list(await asyncio.gather(*tasks)), models, in_flight

    # in a thread of its own: a session-scoped Playwright browser (tests/e2e) keeps an event loop
    # running in the main thread for the rest of a whole-suite run
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answers, models, in_flight = pool.submit(asyncio.run, burst()).result()
    codes = sorted(r.status_code for r in answers)
    assert set(codes) == {200, 503}, codes
    assert models.status_code == 200
    assert in_flight > 0  # /models did not wait for the generations
    refused = next(r for r in answers if r.status_code == 503)
    assert int(refused.headers["retry-after"]) >= 1
    assert_google_error(refused.json(), 503, "overloaded", "Retry after")
    assert refused.json()["error"]["status"] == "UNAVAILABLE"
    # and the service serves generations again once the burst is over
    with service.client() as c:
        assert c.post(GENERATE, json=body).status_code == 200


# ------------------------------------------------------------------- smaller errors
@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/v1beta/tunedModels/some-model", "DELETE, GET, PATCH"),
    ("DELETE", "/v1beta/tunedModels", "GET, POST"),
    ("POST", "/v1beta/models/tiny-random", "GET"),
])
def test_405_says_what_is_allowed(client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert_google_error(r.json(), 405, allowed.split(", ")[-1])


def test_an_empty_create_body_says_a_body_is_needed(client):
    r = client.post("/v1beta/tunedModels", content=b"",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    msg = assert_google_error(r.json(), 400, "request body is empty", "JSON object")
    assert "''" not in msg


def test_invalid_json_says_where(client):
    r = client.post("/v1beta/tunedModels", content=b'{"displayName": }',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert_google_error(r.json(), 400, "Invalid JSON payload received", "line 1, column 17")


def test_a_number_of_5000_digits_is_a_400_on_a_connection_that_stays_open(service):
    """An upload, then another request on the same keep-alive connection."""
    number = "9" * 5000
    data = "\n".join(json.dumps({"text_input": f"w{i}", "output": f"W{i}"}) for i in range(20))
    data += '\n{"text_input": "n", "output": ' + number + "}\n"
    boundary = "bnd"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"nums.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{data}\r\n"
            f"--{boundary}--\r\n").encode()
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
    auth = {"Authorization": f"Bearer {service.token}"}
    conn.request("POST", "/v1beta/files", body=form,
                 headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    r = conn.getresponse()
    answer = json.loads(r.read())
    assert r.status == 400, answer
    assert_google_error(answer, 400, "line 21", "4,300 digits")
    sock = conn.sock
    conn.request("GET", "/v1beta/models", headers=auth)
    r2 = conn.getresponse()
    assert r2.status == 200 and conn.sock is sock  # the same connection, still usable
    r2.read()
    # inline in a create body too
    conn.request("POST", "/v1beta/tunedModels", headers={**auth, "Content-Type":
                 "application/json"}, body=json.dumps(create_body())[:-1] + ', "x": ' + number
                 + "}")
    r3 = conn.getresponse()
    assert r3.status == 400
    assert_google_error(json.loads(r3.read()), 400, "4,300 digits")
    conn.close()
