"""`trl-decpo measure / compare / top-tokens` on tiny saved models."""

import ast
import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from trl import ModelConfig

from tests.helpers import gpt2_with_biases, make_model, make_tokenizer, model_path, plant
from trl_decpo import measure_monosemanticity
from trl_decpo.cli import main
from trl_decpo.monosemanticity import compare_monosemanticity
from trl_decpo.monosemanticity.tables import report_summary, report_table


PROMPTS = ["the cat sat on the mat", "a dog ran fast", "i think you are very good", "yes", "is the cat happy"]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return str(path)


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def table_rows(stdout):
    """Lines of the table body: those that start with a number after the dashed separator."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"})
    body = []
    for line in lines[start + 1 :]:
        if not line.strip() or not (
            line.split()[0].lstrip("-").replace(".", "").isdigit()
            or "#" in line
            or line.split()[0].startswith("tiny")
            or line.split()[0] in ("base", "tuned")
        ):
            break
        body.append(line.split())
    return body


def test_measure(tmp_path, prompts_file, capsys):
    out = tmp_path / "measure"
    assert (
        main(
            [
                "measure",
                model_path(),
                "--prompts",
                prompts_file,
                "--output_dir",
                str(out),
                "--batch_size",
                "2",
                "--device",
                "cpu",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    rows = table_rows(stdout)
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    result = json.load(open(out / "monosemanticity.json"))
    expected = measure_monosemanticity(make_model(), PROMPTS, make_tokenizer())
    assert [e["fd"] for e in result["layers"]] == pytest.approx([expected.fd[i] for i in range(4)], abs=1e-6)
    assert [float(r[2]) for r in rows] == pytest.approx([expected.fd[i] for i in range(4)], rel=1e-5)
    with open(out / "monosemanticity.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert is_png(out / "monosemanticity.png")
    # the library's measurement with the same settings, printed and written as it is
    same = measure_monosemanticity(make_model(), PROMPTS, make_tokenizer(), batch_size=2)
    assert report_table(same).to_text() in stdout and report_summary(same) in stdout
    assert result == json.loads(json.dumps({"model": model_path(), **same.to_dict()}))


def test_measure_layers_and_no_output_dir(prompts_file, capsys):
    assert main(["measure", model_path(), "--prompts", prompts_file, "--layers", "1", "-1", "--no_plot"]) == 0
    assert [int(r[0]) for r in table_rows(capsys.readouterr().out)] == [1, 3]


def test_compare_with_peft_adapter_and_weight_proxy(tmp_path, prompts_file, capsys):
    base_dir, tuned_dir, adapter_dir = tmp_path / "base", tmp_path / "tuned", tmp_path / "adapter"
    base = gpt2_with_biases(seed=0)
    base.save_pretrained(base_dir)
    make_tokenizer().save_pretrained(base_dir)
    tuned = gpt2_with_biases(seed=0)
    with torch.no_grad():
        tuned.transformer.h[1].mlp.c_fc.weight[:, :10] += 1.0
    tuned.save_pretrained(tuned_dir)
    torch.manual_seed(0)
    adapter = get_peft_model(
        gpt2_with_biases(seed=0),
        LoraConfig(r=4, target_modules=["c_fc"], fan_in_fan_out=True, init_lora_weights=False),
    )
    adapter.save_pretrained(adapter_dir)
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(base_dir),
                str(tuned_dir),
                str(adapter_dir),
                "--prompts",
                prompts_file,
                "--output_dir",
                str(out),
                "--weight_proxy_top_k",
                "10",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    result = json.load(open(out / "compare.json"))
    assert result["base"] == "base" and list(result["measurements"]) == ["base", "tuned", "adapter"]
    m = result["measurements"]
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    for row in rows:
        layer = int(row["layer"])
        base_fd = m["base"]["layers"][layer]["fd"]
        tuned_fd = m[row["model"]]["layers"][layer]["fd"]
        assert float(row["fd_relative_change"]) == pytest.approx((tuned_fd - base_fd) / abs(base_fd), rel=1e-6)
    # what the library computes (the numbers themselves: tests/monosemanticity/test_compare.py), printed and written
    expected = compare_monosemanticity(
        str(base_dir), [str(tuned_dir), str(adapter_dir)], PROMPTS, weight_proxy_top_k=10, device="cpu",
        model_args=ModelConfig(dtype="auto"),
    )  # fmt: skip
    assert result == json.loads(json.dumps(expected.to_dict()))
    assert [row["weight_proxy_relative_change"] for row in rows] == [
        str(r["weight_proxy_relative_change"]) for r in expected.table().records()
    ]
    assert expected.to_text() in stdout and "weight_proxy_relative_change" in stdout
    assert m["adapter"]["layers"][1]["fd"] != pytest.approx(m["base"]["layers"][1]["fd"], abs=1e-6)
    assert is_png(out / "compare.png")


def test_top_tokens_planted(tmp_path, capsys):
    tokenizer = make_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids("happy")
    path = tmp_path / "planted"
    plant(make_model(), "llama", layer=2, neuron=7, token_id=token_id).save_pretrained(path)
    tokenizer.save_pretrained(path)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"prompt": p} for p in PROMPTS]))
    out = tmp_path / "top"
    assert (
        main(
            [
                "top-tokens",
                str(path),
                "--layer",
                "2",
                "--k",
                "3",
                "--num_tokens",
                "4",
                "--prompts",
                str(prompts),
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    first = table_rows(stdout)[0]
    assert first[:2] == ["1", "7"] and first[3] == "'happy'"
    saved = json.load(open(out / "top_tokens_layer2.json"))
    assert saved["dimensions"][0]["dimension"] == 7 and saved["dimensions"][0]["tokens"][0] == "happy"


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["measure", "MODEL", "--prompts", "PROMPTS", "--site", "mlp.nothing"],
            r"`site` 'mlp.nothing' matches no module.*mlp.up_proj",
        ),
        (["measure", "MODEL", "--prompts", "PROMPTS", "--layers", "4"], r"`layers` entry 4 is out of range.*-4\.\.3"),
        (["measure", "MODEL", "--prompts", "EMPTY"], "holds no prompts"),
        (["measure", "MODEL"], "`prompts` is required"),
        (["measure", "MODEL", "--prompts", "PROMPTS", "--batch_size", "0"], "`batch_size` must be a positive"),
        (["measure", "MODEL", "--prompts", "PROMPTS", "--device", "tpu"], "`device` must be 'auto', 'cpu'"),
        (["top-tokens", "MODEL", "--layer", "9", "--prompts", "PROMPTS"], r"`layer` entry 9 is out of range"),
        (["top-tokens", "MODEL", "--layer", "1"], "give exactly one of them"),
        (["compare", "MODEL", "--prompts", "PROMPTS"], "needs a BASE model and at least one TUNED"),
        (["compare", "MODEL", "MODEL", "--prompts", "PROMPTS", "--base_model", "MODEL"], "`base_model` is not used"),
        (["measure", "MODEL", "--prompts", "PROMPTS", "--max_samples", "1"], r"`max_samples` must be 0 \(all"),
        (["weigh", "MODEL"], r"invalid choice: 'weigh'.*dpo.*measure.*compare.*top-tokens.*evaluate"),
    ],
)
def test_clear_errors(tmp_path, prompts_file, capsys, argv, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    subst = {"MODEL": model_path(), "PROMPTS": prompts_file, "EMPTY": str(empty)}
    assert main([subst.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err, re.S), err


def test_help(capsys):
    for command in ("dpo", "measure", "compare", "top-tokens", "evaluate"):
        assert main([command, "--help"]) == 0
        stdout = capsys.readouterr().out
        assert f"trl-decpo {command}" in stdout and "--dtype" in stdout and "--load_in_4bit" in stdout
        assert ("--decorrelation_coef" in stdout) == (command == "dpo")
        if command != "dpo":  # the loading options of TRL's ModelConfig, and those it lacks
            assert all(f"--{o} " in stdout for o in ("model_revision", "attn_implementation", "device", "base_model"))
    assert main([]) == 0
    assert "top-tokens" in capsys.readouterr().out


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def imported_modules(path: str) -> set[str]:
    """The modules a Python file imports, relative imports resolved against its package."""
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".").split(".")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return found


def test_nothing_outside_the_command_line_imports_it():
    """The library, the research scripts, the examples and the benchmarks call library functions; `trl_decpo.cli` is
    the command line's application code (`trl_decpo/__main__.py`, `python -m trl_decpo`, is the command itself)."""
    offenders = []
    for folder in ("trl_decpo", "research", "examples", "benchmarks"):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            if os.path.relpath(directory, ROOT).replace(os.sep, "/").startswith("trl_decpo/cli"):
                continue
            for name in (f for f in files if f.endswith(".py")):
                path = os.path.join(directory, name)
                if os.path.relpath(path, ROOT) == os.path.join("trl_decpo", "__main__.py"):
                    continue
                cli = sorted(
                    m for m in imported_modules(path) if m == "trl_decpo.cli" or m.startswith("trl_decpo.cli.")
                )
                offenders += [f"{os.path.relpath(path, ROOT)}: {', '.join(cli)}"] if cli else []
    assert not offenders, "\n".join(offenders)
    assert imported_modules(os.path.join(ROOT, "trl_decpo", "cli", "compare.py")) >= {"trl_decpo.cli.loading"}


