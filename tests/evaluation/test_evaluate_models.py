"""`evaluate_models` / `evaluate_model` (trained models against their base in one call) and `proxy_differences` (paired
bootstrap of the monosemanticity proxies): every number is the library's building blocks' on each model."""

import json

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.helpers import PAIRS, make_model, make_tokenizer, save_evaluated_models
from trl_decpo import measure_monosemanticity, paired_bootstrap, weighted_mean
from trl_decpo.evaluation import (
    NO_DIFFERENCE,
    comparison_table,
    dpo_pair_rewards,
    evaluate_model,
    evaluate_models,
    generate_completions,
    length_shortcut,
    preference_logps,
    proxy_differences,
    tokenize_pairs,
)
from trl_decpo.monosemanticity import compare_monosemanticity, weighted_control, weighted_feature_decorrelation


def word_count(texts):  # the task scorer of these tests
    return [float(len(t.split())) for t in texts]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    save_evaluated_models(root)
    return {name: str(root / name) for name in ("base", "adapter", "attn_adapter", "full")}


@pytest.fixture(scope="module")
def pairs():
    return Dataset.from_list([{"prompt": p, "chosen": " " + c, "rejected": " " + r} for p, c, r in PAIRS * 2])


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_folders_and_adapters_give_the_library_numbers_of_each_model(folders, pairs, caplog):
    """Each model on its own, computed here with the building blocks; an adapter is taken off BASE after its turn
    (the next adapter's numbers are its own; the same adapter twice: no detectable difference)."""
    models = {"lora": folders["adapter"], "full": folders["full"], "attn": folders["attn_adapter"]}
    with caplog.at_level("WARNING"):
        result = evaluate_models(
            folders["base"], {**models, "again": folders["adapter"]}, pairs, scorer=word_count, beta=0.2,
            batch_size=3, generation_kwargs={"max_new_tokens": 6}, num_resamples=300, seed=1, device="cpu",
        )  # fmt: skip
    assert f"note: adapter {folders['adapter']} records base" in caplog.text  # made on another copy of the base

    tokenizer = make_tokenizer()
    prompts = list(dict.fromkeys(pairs["prompt"]))  # the pairs' prompts, each once
    loaded = {
        "base": load(folders["base"]),
        "lora": PeftModel.from_pretrained(load(folders["base"]), folders["adapter"]).eval(),
        "full": load(folders["full"]),
        "attn": PeftModel.from_pretrained(load(folders["base"]), folders["attn_adapter"]).eval(),
    }
    logps = {name: preference_logps(model, tokenizer, pairs) for name, model in loaded.items()}
    rewards = {name: dpo_pair_rewards(logps[name], logps["base"], 0.2) for name in ("lora", "full", "attn")}
    rewards["again"] = rewards["lora"]
    completions = {n: generate_completions(m, tokenizer, prompts, max_new_tokens=6) for n, m in loaded.items()}
    scores = {name: word_count(texts) for name, texts in completions.items()}
    scores["again"] = scores["lora"]
    expected = comparison_table(
        ["base", "lora", "full", "attn", "again"],
        rewards=rewards,
        scores=scores,
        length_shortcut=length_shortcut(tokenize_pairs(tokenizer, pairs)),
        num_resamples=300,
        seed=1,
    ).to_dict()

    got = result.to_dict()
    assert got["base"] == "base" and list(got["metrics"]) == ["base", "lora", "full", "attn", "again"]
    assert got["models"] == {"base": folders["base"], **models, "again": folders["adapter"]}
    for name, row in expected["metrics"].items():
        for key, value in row.items():
            assert got["metrics"][name][key] == pytest.approx(value, abs=1e-6), (name, key)
    assert got["baselines"] == pytest.approx(expected["baselines"])
    assert len(got["comparisons"]) == len(expected["comparisons"]) == 4 * 3 + 3 * 3
    for row, want in zip(got["comparisons"], expected["comparisons"], strict=True):
        assert (row["model"], row["against"], row["metric"]) == (want["model"], want["against"], want["metric"])
        for key in ("a", "b", "difference", "low", "high"):
            assert row[key] == pytest.approx(want[key], abs=1e-6), (row["model"], row["metric"], key)
        assert row["verdict"] == want["verdict"]
    again = [c for c in got["comparisons"] if c["model"] == "again" and c["against"] == "lora"]
    assert len(again) == 3 and all(c["verdict"] == NO_DIFFERENCE and c["difference"] == 0 for c in again)
    assert got["units"]["rewards"]["lora"]["chosen"] == pytest.approx(rewards["lora"].chosen.tolist(), abs=1e-6)
    assert got["units"]["task_scores"]["full"] == scores["full"]
    assert result.evaluations["attn"].completions == completions["attn"]
    assert got["notes"] == [
        "16 pairs; reward = 0.2 * (logp - logp under base)",
        f"task score: word_count; {len(prompts)} prompts, greedy completions of 6 new tokens at most",
    ]


