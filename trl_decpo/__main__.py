# Copyright 2026 The trl-decpo authors. Licensed under the Apache License, Version 2.0.
"""``python -m trl_decpo`` runs the ``trl-decpo`` command line."""

from .cli import main


raise SystemExit(main())
