# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""The training scripts, one per TRL trainer, each in the shape of TRL's own (``trl/scripts/dpo.py``): ``dpo``,
``sft``, ``kto``, ``reward``, each with ``make_parser(subparsers=None, prog=None)`` and ``main(script_args,
training_args, model_args, dataset_args)``; what they share is :mod:`.common`. ``trl-decpo NAME`` launches one through
accelerate as ``trl NAME`` does; ``python -m trl_decpo.cli.scripts.NAME`` and ``accelerate launch
trl_decpo/cli/scripts/NAME.py`` run it too."""

from trl_decpo.cli.notices import hold_bitsandbytes_notice


hold_bitsandbytes_notice()  # before the scripts import TRL (and so bitsandbytes): shown only for 4-bit models

SCRIPTS = ("dpo", "sft", "kto", "reward")
