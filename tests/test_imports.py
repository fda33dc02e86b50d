"""`import trl_decpo` and `trl-decpo --help` load neither torch nor TRL; every public name still imports."""

import importlib
import json
import os
import subprocess
import sys

import pytest

import trl_decpo


PUBLIC = [  # every name `from trl_decpo import ...` offers, in the order of the package's one-screen list
    *("PAPER_RECIPE", "DecPOConfig", "DecPOTrainer", "DecorrelatedGRPOConfig", "DecorrelatedGRPOTrainer"),
    *("DecorrelatedKTOConfig", "DecorrelatedKTOTrainer", "DecorrelatedRLOOConfig", "DecorrelatedRLOOTrainer"),
    *("DecorrelatedRewardConfig", "DecorrelatedRewardTrainer", "DecorrelatedSFTConfig", "DecorrelatedSFTTrainer"),
    *("DecorrelationArguments", "DecorrelationMixin", "decorrelation_penalty"),
    *("MonosemanticityCallback", "MonosemanticityReport", "ProxyAccumulator", "compare_monosemanticity"),
    *("activation_sparsity",),
    *("decorrelation_control", "feature_decorrelation", "load_prompts", "measure_monosemanticity"),
    *("participation_ratio", "top_tokens", "weight_proxy", "weighted_control", "weighted_feature_decorrelation"),
    *("SAESettings", "load_sae", "sae_report", "sparse_probing", "train_sae"),
    *("evaluate_model", "evaluate_models", "proxy_differences"),
    *("dpo_pair_rewards", "generate_completions", "load_scorer", "paired_bootstrap", "preference_logps"),
    *("weighted_mean", "choose_precision"),
]
HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")


def run_python(code: str) -> dict:
    """Run `code` in a fresh interpreter (nothing imported yet) and return the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_public_name_imports_from_the_package():
    assert trl_decpo.__all__ == PUBLIC and set(PUBLIC) <= set(dir(trl_decpo))
    for name in PUBLIC:
        namespace = {}
        exec(f"from trl_decpo import {name}", namespace)
        module = importlib.import_module(f"trl_decpo.{trl_decpo._EXPORTS[name]}")
        assert namespace[name] is getattr(module, name) is getattr(trl_decpo, name), name
    with pytest.raises(AttributeError, match="has no attribute 'DecPOTrainr'"):
        trl_decpo.DecPOTrainr  # noqa: B018


def test_import_and_the_command_help_load_no_heavy_library():
    result = run_python(
        "import contextlib, io, json, sys\n"
        "import trl_decpo\n"
        f"after_import = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "from trl_decpo.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    status = main(['--help'])\n"
        f"after_help = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps(dict(imported=after_import, help=after_help, status=status, text=out.getvalue(),\n"
        "                      version=trl_decpo.__version__)))\n"
    )
    assert result["imported"] == [] and result["help"] == [], result
    assert result["status"] == 0 and result["version"] == trl_decpo.__version__
    for command in ("train", "measure", "compare", "top-tokens", "evaluate"):
        assert command in result["text"]


def test_a_name_loads_its_libraries_when_first_used():
    result = run_python(
        "import json, sys\nfrom trl_decpo import decorrelation_penalty\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert "torch" in result and "trl" not in result  # the penalty is tensor math: torch, not TRL


def test_the_console_script_answers_help():
    script = os.path.join(os.path.dirname(sys.executable), "trl-decpo")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: trl-decpo" in done.stdout and "top-tokens" in done.stdout
    assert "gemm_4bit_forward" not in done.stderr
