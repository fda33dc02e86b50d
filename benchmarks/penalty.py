# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The penalty alone at Llama-2-7B MLP shapes (d = 11008): time, largest tensor, and the two Gram forms (docs/benchmarks.md).

For n in `--rows` (default 16, 64, 4096), both targets (`samples`, `features`) and fp32 / bf16 inputs: the median
time of forward + backward of `decorrelation_penalty(z, normalize=True, reduction="mean")`, and the largest tensor any
operation produced (recorded with a `TorchDispatchMode`), which must stay far below d x d. For n = 16 the value is
also computed from the d x d Gram built explicitly in float64 (the form the library never builds) and compared.

    python -m benchmarks.penalty                     # CPU, from the repository root
    python -m benchmarks.penalty --device cuda       # GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def largest_tensor(fn):
    """Run fn() and return the number of elements of the largest tensor produced by any aten op."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Record.largest = max(Record.largest, t.numel())
            return out

    with Record():
        fn()
    return Record.largest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=11008)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    import torch

    from trl_decpo.penalty import decorrelation_penalty

    if args.threads:
        torch.set_num_threads(args.threads)
    d = args.d
    for n in args.rows:
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(n)
            base = torch.randn(n, d, device=args.device).to(dtype)
            for target in ("samples", "features"):

                def run(base=base, target=target):  # bound now: `run` is called within this iteration only
                    z = base.clone().requires_grad_(True)
                    value = decorrelation_penalty(z, normalize=True, reduction="mean", target=target)
                    value.backward()
                    return value

                run()  # warm-up
                times = []
                for _ in range(args.repeats if n < 1024 else 1):
                    start = time.perf_counter()
                    run()
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                largest = largest_tensor(run)
                record = {
                    "benchmark": "penalty",
                    "n": n,
                    "d": d,
                    "dtype": str(dtype).split(".")[-1],
                    "target": target,
                    "median_s": statistics.median(times),
                    "largest_tensor_elements": largest,
                    "largest_vs_input": largest / (n * d),
                    "d_by_d_elements": d * d,
                    "device": args.device,
                    "threads": torch.get_num_threads(),
                }
                if n == min(args.rows) and dtype == torch.float32:
                    x = base.double()
                    if target == "samples":
                        u = x / x.norm(dim=1, keepdim=True)
                        explicit = ((u @ u.T - torch.eye(n, dtype=x.dtype, device=x.device)) ** 2).sum() / n**2
                    else:  # the d x d correlation matrix, built once here as the reference
                        v = x - x.mean(0)
                        v = v / v.norm(dim=0)
                        explicit = ((v.T @ v - torch.eye(d, dtype=x.dtype, device=x.device)) ** 2).sum() / d**2
                    value = float(decorrelation_penalty(base, normalize=True, reduction="mean", target=target))
                    record["explicit_gram_value"] = float(explicit)
                    record["library_value"] = value
                    record["relative_difference"] = abs(value - float(explicit)) / abs(float(explicit))
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
