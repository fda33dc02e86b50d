"""`compare_monosemanticity`: a base model against tuned ones (folders, PEFT adapters, loaded models) on the same probes;
each model's measurement is `measure_monosemanticity`'s, the changes and the weight proxy are against the base."""

import csv
import json
import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from tests.helpers import gpt2_with_biases, make_model, make_tokenizer
from trl_decpo import measure_monosemanticity, weight_proxy
from trl_decpo.monosemanticity import MonosemanticityComparison, compare_monosemanticity, prepare_probes
from trl_decpo.monosemanticity.compare import relative_change
from trl_decpo.monosemanticity.tables import Table, report_table


PROMPTS = ["the cat sat on the mat", "a dog ran fast", "i think you are very good", "yes", "is the cat happy"]
METRICS = ("fd", "control", "participation_ratio", "sparsity")


@pytest.fixture(scope="module")
def gpt2_folders(tmp_path_factory):
    """A GPT-2 base with MLP input biases (the weight proxy applies), a full checkpoint whose layer 1 changed, and a
    LoRA adapter made on another copy of the base."""
    root = tmp_path_factory.mktemp("compare")
    base = gpt2_with_biases(seed=0)
    base.save_pretrained(root / "base")
    make_tokenizer().save_pretrained(root / "base")
    tuned = gpt2_with_biases(seed=0)
    with torch.no_grad():
        tuned.transformer.h[1].mlp.c_fc.weight[:, :10] += 1.0
    tuned.save_pretrained(root / "tuned")
    torch.manual_seed(0)
    adapter = get_peft_model(
        gpt2_with_biases(seed=0),
        LoraConfig(r=4, target_modules=["c_fc"], fan_in_fan_out=True, init_lora_weights=False),
    )
    adapter.save_pretrained(root / "adapter")
    folders = {f"{name}_dir": str(root / name) for name in ("base", "tuned", "adapter")}
    return {"base": base, "tuned": tuned, "merged": adapter.merge_and_unload(), **folders}


def assert_same(report, expected, abs=1e-6):
    assert report.layers == expected.layers and report.pooling == expected.pooling
    for metric in METRICS:
        got, want = getattr(report, metric), getattr(expected, metric)
        assert [got[i] for i in report.layers] == pytest.approx([want[i] for i in report.layers], abs=abs), metric


def test_folders_and_adapters_measure_as_the_library_measures_each_model(gpt2_folders, caplog):
    f = gpt2_folders
    with caplog.at_level("WARNING"):
        comparison = compare_monosemanticity(
            f["base_dir"], [f["tuned_dir"], f["adapter_dir"]], PROMPTS, weight_proxy_top_k=10, device="cpu"
        )
    assert comparison.names == ["base", "tuned", "adapter"] and comparison.base == "base"
    assert comparison.sources == {"base": f["base_dir"], "tuned": f["tuned_dir"], "adapter": f["adapter_dir"]}
    tokenizer = make_tokenizer()
    assert_same(comparison.reports["base"], measure_monosemanticity(f["base"], PROMPTS, tokenizer))
    assert_same(comparison.reports["tuned"], measure_monosemanticity(f["tuned"], PROMPTS, tokenizer))
    # the adapter is applied to BASE: its measurement is the merged model's, and differs from the base
    assert_same(comparison.reports["adapter"], measure_monosemanticity(f["merged"], PROMPTS, tokenizer), abs=1e-5)
    assert comparison.reports["adapter"].fd[1] != pytest.approx(comparison.reports["base"].fd[1], abs=1e-6)
    assert f"note: adapter {f['adapter_dir']} records base" in caplog.text  # made on another copy of the base
    # the weight proxy against the base: only layer 1 of `tuned` changed; the adapter's is its merged weights'
    changes = comparison.weight_proxy["tuned"].change
    assert changes[1] != 0.0 and changes[0] == changes[2] == changes[3] == 0.0
    assert changes == pytest.approx(weight_proxy(f["tuned"], f["base"], top_k=10).change)
    assert all(v != 0.0 for v in comparison.weight_proxy["adapter"].change.values())
    assert comparison.weight_proxy["adapter"].change == pytest.approx(
        weight_proxy(f["merged"], f["base"], top_k=10).change, rel=1e-5
    )
    assert comparison.weight_proxy_note is None


