#!/bin/sh
# The wheels benchmarks/gpu_qlora.py needs on a GPU machine that has torch, transformers, peft and accelerate but no
# package index (this workplace's device machine, Python 3.12): into .whl/ (ignored by git), to carry there.
set -e
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
for spec in trl==1.16.0 transformers==5.23.0 bitsandbytes==0.50.2 datasets==5.2.0 dill multiprocess; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