def test_installed_console_script():
    script = os.path.join(os.path.dirname(sys.executable), "trl-decpo")
    done = subprocess.run([script, "top-tokens", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--num_tokens" in done.stdout and "--base" in done.stdout


def test_load_options_are_trl_model_config_options():
    """The loading options are TRL's `ModelConfig` fields (dtype defaulting to the checkpoint's), checked at once; the
    models load through the library (tests/monosemanticity/test_loading.py)."""
    from trl import ModelConfig

    from trl_decpo.cli.loading import LoadArguments
    from trl_decpo.monosemanticity.loading import model_kwargs

    load = LoadArguments(load_in_4bit=True, bnb_4bit_quant_type="fp4", device="cpu")
    assert isinstance(load.model_config(), ModelConfig) and load.dtype == "auto"
    quantization = model_kwargs(load.model_config(), "cpu")["quantization_config"]  # trl.get_quantization_config's
    assert quantization.bnb_4bit_quant_type == "fp4" and quantization.bnb_4bit_compute_dtype == torch.float32
    assert load.loading()["model_args"].load_in_4bit and load.loading()["device"] == "cpu"
    with pytest.raises(ValueError, match=r"`dtype` must be one of \['auto', 'bfloat16', 'float16', 'float32'\]"):
        LoadArguments(dtype="float8")
    with pytest.raises(ValueError, match="8 bit and 4 bit"):
        LoadArguments(load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(ValueError, match="`device` must be 'auto', 'cpu'"):
        LoadArguments(device="tpu")


# ----------------------------------------------------------------------------------------------------------------------
# FD's control and probe pooling
# ----------------------------------------------------------------------------------------------------------------------

CHAT_TEMPLATE_MULTI = (  # "<eos> the answer is" after the last message's content: 4 constant tokens
    "{% for m in messages %}{% if m['role'] == 'user' %}question {{ m['content'] }} <eos> {% else %}the answer is "
    "{{ m['content'] }} <eos> {% endif %}{% endfor %}{% if add_generation_prompt %}the answer is {% endif %}"
)


def chat_models(tmp_path):
    """A tiny base model and a perturbed copy, saved with a tokenizer that has a chat template; chat prompts file."""
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE_MULTI
    paths = []
    for name, shift in (("base", 0.0), ("tuned", 0.05)):
        model = make_model()
        with torch.no_grad():
            model.model.layers[1].mlp.up_proj.weight.add_(shift)
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        paths.append(str(tmp_path / name))
    prompts = tmp_path / "chats.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": [{"role": "user", "content": p}]}) for p in PROMPTS))
    return paths, str(prompts), tokenizer


