"""bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install kernels" line (logged once when importing TRL
imports bitsandbytes, on CPUs with AVX512-BF16) comes out of `trl-decpo` only when a model is loaded in 4-bit; and
`accelerate launch`'s list of the defaults it filled in only when it turned multi-GPU training on."""

import json
import logging
import os
import subprocess
import sys

from tests.helpers import model_path
from trl_decpo.cli import notices


NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'."


def test_the_notice_is_held_back_and_let_out_on_release(caplog):
    logger = logging.getLogger(notices.BITSANDBYTES_LOGGER)
    with caplog.at_level(logging.WARNING):
        notices.hold_bitsandbytes_notice()
        try:
            logger.warning(NOTICE)
            logger.warning("another bitsandbytes warning")  # anything else passes
            assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]
        finally:
            notices.release_bitsandbytes_notice()
        assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning", NOTICE]
        logger.warning(NOTICE)  # once released, nothing is held back
        assert len(caplog.records) == 3


def trl_decpo(*argv):
    script = os.path.join(os.path.dirname(sys.executable), "trl-decpo")
    done = subprocess.run([script, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_command_without_4bit_prints_no_notice_and_one_with_4bit_does(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, bitsandbytes.functional as F; print(json.dumps(bool(F.has_avx512bf16())))",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    emitted_here = json.loads(done.stdout.strip().splitlines()[-1])  # bitsandbytes logs it on such CPUs only
    assert NOTICE in done.stderr if emitted_here else NOTICE not in done.stderr
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat\na dog ran fast\n")
    args = ["--prompts", str(prompts), "--device", "cpu", "--dtype", "float32", "--no_plot"]
    assert "gemm_4bit_forward" not in trl_decpo("measure", model_path(), *args)
    assert ("gemm_4bit_forward" in trl_decpo("measure", model_path("llama64"), *args, "--load_in_4bit", "true")) == (
        emitted_here
    )


def test_accelerate_launch_lists_its_defaults_only_when_it_turned_multi_gpu_training_on(caplog):
    logger = logging.getLogger("accelerate.commands.launch")
    defaults = "The following values were not passed to `accelerate launch` and had defaults used instead:\n"
    filters = list(logger.filters)
    try:
        notices.quiet_launch_defaults()
        with caplog.at_level(logging.WARNING):
            logger.warning(defaults + "\t`--num_machines` was set to a value of `1`")
            logger.warning(defaults + "\t\tMore than one GPU was found, enabling multi-GPU training.")
            logger.warning("anything else")
    finally:
        logger.filters = filters
    assert [r.getMessage().splitlines()[-1].strip() for r in caplog.records] == [
        "More than one GPU was found, enabling multi-GPU training.",
        "anything else",
    ]
