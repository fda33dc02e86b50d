"""The scripts: `examples/` (short user scripts, each run as `python examples/NAME.py` with only trl_decpo installed)
and the `research` package (report scripts, run as `python -m research.NAME` from the repository root)."""

import importlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from argparse import Namespace

import pytest
import yaml

from tests.helpers import PAIRS, make_model, make_tokenizer, model_path


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_research(name):
    """`research.NAME` (the repository root is on the test path: pyproject.toml's `pythonpath`)."""
    return importlib.import_module(f"research.{name}")


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p, "chosen": " " + c, "rejected": " " + r}) for p, c, r in PAIRS))
    return str(path)


def test_scripts_do_not_edit_sys_path_or_import_each_other():
    scripts = {
        folder: sorted(f for f in os.listdir(os.path.join(ROOT, folder)) if f.endswith(".py"))
        for folder in ("examples", "research", "benchmarks")
    }
    example_names = {f[:-3] for f in scripts["examples"]}
    for folder, files in scripts.items():
        for name in files:
            with open(os.path.join(ROOT, folder, name), encoding="utf-8") as f:
                text = f.read()
            assert "sys.path" not in text, f"{folder}/{name}"
            if folder == "examples":
                imported = set(re.findall(r"^\s*(?:from|import)\s+([\w.]+)", text, flags=re.M))
                assert not imported & (example_names | {"research", "benchmarks"}), f"{folder}/{name}: {imported}"


def test_examples_import_only_the_public_api():
    """An example is what a user copies: `from trl_decpo import ...` and `trl_decpo.testing`, nothing internal."""
    import ast

    import trl_decpo

    for name in sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")):
        with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trl_decpo"):
                names = {alias.name for alias in node.names}
                if node.module not in ("trl_decpo", "trl_decpo.testing"):
                    modules.append(f"{node.module} ({', '.join(sorted(names))})")
                assert node.module != "trl_decpo" or names <= set(trl_decpo.__all__), (name, names)
            internal = [m for m in modules if m.startswith("trl_decpo") and not m.startswith("trl_decpo.testing")]
            assert not internal, f"examples/{name} imports {internal}"