def test_measure_pooling_and_control_columns(tmp_path, prompts_file, capsys):
    out = tmp_path / "mean"
    argv = ["measure", model_path(), "--prompts", prompts_file, "--pooling", "mean", "--output_dir", str(out)]
    assert main([*argv, "--no_plot"]) == 0
    stdout = capsys.readouterr().out
    assert "pooling mean" in stdout and "mean control" in stdout
    result = json.load(open(out / "monosemanticity.json"))
    expected = measure_monosemanticity(make_model(), PROMPTS, make_tokenizer(), pooling="mean")
    assert result["pooling"] == "mean"
    for metric in ("fd", "control", "participation_ratio", "sparsity"):
        values = [e[metric] for e in result["layers"]]
        assert values == pytest.approx([getattr(expected, metric)[i] for i in range(4)], rel=1e-5), metric
    last = measure_monosemanticity(make_model(), PROMPTS, make_tokenizer())
    assert result["layers"][2]["fd"] != pytest.approx(last.fd[2], abs=1e-4)
    with open(out / "monosemanticity.csv") as f:
        assert list(csv.DictReader(f))[0].keys() >= {"fd", "control", "participation_ratio", "sparsity"}


def test_compare_chat_prompts_pool_at_their_content_by_default(tmp_path, capsys):
    (base, tuned), prompts, tokenizer = chat_models(tmp_path)
    chats = [json.loads(line)["prompt"] for line in open(prompts)]
    out = tmp_path / "cmp"
    assert main(["compare", base, tuned, "--prompts", prompts, "--output_dir", str(out), "--no_plot"]) == 0
    result = json.load(open(out / "compare.json"))
    measured = result["measurements"]
    assert measured["base"]["pooling"] == measured["tuned"]["pooling"] == "last_content"
    for name, path in (("base", base), ("tuned", tuned)):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        expected = measure_monosemanticity(model, chats, tokenizer, pooling="last_content")
        assert [e["control"] for e in measured[name]["layers"]] == pytest.approx(
            [expected.control[i] for i in range(4)], abs=1e-6
        )
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        layer = int(row["layer"])
        base_control = measured["base"]["layers"][layer]["control"]
        control = measured[row["model"]]["layers"][layer]["control"]
        assert float(row["control_relative_change"]) == pytest.approx(
            (control - base_control) / abs(base_control), rel=1e-6
        )
    assert float(rows[4 + 1]["control_relative_change"]) != 0.0  # tuned, layer 1 (perturbed)
    assert main(["compare", base, tuned, "--prompts", prompts, "--pooling", "last", "--no_plot"]) == 0
    assert "pooling last" in capsys.readouterr().out


