"""The service commands of the CLI against a real server: tune --server, jobs, cancel."""

from __future__ import annotations

import subprocess
import sys

from service_harness import create_body, wait_op


def _cli(service, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "tunelab.cli", *args], env=service.env,
                          capture_output=True, text=True, timeout=timeout)


def test_tune_with_server_follows_progress(service, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text_input,output\n" + "".join(f"word {i},WORD {i}\n" for i in range(20)))
    r = _cli(service, "tune", str(data), "--server", service.url, "--epochs", "1",
             "--batch-size", "4", "--learning-rate", "0.01", "--base-model", "tiny-random",
             "--display-name", "From CLI")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Submitted tunedModels/from-cli-" in r.stdout
    assert "is ACTIVE" in r.stdout
    # not a terminal: no live bar, a line as each epoch is seen and one where the job ended
    said = [line for line in r.stdout.splitlines() if line.startswith("tuning: ")]
    assert said[-1].startswith("tuning: ended, step 5/5, loss ") and "elapsed" in said[-1]
    assert any(line.startswith("tuning: epoch 1, step ") for line in said)
    assert "tuning ━" not in r.stdout


def test_jobs_and_cancel(service, client):
    op = client.post("/v1beta/tunedModels", params={"tunedModelId": "cli-long"},
                     json=create_body(n=40, epochs=1000)).json()  # still running when cancelled
    wait_op(client, op["name"], until=lambda o: o["metadata"]["completedSteps"] >= 1)
    local = _cli(service, "jobs")
    assert local.returncode == 0 and "tunedModels/cli-long" in local.stdout
    assert "running" in local.stdout
    remote = _cli(service, "jobs", "--server", service.url)
    assert "tunedModels/cli-long" in remote.stdout and "CREATING" in remote.stdout
    r = _cli(service, "cancel", "tunedModels/cli-long", "--server", service.url)
    assert r.returncode == 0 and "Cancel requested" in r.stdout
    done = wait_op(client, op["name"])
    assert done["error"]["code"] == 1
    r = _cli(service, "cancel", "no-such-model")
    assert r.returncode == 2 and "not found" in (r.stdout + r.stderr)


def test_another_home_without_credentials_is_told_how_to_sign_in(service, tmp_path):
    env = {**service.env, "TUNELAB_HOME": str(tmp_path / "elsewhere")}
    r = subprocess.run([sys.executable, "-m", "tunelab.cli", "jobs", "--server", service.url],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    out = " ".join((r.stdout + r.stderr).split())
    assert f"No credentials for {service.url}" in out
    assert f"tunelab login --server {service.url}" in out


def test_serve_on_a_busy_port_says_so_and_creates_nothing(service, tmp_path):
    port = service.url.rsplit(":", 1)[1]
    env = {**service.env, "TUNELAB_HOME": str(tmp_path / "second")}
    r = subprocess.run([sys.executable, "-m", "tunelab.cli", "serve", "--port", port,
                        "--no-worker"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    out = " ".join(r.stderr.split())
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out
    assert "choose another port with --port" in out
    assert not (tmp_path / "second").exists()


def test_jobs_with_server_shows_the_queue_position(service, client):
    """`tunelab jobs --server` reads each job's queue position and steps from its operation,
    as the API reports them (a tuned model carries neither)."""
    ops = [client.post("/v1beta/tunedModels", params={"tunedModelId": mid},
                       json=create_body(n=40, epochs=1000)).json()  # still running when cancelled
           for mid in ("queue-first", "queue-second")]
    wait_op(client, ops[0]["name"], until=lambda o: o["metadata"]["completedSteps"] >= 1)
    second = client.get(f"/v1beta/{ops[1]['name']}").json()["metadata"]
    assert second["queuePosition"] == 1  # one worker, busy with the first job
    r = subprocess.run([sys.executable, "-m", "tunelab.cli", "jobs", "--server", service.url],
                       env={**service.env, "COLUMNS": "200"}, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in r.stdout.splitlines()
             if "tunedModels/queue-" in line]
    rows = {c[0]: c[1:4] for c in cells}
    total = second["totalSteps"]
    assert rows["tunedModels/queue-second"] == ["CREATING", f"0/{total}", "1"], r.stdout
    assert rows["tunedModels/queue-first"][1].endswith(f"/{total}") and not rows[
        "tunedModels/queue-first"][2]
    for op in ops:
        client.post(f"/v1beta/{op['name']}:cancel")
    for op in ops:
        wait_op(client, op["name"])


def test_tune_with_server_sends_the_chat_format_system_prompt(service, client, tmp_path):
    """A chat-format file's system prompt arrives at the server with `tune --server`: the
    tuned model's manifest records it as the system instruction it was tuned with."""
    import json

    system = "You answer in capital letters only."
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": f"word {i}"},
        {"role": "assistant", "content": f"WORD {i}"}]}) + "\n" for i in range(20)))
    r = _cli(service, "tune", str(data), "--server", service.url, "--epochs", "1",
             "--batch-size", "4", "--learning-rate", "0.01", "--base-model", "tiny-random",
             "--display-name", "Chat CLI")
    assert r.returncode == 0, r.stdout + r.stderr
    name = next(w for w in r.stdout.split() if w.startswith("tunedModels/chat-cli-"))
    manifest = service.home / "artifacts" / "tuned" / name.split("/")[1] / "manifest.json"
    assert json.loads(manifest.read_text())["system_instruction"] == system


def test_tune_with_server_follows_a_refit_to_its_real_length(service, tmp_path):
    """48 examples, epochs automatic: 16 held out, the job is planned at the first run's 72
    steps and at most 108 more, and ends at the real length, the refit's line printed
    (training/refit.py)."""
    data = tmp_path / "data.csv"
    data.write_text("text_input,output\n" + "".join(f"word {i},WORD {i}\n" for i in range(48)))
    r = _cli(service, "tune", str(data), "--server", service.url, "--batch-size", "4",
             "--learning-rate", "0.01", "--base-model", "tiny-random", "--display-name", "Refit")
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "(180 steps)" in text and "is ACTIVE" in text  # 9 × 8, then at most 9 × 12
    assert "Served: The served model is a refit: it trained on all 48 examples for" in text
    steps = int(text.split("all 48 examples for ")[1].split("(")[1].split(" steps")[0])
    assert f"{72 + steps}/{72 + steps}" in text  # the bar ends at the corrected total


def test_tune_with_server_sends_free_answers(service, tmp_path):
    """`tune --server --free-answers`: the server's tuned classifier keeps its own answers."""
    import json

    data = tmp_path / "route.jsonl"
    labels = ["refund", "delivery", "account"]
    data.write_text("".join(json.dumps({"text_input": f"message {i} from a customer",
                                        "output": labels[i % 3]}) + "\n" for i in range(24)))
    r = _cli(service, "tune", str(data), "--server", service.url, "--epochs", "1",
             "--batch-size", "4", "--learning-rate", "0.01", "--base-model", "tiny-random",
             "--display-name", "Free CLI", "--free-answers")
    assert r.returncode == 0, r.stdout + r.stderr
    name = next(w for w in r.stdout.split() if w.startswith("tunedModels/free-cli-"))
    manifest = service.home / "artifacts" / "tuned" / name.split("/")[1] / "manifest.json"
    assert json.loads(manifest.read_text())["answer_labels"] is None
