# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""Notices held back where they do not apply.

* bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community ... pip install kernels", logged once when
  importing TRL imports it (on CPUs with AVX512-BF16), whatever the command: let out when a model is loaded in 4-bit.
* ``accelerate launch``'s list of the defaults it filled in (one process, one machine, no mixed precision, no dynamo),
  on every run without an accelerate config: kept only when it says it turned multi-GPU training on.
"""

from __future__ import annotations

import logging


BITSANDBYTES_LOGGER = "bitsandbytes.backends.cpu.ops"
NOTICE_PREFIX = "Failed to load CPU gemm_4bit_forward"


class _HoldBack(logging.Filter):
    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(NOTICE_PREFIX):
            self.held.append(record)
            return False
        return True


_FILTER = _HoldBack()


def hold_bitsandbytes_notice() -> None:
    """Hold back bitsandbytes' CPU-kernel notice (call before anything imports bitsandbytes)."""
    logging.getLogger(BITSANDBYTES_LOGGER).addFilter(_FILTER)


def release_bitsandbytes_notice() -> None:
    """4-bit is asked for: stop holding the notice back, and emit it if it was held."""
    logger = logging.getLogger(BITSANDBYTES_LOGGER)
    logger.removeFilter(_FILTER)
    held, _FILTER.held = _FILTER.held, []
    for record in held:
        logger.handle(record)


def quiet_launch_defaults() -> None:
    """Hold back ``accelerate launch``'s list of filled-in defaults unless it turned multi-GPU training on."""
    logging.getLogger("accelerate.commands.launch").addFilter(
        lambda record: "defaults used instead" not in (text := record.getMessage()) or "More than one GPU" in text
    )
