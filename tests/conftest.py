"""pytest's hooks and fixtures: the environment of every test (offline, no telemetry), the `tokenizer` and `dataset`
fixtures, and the slow tier's marks (tests/tiers.py). Shared helpers are in tests/helpers.py."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest

from tests.helpers import make_dataset, make_tokenizer
from tests.tiers import is_slow, tier_key


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def dataset():
    return make_dataset()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects (pytest's own hook)
def pytest_collection_modifyitems(config, items):
    for item in items:
        key = tier_key(item)
        if key is not None and is_slow(*key):
            item.add_marker(pytest.mark.slow)