def test_dpo_to_decpo_runs_as_a_script(tmp_path):
    """examples/dpo_to_decpo.py as a user runs it: its own process, outside the repository, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = os.path.join(EXAMPLES, "dpo_to_decpo.py")
    done = subprocess.run(
        [sys.executable, script, "--steps", "2", "--output-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logged = re.findall(r"^step (\d+): loss (\S+) = DPO loss (\S+) \+ 1 x penalty (\S+)$", done.stdout, re.M)
    assert [int(step) for step, *_ in logged] == [1, 2], done.stdout
    for _, loss, dpo_loss, penalty in logged:
        assert 0 < float(penalty) < float("inf") and 0 < float(dpo_loss)
        assert float(loss) == pytest.approx(float(dpo_loss) + float(penalty), abs=2e-4)


@pytest.mark.parametrize("kind", ["checkpoint", "adapter"])
def test_measure_checkpoint_prints_one_row_per_layer(tmp_path, capsys, kind):
    path = model_path()
    if kind == "adapter":  # saved without its tokenizer: the script takes the base model's
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=4, target_modules=["up_proj"], init_lora_weights=False)
        get_peft_model(make_model(), lora).save_pretrained(tmp_path / "adapter")
        path = str(tmp_path / "adapter")
    prompts = tmp_path / "p.txt"
    prompts.write_text("the cat sat\na dog ran fast\ni think so\nyes i agree\n")
    report = load_example("measure_checkpoint").main([path, "--prompts", str(prompts)])
    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\d+)\s+([\d.]+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3] == report.layers  # the tiny model's 4 layers
    assert [float(r[2]) for r in rows] == pytest.approx([report.fd[i] for i in range(4)], abs=1e-6)
    assert f"{path}: 4 prompts" in out


def test_the_qlora_example_on_a_tiny_model(tmp_path, pairs_file, capsys):
    """examples/decpo_qlora_llama2.py with its YAML (4-bit NF4 + LoRA + DecPO + non-reentrant checkpointing), only
    the model, data, precision, size and Hub options swapped for a CPU test."""
    example = load_example("decpo_qlora_llama2")
    with open(example.CONFIG) as f:
        config = yaml.safe_load(f)  # (parsing it whole needs a GPU: bf16)
    assert config["load_in_4bit"] and config["bnb_4bit_quant_type"] == "nf4" and config["use_peft"]
    assert config["lora_target_modules"] == ["q_proj", "v_proj", "up_proj"]
    assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"]) == (8, 16, 0.05)
    assert config["activation_checkpointing"] and config["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert (config["beta"], config["bf16"], config["push_to_hub"]) == (0.1, True, True)
    assert config["decorrelation_layers"] == [10] and "Llama-2-7b" in config["model_name_or_path"]
    trainer = example.main(
        [
            "--model_name_or_path",
            model_path("llama64"),
            "--dataset_name",
            pairs_file,
            "--test_split_size",
            "0.25",
            "--output_dir",
            str(tmp_path / "qlora"),
            "--dtype",
            "float32",
            "--push_to_hub",
            "false",
            "--decorrelation_layers",
            "1",
            "--eval_strategy",
            "no",
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "1",
            "--max_steps",
            "1",
            "--bf16",
            "false",
            "--use_cpu",
            "true",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
        ]
    )
    up_proj = trainer.model.base_model.model.model.layers[0].mlp.up_proj
    assert hasattr(up_proj.base_layer.weight, "quant_state")  # trained through 4-bit weights
    assert trainer.state.global_step == 1
    assert any("decorrelation/penalty" in h for h in trainer.state.log_history)
    assert "1 optimizer steps in" in capsys.readouterr().out


def test_reproduce_figures_script(tmp_path):
    import torch

    paths = []
    for name, shift in (("base", 0.0), ("dpo", 0.05), ("decpo", 0.1)):
        model = make_model()
        with torch.no_grad():
            model.model.layers[1].mlp.up_proj.weight.add_(shift)
        model.save_pretrained(tmp_path / name)
        make_tokenizer().save_pretrained(tmp_path / name)
        paths.append(str(tmp_path / name))
    prompts = tmp_path / "p.txt"
    prompts.write_text("the cat sat\na dog ran fast\ni think so\nyes i agree\n")
    out = tmp_path / "figs"
    load_example("reproduce_figures").main([*paths, "--prompts", str(prompts), "--output-dir", str(out)])
    for name in ("fig_fd_by_depth.png", "fig_fd_relative_change.png", "fig_sparsity_difference.png", "compare.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    result = json.load(open(out / "compare.json"))
    assert list(result["measurements"]) == ["base", "dpo", "decpo"]
    fd = {n: [e["fd"] for e in m["layers"]] for n, m in result["measurements"].items()}
    assert fd["base"][0] == fd["decpo"][0] and fd["base"][1] != fd["decpo"][1]  # only layer 1 onwards changed


def test_heldout_probe_fd_is_the_library_fd(dataset, tokenizer):
    """research.heldout.probe (the FD columns of docs/defaults.md) reads the last prompt token from the chosen
    sequences of a preference batch; its FD per layer is `measure_monosemanticity`'s on the prompts alone."""
    from trl_decpo import measure_monosemanticity

    heldout = load_research("heldout")
    model = make_model()
    out = heldout.probe(model, tokenizer, dataset, Namespace(eval_batch_size=4, beta=0.1))
    report = measure_monosemanticity(model, list(dataset["prompt"]), tokenizer)
    assert out["fd_per_layer"] == pytest.approx([round(report.fd[i], 5) for i in range(4)], abs=2e-5)
    assert out["fd_hooked"] == pytest.approx(report.fd[1], abs=1e-6)  # layer 4 // 3
    assert out["penalty_hooked"] > 0 and 0 <= out["pref_acc"] <= 1
    rewards = heldout.dpo_rewards(out["logps"], out["logps"], beta=0.1)  # against itself: every reward is 0
    assert rewards["heldout_margin"] == 0 and rewards["heldout_reward_acc"] == 0