def test_the_differences_are_paired_bootstraps_of_the_per_unit_values(pairs):
    base, dpo, decpo = make_model(), make_model(seed=1), make_model(seed=2)
    prompts = ["the cat", "a dog ran", "i think", "yes"]
    result = evaluate_models(
        base, {"dpo": dpo, "decpo": decpo}, pairs, prompts, word_count, make_tokenizer(), num_resamples=200, seed=3
    )
    units = result.evaluations
    for row in result.table.comparisons:
        later, earlier = units[row["model"]], units.get(row["against"])
        if row["metric"] == "task_score":
            a, b = earlier.scores, later.scores
        else:
            key = "correct" if row["metric"] == "reward_accuracy" else "margins"
            b = getattr(later.rewards, key)
            a = (
                getattr(earlier.rewards, key)
                if earlier is not None
                else torch.full_like(b, 0.5 if key == "correct" else 0.0)
            )
        expected = paired_bootstrap(weighted_mean, a, b, num_resamples=200, seed=3).to_dict()
        assert {k: row[k] for k in expected} == pytest.approx(expected), row
    assert [(c["model"], c["against"]) for c in result.table.comparisons if c["metric"] == "task_score"] == [
        ("dpo", "base"),
        ("decpo", "base"),
        ("decpo", "dpo"),
    ]


def test_one_model_and_a_loaded_base_restored_after_each_adapter(folders, pairs):
    tokenizer, base = make_tokenizer(), load(folders["base"])
    alone = evaluate_model(
        base, tokenizer, pairs, ["the cat", "a dog"], word_count, generation_kwargs={"max_new_tokens": 3}
    )
    assert alone.rewards.accuracy == 0 and torch.equal(alone.rewards.margins, torch.zeros(16, dtype=torch.float64))
    assert torch.equal(alone.logps.chosen, preference_logps(base, tokenizer, pairs).chosen)  # its own reference
    assert alone.completions == generate_completions(base, tokenizer, ["the cat", "a dog"], max_new_tokens=3)
    assert alone.scores == word_count(alone.completions)
    weights = {k: v.clone() for k, v in base.state_dict().items()}
    result = evaluate_models(base, [folders["adapter"], folders["attn_adapter"]], pairs, tokenizer=tokenizer)
    assert list(result.evaluations) == ["base", "adapter", "attn_adapter"] and result.prompts is None
    assert not any("lora" in name for name, _ in base.named_modules())  # each adapter taken off again
    assert all(torch.equal(v, weights[k]) for k, v in base.state_dict().items())
    tuned = PeftModel.from_pretrained(load(folders["base"]), folders["adapter"]).eval()
    expected = dpo_pair_rewards(preference_logps(tuned, tokenizer, pairs), alone.logps, 0.1)
    assert torch.allclose(result.evaluations["adapter"].rewards.margins, expected.margins, atol=1e-6)


