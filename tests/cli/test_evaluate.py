"""`trl-decpo evaluate` on tiny models saved to tmp_path: a base, a LoRA adapter on it and a full checkpoint."""

import json

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from tests.helpers import PAIRS, save_evaluated_models
from trl_decpo.cli import main
from trl_decpo.evaluation import NO_DIFFERENCE, evaluate_models, load_scorer


def word_count(texts):  # the task scorer of these tests (`--scorer test_evaluate:word_count`)
    return [float(len(t.split())) for t in texts]


SCORER = f"{__name__}:word_count"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    save_evaluated_models(root)
    rows = [{"prompt": p, "chosen": " " + c, "rejected": " " + r} for p, c, r in PAIRS * 2]
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return {name: str(root / name) for name in ("base", "adapter", "attn_adapter", "full", "pairs.jsonl")}


def run(capsys, *argv):
    code = main(["evaluate", *argv, "--device", "cpu", "--dtype", "float32"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_base_adapter_and_checkpoint(folders, tmp_path, capsys, caplog):
    """The JSON is `evaluate_models`' result (each model on its own; an adapter is taken off BASE after its turn, so
    the same adapter twice: no detectable difference), the table is printed, the completions written."""
    out = tmp_path / "out"
    argv = [folders[k] for k in ("base", "adapter", "full", "attn_adapter", "adapter")]
    argv += ["--dataset", folders["pairs.jsonl"], "--scorer", SCORER, "--names", "base,lora,full,attn,again"]
    argv += ["--beta", "0.2", "--max_new_tokens", "6"]
    argv += ["--batch_size", "3", "--num_resamples", "300", "--seed", "1", "--output_dir", str(out)]
    with caplog.at_level("WARNING"):
        code, stdout, stderr = run(capsys, *argv)
    assert code == 0, stderr
    result = json.load(open(out / "results.json"))

    # what the library computes (the numbers themselves: tests/evaluation/test_evaluate_models.py), written as it is
    pairs = Dataset.from_json(folders["pairs.jsonl"])
    prompts = list(dict.fromkeys(pairs["prompt"]))  # the dataset's prompts, each once
    names = {"lora": folders["adapter"], "full": folders["full"], "attn": folders["attn_adapter"]}
    expected = evaluate_models(
        folders["base"], {**names, "again": folders["adapter"]}, pairs, scorer=load_scorer(SCORER), beta=0.2,
        batch_size=3, max_length=1024, generation_kwargs={"max_new_tokens": 6, "do_sample": False, "seed": 1},
        num_resamples=300, seed=1, pairs_name=folders["pairs.jsonl"], device="cpu", model_args=ModelConfig(dtype="float32"),
    )  # fmt: skip
    assert {k: v for k, v in result.items() if k != "settings"} == json.loads(json.dumps(expected.to_dict()))
    assert result["settings"]["beta"] == 0.2 and result["settings"]["names"] == "base,lora,full,attn,again"
    assert result["base"] == "base" and list(result["metrics"]) == ["base", "lora", "full", "attn", "again"]
    assert len(result["comparisons"]) == 4 * 3 + 3 * 3
    again = [c for c in result["comparisons"] if c["model"] == "again" and c["against"] == "lora"]
    assert len(again) == 3 and all(c["verdict"] == NO_DIFFERENCE and c["difference"] == 0 for c in again)

    markdown = (out / "results.md").read_text()
    assert markdown.strip() in stdout
    assert "| again vs lora | margin |" in markdown and NO_DIFFERENCE in markdown
    assert "_length shortcut (chosen is shorter)_" in markdown
    assert f"16 pairs from {folders['pairs.jsonl']}; reward = 0.2 * (logp - logp under base)" in markdown
    lines = (out / "completions.jsonl").read_text().splitlines()
    assert len(lines) == len(prompts) * 5
    assert json.loads(lines[0])["prompt"] == prompts[0]
    # the adapter was made on another copy of the base: said (a warning, on stderr), and applied to BASE
    assert f"note: adapter {folders['adapter']} records base" in caplog.text
    # a progress line per model, in order
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluating ")] == [
        f"evaluating {name}" for name in ("base", "lora", "full", "attn", "again")
    ]


def test_prompts_file_split_and_limits(folders, tmp_path, capsys):
    """A dataset folder with splits (`--split`), task prompts from `--prompts`, `--max_pairs` / `--max_prompts`; no
    output folder: the table is printed only."""
    rows = [{"prompt": p, "chosen": " " + c, "rejected": " " + r} for p, c, r in PAIRS]
    DatasetDict({"train": Dataset.from_list(rows[:2]), "test": Dataset.from_list(rows)}).save_to_disk(tmp_path / "d")
    (tmp_path / "prompts.txt").write_text("the cat\na dog ran\ni think\n")
    argv = [folders["base"], folders["full"], "--dataset", str(tmp_path / "d"), "--max_pairs", "5"]
    argv += ["--scorer", SCORER, "--prompts", str(tmp_path / "prompts.txt"), "--max_prompts", "2"]
    code, stdout, stderr = run(capsys, *argv, "--num_resamples", "50", "--max_new_tokens", "3")
    assert code == 0, stderr
    assert "5 pairs from" in stdout and "2 prompts" in stdout and "wrote" not in stdout


def test_preference_only_without_a_scorer(folders, capsys):
    code, stdout, _ = run(capsys, folders["base"], folders["full"], "--dataset", folders["pairs.jsonl"])
    assert code == 0
    assert stdout.splitlines()[0] == "| model | reward acc | margin |"


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr("trl_decpo.evaluation.evaluate.load_model_and_adapter", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{base}", "--dataset", "{pairs}"], "`evaluate` needs a BASE model and at least one MODEL"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--names", "a"], "`--names` must give 2 distinct"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--names", "a,a"], "`--names` must give 2 distinct"),
        (["{base}", "{full}", "--dataset", "/no/pairs.jsonl"], "`--dataset` '/no/pairs.jsonl' does not exist"),
        (["{base}", "{full}", "--dataset", "{txt}"], "must end with one of .json, .jsonl, .csv, .parquet, .arrow"),
        (["{base}", "{full}", "--dataset", "{split_dir}"], "`--split` 'test' is not a split of"),
        (["{base}", "{full}", "--dataset", "{no_pref}"], "is not a preference dataset"),
        (["{base}", "{full}"], "nothing to evaluate: pass --dataset"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--prompts", "{txt}"], "`--prompts` and `--scorer_label` are"),
        (["{base}", "{full}", "--scorer", SCORER], "`--scorer` needs prompts"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--scorer", "nomodule_xyz:f"], "cannot import module"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--scorer", f"{__name__}:nope"], "has no attribute 'nope'"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--scorer", SCORER, "--scorer_label", "x"], "applies to a"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--beta", "0"], "`beta` must be > 0, got 0.0"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--max_pairs", "-1"], "`max_pairs` must be an integer >= 0"),
        (["{base}", "{full}", "--dataset", "{pairs}", "--base_model", "{base}"], "`--base_model` is not used"),
    ],
)
def test_bad_input_fails_in_one_line_before_any_model_loads(folders, tmp_path, capsys, no_model_loads, argv, message):
    (tmp_path / "prompts.txt").write_text("a\n")
    DatasetDict({"train": Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])}).save_to_disk(
        tmp_path / "splits"
    )
    Dataset.from_list([{"text": "a"}]).to_json(tmp_path / "text.jsonl")
    paths = {
        "base": folders["base"],
        "full": folders["full"],
        "pairs": folders["pairs.jsonl"],
        "txt": str(tmp_path / "prompts.txt"),
        "split_dir": str(tmp_path / "splits"),
        "no_pref": str(tmp_path / "text.jsonl"),
    }
    code, _, stderr = run(capsys, *[a.format(**paths) for a in argv])
    assert code == 2
    assert stderr.startswith("trl-decpo evaluate: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr


def test_a_label_that_does_not_exist(folders, tmp_path, capsys, no_model_loads):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    config.id2label, config.label2id = {0: "clean", 1: "toxic"}, {"clean": 0, "toxic": 1}
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    argv = [folders["base"], folders["full"], "--dataset", folders["pairs.jsonl"], "--scorer", str(tmp_path / "clf")]
    code, _, stderr = run(capsys, *argv, "--scorer_label", "hate")
    assert code == 2 and "`--scorer_label` 'hate' is not a label of" in stderr and "['clean', 'toxic']" in stderr


def test_listed_in_the_help(capsys):
    assert main(["--help"]) == 0
    assert "evaluate" in capsys.readouterr().out
