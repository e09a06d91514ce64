"""Checkpoints cannot run code, and a damaged one costs an epoch, not the job.

A run on the tiny model is stopped in epoch 3 (checkpoints for epochs 1 and 2); each test
copies that output directory, damages it the way a disk fault, a crash or an attacker with
write access to the storage would, resumes, and checks that nothing planted ran and that the
finished run equals an uninterrupted one step for step and weight for weight."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunelab.data import Example
from tunelab.errors import DataLoss, NotFound
from tunelab.fsutil import StorageUnavailable, storage_fault
from tunelab.training import Hyperparameters, read_manifest, select_epoch, train
from tunelab.training.checkpoint import (
    _pack,
    _unpack,
    adapter_damage,
    checkpoint_dir,
    load_resume_state,
)

HP = Hyperparameters(epoch_count=3, batch_size=4, learning_rate=0.01)
STEPS_PER_EPOCH = 6  # 24 examples / batch 4


class Payload:
    """Unpickling this creates ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def runs(tiny_base, tmp_path_factory):
    """(uninterrupted run, output directory of a run stopped in epoch 3)."""
    examples = [Example(f"add {i} and {i + 1}", f"{2 * i + 1}") for i in range(24)]
    root = tmp_path_factory.mktemp("runs")
    full = train(tiny_base, examples, HP, root / "full", seed=5)
    calls = {"n": 0}

    def stop_in_epoch_3() -> bool:
        calls["n"] += 1
        return calls["n"] > 2 * STEPS_PER_EPOCH + 2

    stopped = root / "stopped"
    r = train(tiny_base, examples, HP, stopped, seed=5, should_cancel=stop_in_epoch_3)
    assert r.status == "cancelled"
    return full, stopped, examples


def _resume(tiny_base, runs, tmp_path, damage) -> tuple:
    full, stopped, examples = runs
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    damage(out)
    resumed = train(tiny_base, examples, HP, out, seed=5)
    return full, resumed, out


def _same_run(full, resumed, out: Path) -> None:
    assert resumed.status == "completed"
    assert [(s.step, s.epoch, s.mean_loss) for s in resumed.snapshots] == [
        (s.step, s.epoch, s.mean_loss) for s in full.snapshots]
    a = load_file(full.output_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_planted_pickle_never_runs_and_the_run_resumes_from_the_epoch_before(
        tiny_base, runs, tmp_path):
    marker = tmp_path / "payload-ran"

    def plant(out: Path) -> None:
        # epoch 2's state replaced by a pickle (the format of earlier versions: state.pt)
        ckpt = checkpoint_dir(out, 2)
        for name in ("state.json", "state.safetensors", "checksums.json"):
            (ckpt / name).unlink()
        torch.save({"epochs_run": 2, "x": Payload(marker)}, ckpt / "state.pt")

    full, resumed, out = _resume(tiny_base, runs, tmp_path, plant)
    assert not marker.exists()
    assert resumed.resumed_from_epoch == 1
    _same_run(full, resumed, out)


def test_a_pickle_under_a_safetensors_name_is_refused(tiny_base, runs, tmp_path):
    marker = tmp_path / "payload-ran"

    def plant(out: Path) -> None:
        for epoch in (1, 2):
            torch.save({"x": Payload(marker)}, checkpoint_dir(out, epoch) / "state.safetensors")

    full, resumed, out = _resume(tiny_base, runs, tmp_path, plant)
    assert not marker.exists()
    assert resumed.resumed_from_epoch == 0  # neither checkpoint matched its checksums
    _same_run(full, resumed, out)


@pytest.mark.parametrize("how", ["truncate adapter", "flip a byte of the state",
                                 "garble state.json", "lose the checksums"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tiny_base, runs, tmp_path,
                                                                  how):
    def damage(out: Path) -> None:
        ckpt = checkpoint_dir(out, 2)
        if how == "truncate adapter":
            p = ckpt / "adapter_model.safetensors"
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        elif how == "flip a byte of the state":
            p = ckpt / "state.safetensors"
            data = bytearray(p.read_bytes())
            data[-3] ^= 0xFF
            p.write_bytes(bytes(data))
        elif how == "garble state.json":
            (ckpt / "state.json").write_text('{"format": "tunelab-state/1", "state": {')
        else:
            (ckpt / "checksums.json").unlink()

    full, resumed, out = _resume(tiny_base, runs, tmp_path, damage)
    assert resumed.resumed_from_epoch == 1
    _same_run(full, resumed, out)


def test_interrupted_checkpoint_writes_are_removed_on_resume(runs, tmp_path):
    _, stopped, _ = runs
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    # what a crash in the middle of atomic_dir leaves: temp folders next to their targets
    partial = [out / "checkpoints" / ".epoch-3-k2j4x", out / "checkpoints" / ".epoch-2-old-77",
               out / ".adapter-9fq1", out / ".manifest.json-a81"]
    for p in partial[:3]:
        p.mkdir()
        (p / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    partial[3].write_text("{")
    state = load_resume_state(out)
    assert state is not None and state["epochs_run"] == 2
    assert not any(p.exists() for p in partial)
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"epoch-1", "epoch-2"}


def test_the_state_comes_back_equal_without_pickle():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    opt.zero_grad()
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": {"cpu": torch.get_rng_state()},
             "lora": {"target_modules": ("q_proj", "v_proj")}, "$odd": [1.5e-7, None, True]}
    tensors: dict = {}
    doc = json.loads(json.dumps(_pack(state, tensors)))
    back = _unpack(doc, tensors)
    assert list(back["optimizer"]["state"]) == [0]  # parameter numbers stay ints
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["rng"]["cpu"], state["rng"]["cpu"])
    assert back["rng"]["cpu"].dtype == torch.uint8
    assert back["lora"] == state["lora"] and back["$odd"] == state["$odd"]
    opt.load_state_dict(back["optimizer"])