def test_top_tokens_pooling(tmp_path):
    from trl_decpo import top_tokens

    tokenizer = make_tokenizer()
    path = tmp_path / "model"
    make_model().save_pretrained(path)
    tokenizer.save_pretrained(path)
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS))
    out = tmp_path / "top"
    argv = ["top-tokens", str(path), "--layer", "2", "--k", "5", "--prompts", str(prompts), "--output_dir", str(out)]
    assert main([*argv, "--pooling", "mean"]) == 0
    saved = json.load(open(out / "top_tokens_layer2.json"))
    assert "pooling mean" in saved["ranking"]
    for pooling in ("mean", "last"):
        expected = top_tokens(make_model(), tokenizer, 2, k=5, prompts=PROMPTS, pooling=pooling)
        dims = [d["dimension"] for d in saved["dimensions"]]
        assert (dims == [n.dimension for n in expected]) == (pooling == "mean")


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["measure", "MODEL", "--prompts", "PROMPTS", "--pooling", "first"],
            r"`pooling` must be one of \['auto', 'last', 'last_content', 'mean'\], got 'first'",
        ),
        (["compare", "MODEL", "MODEL", "--prompts", "PROMPTS", "--pooling", "first"], r"`pooling` must be one of"),
        (["top-tokens", "MODEL", "--layer", "1", "--base", "MODEL", "--pooling", "mean"], r"`pooling` \('mean'\)"),
    ],
)
def test_pooling_errors(prompts_file, capsys, argv, message):
    subst = {"MODEL": model_path(), "PROMPTS": prompts_file}
    assert main([subst.get(a, a) for a in argv]) == 2
    assert re.search(message, capsys.readouterr().err, re.S)


def test_pooling_help(capsys):
    for command in ("measure", "compare", "top-tokens"):
        assert main([command, "--help"]) == 0
        assert "--pooling" in capsys.readouterr().out


def test_compare_with_labels_and_a_base_model_sae(tmp_path, capsys):
    """`--labels` probes every model's rows per layer; `--sae_layer` trains one SAE (SAELens) on BASE's tokens, saves it
    beside the results, and scores every model with it; `--sae FOLDER` scores with that SAE instead."""
    pytest.importorskip("sae_lens")
    from transformers import AutoModelForCausalLM

    from trl_decpo import load_sae, sae_report, sparse_probing
    from trl_decpo.monosemanticity.tokens import token_activations

    prompts = tmp_path / "labelled.jsonl"
    rows = [("the cat sat on the mat", "animal"), ("a dog ran fast", "animal"), ("you are very good", "person")]
    rows += [("is the cat happy", "animal"), ("you are kind to me", "person"), ("she said yes to him", "person")]
    prompts.write_text("\n".join(json.dumps({"prompt": p, "topic": t}) for p, t in rows))
    base, tuned, out = model_path(), model_path("llama", 4, 1), tmp_path / "cmp"
    argv = ["compare", base, tuned, "--prompts", str(prompts), "--labels", "topic", "--no_plot"]
    assert main([*argv, "--sae_layer", "1", "--output_dir", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(tuned, dtype=torch.float32)
    tokens = token_activations(model, [p for p, _ in rows], make_tokenizer(), layers=[1])[1]
    assert f"SAE at layer 1, scored on {len(tokens)} token activations per model:" in capsys.readouterr().out
    result = json.load(open(out / "compare.json"))
    report = measure_monosemanticity(model, [p for p, _ in rows], make_tokenizer())
    expected = sparse_probing(report.rows(2), [t for _, t in rows])
    assert result["sparse_probing"]["llama-4-1"]["2"]["accuracy"]["1"] == pytest.approx(expected.accuracy[1])
    sae = load_sae(str(out / "sae"))  # saved in SAELens' format
    assert result["sae"]["llama-4-1"]["l0"] == pytest.approx(sae_report(sae, tokens).l0)
    again = tmp_path / "again"
    assert main([*argv, "--sae_layer", "1", "--sae", str(out / "sae"), "--output_dir", str(again)]) == 0
    reused = json.load(open(again / "compare.json"))["sae"]  # the same SAE, loaded: no training
    for name in ("llama-4-0", "llama-4-1"):
        assert reused[name] == pytest.approx(result["sae"][name], rel=1e-5)
    assert not (again / "sae").exists()
    assert main([*argv, "--sae", str(out / "sae")]) == 2
    assert "`sae` is the SAE of one layer: pass `--sae_layer` too" in capsys.readouterr().err
