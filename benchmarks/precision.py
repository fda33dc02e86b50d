# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""bf16 against float32 on this CPU, at SmolLM2-135M's MLP shape: why `--precision auto` trains in float32 on a CPU
without native bf16 (docs/benchmarks.md, "Precision on the CPU").

Times, median of `--repeats` after a warm-up: a plain matmul (`--tokens` x 576 by 576 x 1536) in float32 and in
bf16, and an `nn.Linear` of that shape in float32 and under CPU bf16 autocast (what `bf16=True` training runs). Prints
one JSON line per case, then what `trl_decpo.choose_precision("auto")` picks on this CPU and why.

    python -m benchmarks.precision --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=512, help="rows of the activations (tokens in a batch)")
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    from trl_decpo.precision import choose_precision, cpu_has_native_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.tokens, args.hidden, generator=generator)
    w = torch.randn(args.hidden, args.intermediate, generator=generator)
    linear = torch.nn.Linear(args.hidden, args.intermediate)
    xb, wb = x.bfloat16(), w.bfloat16()

    def under_autocast():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            linear(x)

    cases = {
        "matmul float32": lambda: x @ w,
        "matmul bf16": lambda: xb @ wb,
        "nn.Linear float32": lambda: linear(x),
        "nn.Linear bf16 autocast": under_autocast,
    }
    shape = f"{args.tokens}x{args.hidden} @ {args.hidden}x{args.intermediate}"
    common = dict(
        shape=shape,
        threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        native_bf16=cpu_has_native_bf16(),
    )
    with torch.no_grad():
        for name, fn in cases.items():
            print(json.dumps({"case": name, "ms": round(median_ms(fn, args.repeats), 2), **common}), flush=True)
    print(choose_precision("auto").describe())


if __name__ == "__main__":
    main()
