"""Export and import over REST and the CLI, against a real server (tiny model): the download
loads in its own library and answers like the served model; an exported adapter imported
again answers the same; bad requests get the Google error shape with what to do."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile

import pytest
from service_harness import create_body, wait_op

PROMPTS = ["word 3", "word 17", "hello"]
GEN = {"generationConfig": {"maxOutputTokens": 16, "temperature": 0}}


def answers(client, model: str) -> list[str]:
    out = []
    for p in PROMPTS:
        r = client.post(f"/v1beta/{model}:generateContent",
                        json={"contents": [{"role": "user", "parts": [{"text": p}]}], **GEN})
        assert r.status_code == 200, r.text
        out.append(r.json()["candidates"][0]["content"]["parts"][0]["text"])
    return out


@pytest.fixture(scope="module")
def tuned(service):
    with service.client() as c:
        op = c.post("/v1beta/tunedModels", params={"tunedModelId": "exp-src"},
                    json=create_body(epochs=2)).json()
        assert "error" not in wait_op(c, op["name"])
        return "tunedModels/exp-src", answers(c, "tunedModels/exp-src")


def test_peft_download_imports_back_and_answers_the_same(service, client, tuned):
    name, want = tuned
    r = client.get(f"/v1beta/{name}:export", params={"format": "peft"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    assert 'filename="exp-src-peft.tar.gz"' in r.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        files = {m.name for m in tar.getmembers()}
    assert {"exp-src-peft/adapter_model.safetensors", "exp-src-peft/adapter_config.json",
            "exp-src-peft/README.md", "exp-src-peft/chat_template.jinja"} <= files
    r = client.post("/v1beta/tunedModels:import", params={"tunedModelId": "exp-back"},
                    data={"baseModel": "models/tiny-random", "displayName": "Round trip"},
                    files={"archive": ("a.tar.gz", r.content, "application/gzip")})
    assert r.status_code == 200, r.text
    model = r.json()
    assert model["name"] == "tunedModels/exp-back" and model["state"] == "ACTIVE"
    assert answers(client, "tunedModels/exp-back") == want
    # and it is exported like any tuned model
    assert client.get("/v1beta/tunedModels/exp-back:export",
                      params={"format": "gguf"}).status_code == 200


def test_merged_download_loads_in_transformers(service, client, tuned, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, want = tuned
    r = client.get(f"/v1beta/{name}:export", params={"format": "merged", "epoch": 2})
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "exp-src-merged-epoch2"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    got = []
    for p in PROMPTS:
        enc = tok.apply_chat_template([{"role": "user", "content": p}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=16, do_sample=False)
        got.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    assert got == want


ERRORS = {
    # case: (method, path, request, code, words in the message)
    "unknown format": ("get", "/v1beta/tunedModels/exp-src:export", {"params": {"format": "onnx"}},
                       400, "format must be one of peft, merged, gguf"),
    "no such epoch": ("get", "/v1beta/tunedModels/exp-src:export",
                      {"params": {"format": "peft", "epoch": 9}}, 400, "available epochs: 1, 2"),
    "no such model": ("get", "/v1beta/tunedModels/nope:export", {}, 404, "was not found"),
    "pickled weights": ("post", "/v1beta/tunedModels:import",
                        {"data": {"baseModel": "models/tiny-random"},
                         "files": {"adapterConfig": ("adapter_config.json", b"{}"),
                                   "adapterModel": ("adapter_model.bin", b"\x80\x04.")}},
                        400, "pickled weights, which can run code"),
    "no adapter": ("post", "/v1beta/tunedModels:import",
                   {"data": {"baseModel": "models/tiny-random"}}, 400, "Send the adapter as"),
    "no base model": ("post", "/v1beta/tunedModels:import",
                      {"files": {"adapterConfig": ("adapter_config.json", b"{}"),
                                 "adapterModel": ("adapter_model.safetensors", b"x" * 20)}},
                      400, "baseModel is required"),
    # a folder of the server, named through 'models/../..', is not a base model over the API
    "a server folder as base model": ("post", "/v1beta/tunedModels:import",
                                      {"data": {"baseModel": "models/" + "../" * 30 + "etc"},
                                       "files": {"adapterConfig": ("adapter_config.json", b"{}"),
                                                 "adapterModel": ("adapter_model.safetensors",
                                                                  b"x" * 20)}},
                                      404, "is not a base model of this server; give one of "
                                           "models/"),
    "not an archive": ("post", "/v1beta/tunedModels:import",
                       {"data": {"baseModel": "models/tiny-random"},
                        "files": {"archive": ("a.tar.gz", b"not a tar")}},
                       400, "not a readable .tar.gz archive"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_say_what_to_do(client, tuned, case):
    method, path, kwargs, code, words = ERRORS[case]
    r = client.request(method.upper(), path, **kwargs)
    assert r.status_code == code, r.text
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"]
    assert "Traceback" not in err["message"] and "/tmp" not in err["message"]


def test_cli_export_and_import_through_the_server(service, client, tuned, tmp_path):
    name, want = tuned

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tunelab.cli", *args], env=service.env,
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    r = cli("export", name, "--server", service.url, "-f", "peft", "-o", "adapter")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    r = cli("export", name, "--server", service.url, "-f", "gguf", "--quantization", "q8_0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "exp-src-gguf-q8_0.gguf").read_bytes()[:4] == b"GGUF"
    r = cli("import", "adapter", "--base-model", "tiny-random", "--server", service.url,
            "--id", "exp-cli", "--display-name", "From the CLI")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Imported tunedModels/exp-cli" in r.stdout
    assert answers(client, "tunedModels/exp-cli") == want
    r = cli("export", "tunedModels/exp-src", "--server", service.url, "-f", "zip")
    assert r.returncode == 2 and "format must be one of" in r.stderr and "Traceback" not in r.stderr