def test_sft_then_decpo_runs_as_a_script(tmp_path):
    """examples/sft_then_decpo.py as a user runs it (its own process, outside the repository, offline, the tiny
    model): base, SFT and DecPO are measured; SFT logged its penalty; DecPO trained a fresh adapter on the merged SFT
    weights, which differ from the base; measuring the saved models again gives the printed values."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_decpo import measure_monosemanticity

    out = tmp_path / "out"
    script = os.path.join(EXAMPLES, "sft_then_decpo.py")
    # 6 of the 8 toy prompts are the probes; bf16 on purpose (tiny matmuls: fast even without native bf16)
    steps = ["--sft-steps", "2", "--decpo-steps", "2", "--heldout", "0.75", "--precision", "bf16"]
    done = subprocess.run(
        [sys.executable, script, *steps, "--output-dir", str(out)],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DecPO's adapter sits on the SFT weights: True" in done.stdout
    results = json.loads((out / "results.json").read_text())
    stages = results["stages"]
    assert list(stages) == ["base", "sft", "decpo"] and results["layers"] == [1]  # 4 layers // 3
    assert len(results["probes"]) == 6
    for stage in stages.values():
        (row,) = stage["layers"]
        assert row["layer"] == 1
        assert all(math.isfinite(row[k]) for k in ("fd", "control", "participation_ratio", "sparsity")), row
    for name, own_loss in (("sft", "decorrelation/sft_loss"), ("decpo", "decorrelation/dpo_loss")):
        logs = stages[name]["logs"]
        assert [log["step"] for log in logs] == [1, 2]
        for log in logs:  # coefficient 1: TRL's loss is the stage's own loss + the penalty
            assert 0 < log["decorrelation/penalty"] < math.inf
            assert log["loss"] == pytest.approx(log[own_loss] + log["decorrelation/penalty"], abs=1e-4)
    assert stages["sft"]["weights"] != stages["base"]["weights"]  # SFT changed the weights...
    assert stages["decpo"]["start_weights"] == stages["sft"]["weights"]  # ...and the DecPO adapter sits on them
    assert len(results["differences"]) == 9  # (sft - base, decpo - sft, decpo - base) x (fd, control, sparsity)
    for d in results["differences"]:
        assert all(math.isfinite(d[k]) for k in ("a", "b", "difference", "low", "high")), d
        assert d["b"] == pytest.approx(stages[d["stages"].split(" - ")[0]]["layers"][0][d["metric"]], abs=1e-9)
    rewards = results["heldout_rewards"]
    assert rewards["pairs"] == 12 and 0 <= rewards["accuracy"]["b"] <= 1  # the 12 toy pairs of the probe prompts
    assert all(math.isfinite(v) for c in (rewards["accuracy"], rewards["margin"]) for v in (c["low"], c["high"]))

    # From the saved folders: the SFT model is the merged one, and the DecPO adapter sits on it
    base = AutoModelForCausalLM.from_pretrained(results["model"], dtype=torch.float32)
    sft = AutoModelForCausalLM.from_pretrained(out / "sft", dtype=torch.float32)
    changed = [k for k, v in sft.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(".layers." in k for k in changed), changed  # LoRA on the decoder's linear layers
    adapter = json.loads((out / "decpo" / "adapter_config.json").read_text())
    assert os.path.samefile(adapter["base_model_name_or_path"], out / "sft")
    tokenizer = AutoTokenizer.from_pretrained(out / "sft")
    for name, model in (("sft", sft), ("decpo", None)):
        model = model or PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "sft"), out / "decpo")
        report = measure_monosemanticity(model, results["probes"], tokenizer, layers=[1])
        assert report.fd[1] == pytest.approx(stages[name]["layers"][0]["fd"], abs=1e-6)
        assert report.control[1] == pytest.approx(stages[name]["layers"][0]["control"], abs=1e-6)


def test_assets_main_prints_only_the_model_folder(tmp_path, capsys):
    """`python -m research.assets` (the `make sft-then-decpo` step): the folder alone on stdout, progress on stderr.
    An already prepared copy in the cache folder stands in for the GGUF conversion."""
    from trl_decpo.testing import tiny_model_dir

    folder = tiny_model_dir(folder=str(tmp_path / "smollm2"))
    assets = load_research("assets")
    assert assets.main(["--model-source", "gguf", "--cache-dir", folder]) == folder
    captured = capsys.readouterr()
    assert captured.out == folder + "\n" and "[model] gguf:" in captured.err
    path = assets.main(["--cache-dir", folder])  # auto: the Hub copy when cached, else this folder (offline here)
    captured = capsys.readouterr()
    assert captured.out == path + "\n" and os.path.isdir(path)


def test_the_gpu_qlora_check_passes_on_a_tiny_cpu_model_and_fails_a_penalty_without_gradient(tmp_path):
    """`python -m benchmarks.gpu_qlora --tiny` runs the QLoRA example three times (DPO, DecPO, DecPO under reentrant
    checkpointing) as processes on a small CPU model and passes every check; the same checks fail when the reentrant
    run's LoRA weights are DPO's (a penalty that reached no weight)."""
    from benchmarks import gpu_qlora

    out = tmp_path / "gpu"
    argv = ["--tiny", "--out", str(out), "--steps", "2", "--batch", "4", "--pairs", "24"]
    code = gpu_qlora.main([*argv, "--penalty-rows", "64", "--penalty-width", "48", "--probes", "40"])
    report = (out / "gpu_qlora.md").read_text()
    assert code == 0 and report.count("- PASS") >= 7 and "FAIL" not in report, report
    assert "| decpo / dpo |" in report and "on 40 probes" in report and "float32, features" in report
    results = json.loads((out / "gpu_qlora.json").read_text())["runs"]
    first = {name: r["logs"][0] for name, r in results.items()}
    assert first["decpo_reentrant"]["decorrelation/penalty"] == pytest.approx(first["decpo"]["decorrelation/penalty"])
    assert "decorrelation/penalty" not in first["dpo"]  # coefficient 0: DPOTrainer itself
    import torch

    lora = {"lora_A": torch.ones(2, 2), "lora_B": torch.ones(2, 2)}
    fake = {
        name: {"logs": [first[name]], "lora": {k: v * (1.0 if name != "decpo" else 2.0) for k, v in lora.items()}}
        for name in ("dpo", "decpo", "decpo_reentrant")
    }  # the reentrant run's weights equal DPO's, not DecPO's
    verdicts = {text.split(" (")[0]: ok for text, ok in gpu_qlora.checks(fake)}
    assert not verdicts["reentrant LoRA weights near the non-reentrant run's"]
