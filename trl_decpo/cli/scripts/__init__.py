# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The training scripts, one per TRL trainer, in the shape of TRL's ``trl/scripts/dpo.py`` (what they share:
:mod:`.common`); ``trl-decpo NAME``, ``python -m trl_decpo.cli.scripts.NAME`` and ``accelerate launch`` run them."""