def test_the_table_holds_each_model_and_its_changes_against_the_base(gpt2_folders, tmp_path):
    f = gpt2_folders
    comparison = compare_monosemanticity(f["base"], {"tuned": f["tuned"]}, PROMPTS, make_tokenizer(), layers=[1, 2])
    table = comparison.table()
    assert table.headers[:2] == ["model", "layer"] and table.headers[-1] == "weight_proxy_relative_change"
    records = table.records()
    assert [(r["model"], r["layer"]) for r in records] == [("base", 1), ("base", 2), ("tuned", 1), ("tuned", 2)]
    base, tuned = comparison.reports["base"], comparison.reports["tuned"]
    for r in records:
        report, layer = comparison.reports[r["model"]], r["layer"]
        assert (r["fd"], r["control"], r["sparsity"]) == (
            report.fd[layer],
            report.control[layer],
            report.sparsity[layer],
        )
        assert r["fd_relative_change"] == (report.fd[layer] - base.fd[layer]) / abs(base.fd[layer])
        assert r["control_relative_change"] == relative_change(report.control[layer], base.control[layer])
        assert r["sparsity_minus_base"] == report.sparsity[layer] - base.sparsity[layer]
    assert records[0]["fd_relative_change"] == 0 and records[2]["fd_relative_change"] != 0
    assert records[2]["weight_proxy_relative_change"] == comparison.weight_proxy["tuned"].change[1]
    text = comparison.to_text()
    assert text.splitlines()[0] == f"base base; 5 prompts, site {base.site}, pooling last"
    assert table.to_text() in text and f"tuned: mean FD {tuned.mean('fd'):.6g}" in text
    # the files `trl-decpo compare` writes
    paths = comparison.save(str(tmp_path / "out"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["compare.json", "compare.csv", "compare.png"]
    assert json.load(open(paths[0])) == json.loads(json.dumps(comparison.to_dict()))
    with open(paths[1]) as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["fd"]) for r in rows] == pytest.approx([r["fd"] for r in records], rel=1e-12)
    assert open(paths[2], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_llama_models_have_no_weight_proxy_and_say_why(tmp_path):
    base, tuned = make_model(), make_model(seed=1)
    comparison = compare_monosemanticity(base, [tuned], PROMPTS, make_tokenizer())
    assert comparison.names == ["base", "model_1"] and comparison.weight_proxy == {}
    assert comparison.weight_proxy_note.startswith("weight proxy not computed: the weight proxy needs an MLP input")
    assert "weight_proxy_relative_change" not in comparison.table().headers
    assert comparison.to_dict()["weight_proxy"] is None and comparison.weight_proxy_note in comparison.to_text()


def test_prepared_probes_chat_pooling_and_a_loaded_base_with_an_adapter_folder(tmp_path):
    from tests.helpers import CHAT_TEMPLATE

    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    get_peft_model(make_model(), LoraConfig(r=2, target_modules=["up_proj"], init_lora_weights=False)).save_pretrained(
        tmp_path / "adapter"
    )
    base = make_model()
    comparison = compare_monosemanticity(base, {"lora": str(tmp_path / "adapter")}, chats, tokenizer, device="cpu")
    assert not any("lora" in name for name, _ in base.named_modules())  # applied to a copy of the loaded base
    assert comparison.reports["lora"].pooling == "last_content"  # chat probes: at their last content token
    merged = PeftModel.from_pretrained(make_model(), str(tmp_path / "adapter")).merge_and_unload()
    expected = measure_monosemanticity(merged, chats, tokenizer)
    assert_same(comparison.reports["lora"], expected, abs=1e-5)
    probes = prepare_probes(chats, tokenizer, pooling="mean")  # prepared once: as given
    again = compare_monosemanticity(base, [make_model(seed=1)], probes, layers=[0])
    assert again.reports["base"].pooling == "mean" and again.reports["base"].layers == [0]


def test_models_of_another_depth_are_refused():
    with pytest.raises(ValueError, match=r"model_1 has layers \[0, 1\] at the site, the base has \[0, 1, 2, 3\]"):
        compare_monosemanticity(make_model(), [make_model(layers=2)], PROMPTS, make_tokenizer())


def test_tables():
    table = Table(["name", "value"], [["a", 0.123456789], ["bb", 2]])
    assert table.to_text().splitlines() == ["name     value", "----  --------", "   a  0.123457", "  bb         2"]
    assert table.to_markdown().splitlines()[:2] == ["| name | value |", "|---|---|"]
    report = measure_monosemanticity(make_model(), PROMPTS, make_tokenizer(), layers=[2, 3])
    rows = report_table(report).records()
    assert [r["layer"] for r in rows] == [2, 3] and rows[1]["fd"] == report.fd[3]
    assert rows[0]["relative_depth"] == pytest.approx(2 / 3) and not math.isnan(rows[0]["control"])
    assert isinstance(compare_monosemanticity.__doc__, str) and MonosemanticityComparison.save.__doc__


def test_a_loaded_base_without_a_tokenizer_is_refused_in_one_line():
    with pytest.raises(ValueError, match="`tokenizer` is required when `base` is a loaded model"):
        compare_monosemanticity(make_model(), {"same": make_model()}, ["the cat sat on", "a dog ran"])


def test_every_model_is_checked_before_the_first_loads(gpt2_folders, tmp_path, monkeypatch):
    """A misspelled tuned model fails in one line naming it, before the base model is loaded and measured."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    missing = str(tmp_path / "runs" / "typo")
    with pytest.raises(ValueError, match=f"model {missing!r} does not exist: no such folder"):
        compare_monosemanticity(gpt2_folders["base_dir"], [gpt2_folders["tuned_dir"], missing], PROMPTS)
    with pytest.raises(
        ValueError, match="'someone/not-cached' does not exist as a local folder, and as a Hub id it is"
    ):
        compare_monosemanticity(gpt2_folders["base_dir"], ["someone/not-cached"], PROMPTS)  # offline (the suite)


def test_labels_probe_every_model_and_one_base_sae_scores_them_all(gpt2_folders, monkeypatch):
    """With labels, each model's rows at each layer are probed on the same split; with SAE settings, one SAE is
    trained on the base's token activations (once) and every model's tokens are scored with it."""
    from tests.helpers import IdentitySAE, identity_sae
    from trl_decpo.independent import SAESettings, sae_report, sparse_probing
    from trl_decpo.monosemanticity.tokens import token_activations

    trained = identity_sae(monkeypatch)
    labels = [1, 0, 1, 0, 1]
    comparison = compare_monosemanticity(
        gpt2_folders["base_dir"], {"tuned": gpt2_folders["tuned_dir"]}, PROMPTS, layers=[0, 1], labels=labels,
        probing_ks=(1,), sae=SAESettings(layer=1, max_rows=20),
    )  # fmt: skip
    for name in ("base", "tuned"):
        for layer in (0, 1):
            expected = sparse_probing(comparison.reports[name].rows(layer), labels, ks=(1,))
            assert comparison.probing[name][layer].accuracy == expected.accuracy
    assert len(trained) == 1 and comparison.sae_layer == 1  # trained once, on the base model's tokens
    base_tokens = token_activations(gpt2_folders["base"], PROMPTS, make_tokenizer(), layers=[1], max_rows=20)[1]
    torch.testing.assert_close(trained[0], base_tokens)
    tuned_tokens = token_activations(gpt2_folders["tuned"], PROMPTS, make_tokenizer(), layers=[1], max_rows=20)[1]
    assert comparison.sae["tuned"].to_dict() == pytest.approx(
        sae_report(IdentitySAE(tuned_tokens), tuned_tokens).to_dict()
    )
    table = comparison.table()
    assert table.headers[-2:] == ["probe_k1_accuracy", "probe_dense_accuracy"]
    text = comparison.to_text()
    assert "SAE at layer 1, scored on 20 token activations per model:" in text
    saved = comparison.to_dict()
    assert set(saved["sparse_probing"]) == {"base", "tuned"} and saved["sae"]["layer"] == 1
    with pytest.raises(ValueError, match="`labels` has 2 entries for 5 prompts"):
        compare_monosemanticity(gpt2_folders["base_dir"], [gpt2_folders["tuned_dir"]], PROMPTS, labels=[0, 1])


def test_an_sae_layer_the_model_lacks_is_refused_before_anything_is_measured(gpt2_folders, monkeypatch):
    from trl_decpo.independent import SAESettings
    from trl_decpo.monosemanticity import compare as compare_module

    monkeypatch.setattr(compare_module, "measure_monosemanticity", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(ValueError, match=r"the SAE's `layer` 99: `layers` entry 99 is out of range"):
        compare_monosemanticity(gpt2_folders["base_dir"], [gpt2_folders["tuned_dir"]], PROMPTS, sae=SAESettings(99))
