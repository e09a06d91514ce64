"""A plain PEFT training loop, the one a user would write from the PEFT and transformers docs.

The model is loaded in fp32 with ``AutoModelForCausalLM.from_pretrained``, wrapped with
``get_peft_model``; the batches are the ones every contender trains (``data.planned_steps``),
each padded to its longest example, the loss is transformers' own (``labels`` = the ids, -100 on
prompt and padding tokens), then ``torch.optim.AdamW`` (no weight decay, constant rate) after
clipping the gradient norm to 1.0, as the other contenders do. ``bf16=True`` runs the forward under
``torch.autocast(dtype=torch.bfloat16)``: the weights stay fp32 and are cast at every step.

Timed: the whole loop (building each batch's tensors, forward, backward, clipping, optimizer
step), after one untimed forward + backward. The adapter is saved (``save_pretrained``) after it.
"""

from __future__ import annotations

import time

from bench.throughput.contenders import Setup, lora_config
from bench.throughput.data import Workload, fingerprint, planned_steps
from bench.throughput.measure import Result, steps_per_epoch, warm_up


def run(workload: Workload, setup: Setup, *, bf16: bool) -> Result:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(setup.threads)
    model = AutoModelForCausalLM.from_pretrained(workload.model_path, dtype=torch.float32)
    model.to(setup.device)
    torch.manual_seed(setup.seed)
    model = get_peft_model(model, lora_config())
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=setup.learning_rate, weight_decay=0.0)
    device_type = torch.device(setup.device).type

    def autocast() -> torch.autocast:
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)

    with autocast():
        warm_up(model, setup.device)
    sequences = workload.sequences
    step_losses: list[float] = []
    steps: list[list[tuple[list[int], int]]] = []
    batches = planned_steps(sequences, setup.epochs, setup.batch_size, setup.seed)
    t0 = time.perf_counter()
    for batch in batches:
        width = max(len(s.ids) for s in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)  # 0: any id, masked
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for r, s in enumerate(batch):
            n, p = len(s.ids), len(s.prompt_ids)
            input_ids[r, :n] = torch.tensor(s.ids)
            attention_mask[r, :n] = 1
            labels[r, p:n] = input_ids[r, p:n]
        steps.append([(s.ids, len(s.prompt_ids)) for s in batch])
        with autocast():
            loss = model(input_ids=input_ids.to(setup.device),
                         attention_mask=attention_mask.to(setup.device),
                         labels=labels.to(setup.device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_losses.append(loss.item())
    train_seconds = time.perf_counter() - t0
    model.save_pretrained(setup.adapter_dir)

    return Result(
        contender="plain-bf16" if bf16 else "plain-fp32",
        precision="bf16 autocast" if bf16 else "fp32",
        settings={"optimizer": "torch.optim.AdamW", "gradient checkpointing": False,
                  "learning rate": "constant"},
        tokens=sum(len(ids) for step in steps for ids, _ in step),
        examples=sum(len(step) for step in steps),
        steps=len(step_losses),
        steps_per_epoch=steps_per_epoch(len(sequences), setup.batch_size),
        train_seconds=train_seconds,
        step_losses=step_losses,
        fingerprint=fingerprint(steps),
        threads=torch.get_num_threads(),
    )