def test_results_files(tmp_path, pairs):
    result = evaluate_models(
        make_model(), {"tuned": make_model(seed=1)}, pairs, None, "trl_decpo.testing:negative_word_rate",
        make_tokenizer(), generation_kwargs={"max_new_tokens": 2}, max_prompts=3, num_resamples=50,
    )  # fmt: skip
    assert result.scorer["spec"] == "trl_decpo.testing:negative_word_rate" and len(result.prompts) == 3
    paths = result.save(str(tmp_path / "out"), settings={"beta": 0.1})
    saved = json.load(open(paths[0]))
    assert list(saved)[:2] == ["models", "settings"] and saved["settings"] == {"beta": 0.1}
    assert saved["metrics"] == json.loads(json.dumps(result.to_dict()["metrics"]))
    assert open(paths[1]).read() == result.to_markdown() + "\n"
    records = [json.loads(line) for line in open(paths[2])]
    assert records == json.loads(json.dumps(result.completion_records())) and len(records) == 3 * 2
    assert records[1] == {
        "prompt": result.prompts[0],
        "model": "tuned",
        "completion": result.evaluations["tuned"].completions[0],
        "score": result.evaluations["tuned"].scores[0],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "nothing to evaluate"),
        ({"pairs": "P", "beta": 0}, "`beta` must be > 0"),
        ({"scorer": word_count}, "no prompts for the task score"),
        (
            {"pairs": "P"},
            "model 'base' does not exist as a local folder, and as a Hub id it is not in the Hugging Face",
        ),
    ],
)
def test_bad_input_fails_before_any_model_loads(monkeypatch, pairs, kwargs, message):
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    kwargs = {k: pairs if v == "P" else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        evaluate_models("base", ["tuned"], **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# proxy_differences
# ----------------------------------------------------------------------------------------------------------------------

PROBES = [
    "the cat sat on the mat",
    "a dog ran fast",
    "i think you are very good",
    "yes",
    "is the cat happy",
    "we agree",
]


def test_proxy_differences_are_paired_bootstraps_over_the_probes():
    models = {"dpo": make_model(seed=1), "decpo": make_model(seed=2)}
    comparison = compare_monosemanticity(make_model(), models, PROBES, make_tokenizer(), layers=[1, 3])
    rows = proxy_differences(comparison, num_resamples=300, seed=2)
    assert [(r["model"], r["against"], r["layer"], r["metric"]) for r in rows] == [
        (later, earlier, layer, metric)
        for earlier, later in (("base", "dpo"), ("base", "decpo"), ("dpo", "decpo"))
        for layer in (1, 3)
        for metric in ("fd", "control", "sparsity")
    ]
    reports = comparison.reports
    for row in rows:
        statistic, data = {
            "fd": (weighted_feature_decorrelation, "gram"),
            "control": (weighted_control, "gram"),
            "sparsity": (weighted_mean, "row_sparsity"),
        }[row["metric"]]
        a, b = (getattr(reports[name], data)(row["layer"]) for name in (row["against"], row["model"]))
        expected = paired_bootstrap(statistic, a, b, num_resamples=300, seed=2).to_dict()
        assert {k: row[k] for k in expected} == pytest.approx(expected)
        assert row["b"] == pytest.approx(getattr(reports[row["model"]], row["metric"])[row["layer"]], abs=1e-9)
    # from reports alone, a chosen pair, layer and metric
    reports = {n: measure_monosemanticity(m, PROBES, make_tokenizer(), layers=[2]) for n, m in models.items()}
    (row,) = proxy_differences(reports, [("decpo", "dpo")], metrics=["fd"], num_resamples=300)
    assert (row["model"], row["against"], row["layer"]) == ("dpo", "decpo", 2)
    assert row["difference"] == pytest.approx(reports["dpo"].fd[2] - reports["decpo"].fd[2], abs=1e-9)
    with pytest.raises(ValueError, match=r"`pairs` names \['sft'\]"):
        proxy_differences(reports, [("sft", "dpo")])
    with pytest.raises(ValueError, match=r"`metrics` must be one of \['fd', 'control', 'sparsity'\]"):
        proxy_differences(reports, metrics=["pr"])


def test_a_loaded_base_without_a_tokenizer_is_refused_in_one_line(pairs):
    from trl_decpo import evaluate_models

    with pytest.raises(ValueError, match="`tokenizer` is required when `base` is a loaded model"):
        evaluate_models(make_model(), {"same": make_model()}, pairs)
