# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""What `decorrelation_across_ranks=True` costs: the penalty's forward and backward on each rank's own rows against the
same on the rows of every rank gathered with their gradient (`trl_decpo.capture.ranks.gather_rows`), per rows per rank
and width. Launched with torchrun (gloo on CPUs, NCCL on GPUs):

    torchrun --nproc_per_node 2 -m benchmarks.across_ranks            # 2 CPU processes
    torchrun --nproc_per_node 8 -m benchmarks.across_ranks --device cuda

Rank 0 prints one JSON line per shape: the median milliseconds of `local` and `gathered` over `--repeats` (after a
warm-up), and their ratio. The penalty is a small part of a training step (docs/benchmarks.md); this measures the
option's own overhead, the collective included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2, 4, 16], help="rows per rank")
    parser.add_argument("--widths", type=int, nargs="+", default=[1536, 11008])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch
    import torch.distributed as dist

    from trl_decpo import decorrelation_penalty
    from trl_decpo.capture.ranks import gather_rows

    torch.set_num_threads(1)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank = dist.get_rank()
    device = torch.device(args.device, int(os.environ.get("LOCAL_RANK", 0))) if args.device == "cuda" else "cpu"

    def once(z, gather):
        z = z.clone().requires_grad_(True)
        decorrelation_penalty(gather_rows(z) if gather else z).backward()
        if args.device == "cuda":
            torch.cuda.synchronize()

    for width in args.widths:
        for rows in args.rows:
            torch.manual_seed(rank)
            z = torch.randn(rows, width, device=device)
            times = {}
            for name, gather in (("local", False), ("gathered", True)):
                once(z, gather)  # warm-up
                runs = []
                for _ in range(args.repeats):
                    dist.barrier()
                    start = time.perf_counter()
                    once(z, gather)
                    runs.append(time.perf_counter() - start)
                times[name] = statistics.median(runs) * 1000
            if rank == 0:
                record = {"world": dist.get_world_size(), "rows_per_rank": rows, "width": width, "device": args.device}
                record.update({f"{k}_ms": round(v, 3) for k, v in times.items()})
                record["ratio"] = round(times["gathered"] / times["local"], 2)
                print(json.dumps(record), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