def test_damaged_adapters_and_manifests_are_named_without_paths(runs, tmp_path):
    _, stopped, _ = runs
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    assert adapter_damage(out / "adapter") is None
    weights = out / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "adapter_model.safetensors" in adapter_damage(out / "adapter")

    ckpt = checkpoint_dir(out, 2) / "adapter_model.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:-10])
    with pytest.raises(DataLoss) as e:
        select_epoch(out, 2)
    assert "Epoch 2's checkpoint is damaged" in e.value.message
    assert "Choose another epoch: 1." in e.value.message
    assert str(tmp_path) not in e.value.message
    select_epoch(out, 1)  # an intact epoch is served, its adapter sealed with checksums
    assert adapter_damage(out / "adapter") is None
    assert (out / "adapter" / "checksums.json").exists()

    (out / "manifest.json").write_bytes(b"\xff{not json")
    with pytest.raises(DataLoss) as e:
        read_manifest(out)
    assert "manifest.json is damaged" in e.value.message and str(tmp_path) not in e.value.message
    with pytest.raises(NotFound) as e:
        read_manifest(tmp_path / "nowhere")
    assert str(tmp_path) not in e.value.message


def test_a_full_or_read_only_disk_is_a_retryable_fault():
    with pytest.raises(OSError) as full, open("/dev/full", "wb") as f:  # a real ENOSPC
        f.write(b"x")
        f.flush()
    fault = storage_fault(RuntimeError("while saving"))
    assert fault is None
    wrapped = RuntimeError("saving a checkpoint failed")
    wrapped.__cause__ = full.value
    fault = storage_fault(wrapped)
    assert isinstance(fault, StorageUnavailable) and fault.kind == "full"
    assert fault.http_code == 503 and fault.status == "UNAVAILABLE"
    assert "out of storage space" in fault.message
    ro = storage_fault(OSError(errno.EROFS, "Read-only file system", "/srv/tunelab/x"))
    assert ro.kind == "read-only" and "/srv" not in ro.message

