# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The training scripts, one per TRL trainer, each in the shape of TRL's own (``trl/scripts/dpo.py``): ``dpo``,
``sft``, ``kto``, ``reward``, each with ``make_parser(subparsers=None, prog=None)`` and ``main(script_args,
training_args, model_args, dataset_args)``; what they share is :mod:`.common`. ``trl-decpo NAME`` launches one through
accelerate as ``trl NAME`` does; ``python -m trl_decpo.cli.scripts.NAME`` and ``accelerate launch
trl_decpo/cli/scripts/NAME.py`` run it too."""

SCRIPTS = ("dpo", "sft", "kto", "reward")
