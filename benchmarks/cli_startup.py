# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""How long `trl-decpo` takes before it does anything (docs/benchmarks.md): `trl-decpo --help` (target: under 2 s),
`import trl_decpo`, and a command's `--help` (answered by the command's parser, after importing torch, TRL and
transformers, as `trl dpo --help` is; no target).

Each case runs `--repeats` times, each in a fresh interpreter (`python -m trl_decpo ...` from `--root`, so that
`--root` can time another checkout, e.g. a git worktree of an earlier commit, with the same interpreter); the median
and the fastest wall time are reported, the median CPU time (user + system, which other jobs on a shared machine do not
inflate), and whether bitsandbytes' "Failed to load CPU gemm_4bit_forward" line came out.

    python -m benchmarks.cli_startup
    python -m benchmarks.cli_startup --root /tmp/earlier-checkout     # the same cases on another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "cli_help": ["-m", "trl_decpo", "--help"],
    "import": ["-c", "import trl_decpo"],
    "measure_help": ["-m", "trl_decpo", "measure", "--help"],
    "dpo_help": ["-m", "trl_decpo", "dpo", "--help"],
}
EXIT_STATUS = {}  # a case's exit status when not 0


def cpu_seconds() -> float:
    """User + system CPU time of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_case(argv: list[str], root: str, status: int = 0) -> tuple[float, float, str]:
    """Wall time and CPU time of `python ARGV` run from `root` (which must exit with `status`), and its stderr. The CPU
    time does not grow when other jobs share the machine; the wall time does."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    done = subprocess.run([sys.executable, *argv], cwd=root, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    if done.returncode != status:
        raise SystemExit(f"python {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return elapsed, cpu, done.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", default=ROOT, help="the checkout whose `trl_decpo` is timed (default: this one)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    for case in args.cases:
        times, cpu_times, notice = [], [], False
        for _ in range(args.repeats):
            elapsed, cpu, stderr = time_case(CASES[case], args.root, EXIT_STATUS.get(case, 0))
            times.append(elapsed)
            cpu_times.append(cpu)
            notice = notice or "gemm_4bit_forward" in stderr
        record = {
            "benchmark": "cli_startup",
            "case": case,
            "command": f"python {' '.join(CASES[case])}",
            "root": os.path.abspath(args.root),
            "repeats": args.repeats,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "cpu_median_s": statistics.median(cpu_times),
            "bitsandbytes_notice": notice,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
