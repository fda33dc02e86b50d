# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The main job evaluates every arm in float32, as it does the base model: after a bf16 run, accelerate's autocast
wrapper is set aside (`research.arms.float32_forward`, which relies on accelerate keeping `_original_forward`)."""

import json
import os
import subprocess
import sys

from tests.helpers import model_path


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CODE = """
import json, torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM
from research.arms import float32_forward

path = {path!r}
ids = torch.arange(3, 19).reshape(2, 8)
plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
prepared = Accelerator(mixed_precision="bf16", cpu=True).prepare(
    AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
).eval()
with torch.no_grad():
    want = plain(input_ids=ids).logits
    autocast = prepared(input_ids=ids).logits
    with float32_forward(prepared) as model:
        inside = model(input_ids=ids).logits
    after = prepared(input_ids=ids).logits
print(json.dumps(dict(
    wrapped="_original_forward" in prepared.__dict__,
    autocast_differs=not torch.equal(autocast.float(), want),
    inside_equal=torch.equal(inside, want),
    after_is_autocast_again=torch.equal(after, autocast),
)))
"""


def test_float32_forward_sets_the_bf16_autocast_wrapper_aside_for_the_block(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CODE.format(path=model_path("llama", 2))],
        cwd=ROOT,  # `research` is imported from the repository root
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["wrapped"], (
        "accelerate no longer keeps `_original_forward`: research.arms.float32_forward must follow"
    )
    assert result["autocast_differs"]  # the wrapper changes what the model computes ...
    assert result["inside_equal"]  # ... the block gives the float32 result exactly ...
    assert result["after_is_autocast_again"]  # ... and training goes on under autocast afterwards
