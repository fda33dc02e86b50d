"""Probe measurement on real (tiny) models against prompts run one by one."""

import json
import threading

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.helpers import (
    CHAT_TEMPLATE,
    brute_fd,
    brute_sparsity,
    last_token_rows,
    make_dataset,
    make_model,
    make_tokenizer,
)
from trl_decpo import load_prompts, measure_monosemanticity
from trl_decpo.capture import count_decpo_hooks
from trl_decpo.monosemanticity.probes import tokenize_prompts


PROMPTS = [
    "the cat sat on the mat",
    "a dog ran fast",
    "i think you are very good",
    "yes",
    "we know the answer is red because they said so",
    "is the cat happy or sad",
    "no",
]


def site_module(model, arch, layer):
    if arch == "gpt2":
        return model.transformer.h[layer].mlp.act
    if arch == "gpt_neox":
        return model.gpt_neox.layers[layer].mlp.act
    return model.model.layers[layer].mlp.up_proj


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_matches_prompts_run_one_by_one(arch):
    """Batched, right-padded, hooked measurement == each prompt alone through a hook written here."""
    model, tokenizer = make_model(arch), make_tokenizer()
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    report = measure_monosemanticity(model, PROMPTS, tokenizer, batch_size=3)
    assert report.layers == [0, 1, 2, 3] and report.num_prompts == len(PROMPTS)
    for layer in report.layers:
        z = last_token_rows(model, ids, site_module(model, arch, layer))
        assert report.fd[layer] == pytest.approx(brute_fd(z), abs=1e-5)
        assert report.sparsity[layer] == pytest.approx(brute_sparsity(z), rel=1e-4)
    assert count_decpo_hooks(model) == 0


def test_batch_size_and_order_do_not_change_the_result():
    model, tokenizer = make_model(), make_tokenizer()
    one = measure_monosemanticity(model, PROMPTS, tokenizer, batch_size=1, layers=[1, -1])
    many = measure_monosemanticity(model, list(reversed(PROMPTS)), tokenizer, batch_size=4, layers=[1, 3])
    assert one.layers == many.layers == [1, 3]
    for layer in one.layers:
        assert one.fd[layer] == pytest.approx(many.fd[layer], abs=1e-6)
        assert one.sparsity[layer] == pytest.approx(many.sparsity[layer], rel=1e-5)


def test_peft_model_measures_the_adapted_activations():
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    base = make_model()
    before = measure_monosemanticity(base, PROMPTS, tokenizer, layers=[2])
    peft = get_peft_model(make_model(), LoraConfig(r=4, target_modules=["up_proj"], init_lora_weights=False))
    after = measure_monosemanticity(peft, PROMPTS, tokenizer, layers=[2])
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    z = last_token_rows(peft, ids, peft.base_model.model.model.layers[2].mlp.up_proj)
    assert after.fd[2] == pytest.approx(brute_fd(z), abs=1e-5)
    assert after.fd[2] != pytest.approx(before.fd[2], abs=1e-4)  # the adapter changes the measured activations
    with peft.disable_adapter():
        assert measure_monosemanticity(peft, PROMPTS, tokenizer, layers=[2]).fd[2] == pytest.approx(before.fd[2])


def test_input_site_and_training_mode_restored():
    model, tokenizer = make_model(), make_tokenizer()
    model.train()
    report = measure_monosemanticity(model, PROMPTS, tokenizer, layers=[0], site="mlp.down_proj:input")
    assert model.training
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    seen = []
    handle = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0][0, -1]))
    model.eval()
    with torch.no_grad():
        for row in ids:
            model(input_ids=torch.tensor([row]))
    handle.remove()
    assert report.site == "mlp.down_proj:input"
    assert report.fd[0] == pytest.approx(brute_fd(torch.stack(seen)), abs=1e-5)


def test_prompts_tokenize_like_dpo_trainer(tmp_path):
    """Text and chat prompts give the token ids DPOTrainer gives the same prompts (the probes are the eval prompts)."""
    from trl import DPOConfig, DPOTrainer

    from tests.helpers import base_kwargs

    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    text = make_dataset(4)
    chat = text.map(
        lambda r: {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
    )
    for data in (text, chat):
        trainer = DPOTrainer(
            model=make_model(),
            args=DPOConfig(**base_kwargs(tmp_path)),
            train_dataset=data,
            eval_dataset=data,
            processing_class=tokenizer,
        )
        assert tokenize_prompts(list(data["prompt"]), tokenizer) == trainer.eval_dataset["prompt_ids"]
    assert tokenize_prompts(["the cat sat on the mat"], tokenizer, max_length=2) == [
        tokenizer("on the mat")["input_ids"][-2:]
    ]


def test_load_prompts_formats(tmp_path):
    from datasets import Dataset

    lines = ["the cat", "a dog", "yes"]
    (tmp_path / "p.txt").write_text("the cat\n\na dog\nyes\n")
    (tmp_path / "p.json").write_text(json.dumps(lines))
    (tmp_path / "o.json").write_text(json.dumps([{"text": x, "id": i} for i, x in enumerate(lines)]))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"prompt": x}) for x in lines))
    Dataset.from_dict({"prompt": lines}).to_csv(str(tmp_path / "p.csv"))
    Dataset.from_dict({"prompt": lines}).save_to_disk(str(tmp_path / "saved"))
    for name, column in [
        ("p.txt", "prompt"),
        ("p.json", "prompt"),
        ("o.json", "text"),
        ("p.jsonl", "prompt"),
        ("p.csv", "prompt"),
        ("saved", "prompt"),
    ]:
        assert load_prompts(str(tmp_path / name), column=column) == lines, name
    assert load_prompts(str(tmp_path / "p.txt"), max_samples=2) == lines[:2]


def test_load_prompts_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompts(str(tmp_path / "empty.txt"))
    (tmp_path / "o.json").write_text(json.dumps([{"text": "a"}]))
    with pytest.raises(ValueError, match=r"no 'prompt' field; its fields are \['text'\]"):
        load_prompts(str(tmp_path / "o.json"))
    (tmp_path / "p.xml").write_text("<a/>")
    with pytest.raises(ValueError, match=r"unsupported suffix '.xml'; allowed: .txt"):
        load_prompts(str(tmp_path / "p.xml"))
    with pytest.raises(ValueError, match="neither an existing file or folder nor a loadable dataset"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_measurement_errors():
    model, tokenizer = make_model(), make_tokenizer()
    with pytest.raises(ValueError, match=r"`layers` entry 4 is out of range.*allowed values are -4\.\.3"):
        measure_monosemanticity(model, PROMPTS, tokenizer, layers=[4])
    with pytest.raises(ValueError, match=r"`site` 'mlp.nothing' matches no module.*mlp.up_proj"):
        measure_monosemanticity(model, PROMPTS, tokenizer, site="mlp.nothing")
    with pytest.raises(ValueError, match="at least 2 prompts"):
        measure_monosemanticity(model, ["yes"], tokenizer)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        measure_monosemanticity(model, PROMPTS, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="prompt 1 is not a string"):
        measure_monosemanticity(model, ["yes", 3.5], tokenizer)
    assert count_decpo_hooks(model) == 0


class ThreadGroup:
    """Processes of one accelerate run, played by threads: every member hands in a value and gets all of them."""

    def __init__(self, world):
        self.world, self.slots, self.barrier = world, [None] * world, threading.Barrier(world, timeout=120)

    def exchange(self, rank, value):
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


class ThreadAccelerator:
    """Stands in for one process of an `accelerate.Accelerator`: `reduce` sums, `gather` concatenates in rank order."""

    def __init__(self, group, rank):
        self.group, self.process_index, self.num_processes = group, rank, group.world
        self.device = torch.device("cpu")
        self.reduced = None

    def reduce(self, tensor, reduction="sum"):
        assert reduction == "sum"
        self.reduced = tensor
        parts = self.group.exchange(self.process_index, tensor)
        return {k: {name: sum(p[k][name] for p in parts) for name in tensor[k]} for k in tensor}

    def gather(self, tensor):
        return torch.cat(self.group.exchange(self.process_index, tensor))


def test_processes_measure_disjoint_shards_whose_sums_and_rows_give_the_full_result():
    """7 prompts on 2 processes (threads, one model copy each): FD and sparsity from the reduced sums, the control
    from the rows gathered back into prompt order (the top-up row of the shorter shard dropped)."""
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = make_tokenizer()
    full = measure_monosemanticity(make_model(), PROMPTS, tokenizer, layers=[1, 2], batch_size=1)
    group = ThreadGroup(2)
    accelerators = [ThreadAccelerator(group, rank) for rank in range(2)]
    models = [make_model(), make_model()]
    forwards = []
    for rank, model in enumerate(models):
        model.register_forward_hook(lambda *_, rank=rank: forwards.append(rank))

    def run(rank):
        return measure_monosemanticity(
            models[rank], PROMPTS, tokenizer, layers=[1, 2], accelerator=accelerators[rank], batch_size=1
        )

    with ThreadPoolExecutor(2) as pool:
        reports = [f.result() for f in [pool.submit(run, rank) for rank in range(2)]]
    # both run 4 forwards (sharded models need every forward on every process); 4 + 3 rows were kept
    assert forwards.count(0) == forwards.count(1) == 4
    for layer in (1, 2):
        assert [int(a.reduced[str(layer)]["scalars"][1]) for a in accelerators] == [4, 3]
        for report in reports:
            assert report.num_prompts == 7
            assert report.fd[layer] == pytest.approx(full.fd[layer], abs=1e-9)
            assert report.sparsity[layer] == pytest.approx(full.sparsity[layer], rel=1e-9)
            assert torch.equal(report.rows(layer), full.rows(layer))
            assert report.control[layer] == pytest.approx(full.control[layer], abs=1e-12)
            assert report.participation_ratio[layer] == pytest.approx(full.participation_ratio[layer], rel=1e-12)


def test_rows_control_and_participation_ratio_match_prompts_run_one_by_one():
    """The kept rows come back in prompt order (batches are length-sorted); control and PR match brute force."""
    from tests.helpers import brute_control, brute_participation_ratio

    model, tokenizer = make_model(), make_tokenizer()
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    report = measure_monosemanticity(model, PROMPTS, tokenizer, batch_size=3, layers=[0, 3])
    for layer in report.layers:
        z = last_token_rows(model, ids, site_module(model, "llama", layer))
        assert torch.allclose(report.rows(layer), z, atol=1e-6)
        assert torch.allclose(report.gram(layer), z.double() @ z.double().T, atol=1e-5)
        assert report.control[layer] == pytest.approx(brute_control(z), abs=1e-5)
        assert report.participation_ratio[layer] == pytest.approx(brute_participation_ratio(z), rel=1e-4)
        assert report.row_sparsity(layer).mean().item() == pytest.approx(report.sparsity[layer], rel=1e-9)
    entry = report.to_dict()["layers"][1]
    assert entry["control"] == report.control[3] and entry["participation_ratio"] == report.participation_ratio[3]
    assert report.to_dict()["pooling"] == "last"
    light = measure_monosemanticity(model, PROMPTS, tokenizer, layers=[0], keep_rows=False)
    assert light.control == {0: None} and light.mean("control") is None
    assert light.fd[0] == pytest.approx(report.fd[0], abs=1e-6)
    with pytest.raises(ValueError, match="keep_rows=True"):
        light.rows(0)


def test_tokenizer_appended_eos_is_dropped_like_dpo(tmp_path):
    """A tokenizer that appends EOS would make every probe end on EOS; DPOTrainer's prompt_ids do not end on it."""
    from tokenizers import processors
    from trl import DPOConfig, DPOTrainer

    from tests.helpers import base_kwargs

    tokenizer = make_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", tokenizer.eos_token_id)]
    )
    assert tokenizer("the cat")["input_ids"][-1] == tokenizer.eos_token_id
    data = make_dataset(4)
    trainer = DPOTrainer(
        model=make_model(),
        args=DPOConfig(**base_kwargs(tmp_path)),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )
    probes = tokenize_prompts(list(data["prompt"]), tokenizer)
    assert probes == trainer.eval_dataset["prompt_ids"]
    assert all(ids[-1] != tokenizer.eos_token_id for ids in probes)


def test_prompts_longer_than_the_model_keep_their_end(caplog):
    model, tokenizer = make_model("gpt2"), make_tokenizer()  # 128 positions
    words = "the cat sat on the mat and the dog ran fast".split()
    long_prompts = [" ".join(words[(i + k) % len(words)] for k in range(200)) for i in range(3)]
    with caplog.at_level("WARNING"):
        report = measure_monosemanticity(model, long_prompts, tokenizer, layers=[1], max_length=None)
    assert "3 of 3 probe prompts are longer than 128 tokens" in caplog.text
    cut = [tokenizer(p)["input_ids"][-128:] for p in long_prompts]
    assert report.fd[1] == pytest.approx(measure_monosemanticity(model, cut, tokenizer, layers=[1]).fd[1], abs=1e-6)
    z = last_token_rows(model, cut, site_module(model, "gpt2", 1))
    assert report.fd[1] == pytest.approx(brute_fd(z), abs=1e-5)


def test_chat_prompts_measure_their_templated_tokens():
    model, tokenizer = make_model(), make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    templated = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        for c in chats
    ]
    assert all(ids[-1] == tokenizer.convert_tokens_to_ids("answer") for ids in templated)
    report = measure_monosemanticity(model, chats, tokenizer, layers=[2], pooling="last")  # "auto": last_content
    z = last_token_rows(model, templated, site_module(model, "llama", 2))
    assert report.fd[2] == pytest.approx(brute_fd(z), abs=1e-5)


def test_load_labels_reads_a_field_beside_the_prompts_and_names_labels_in_its_errors(tmp_path):
    import json as json_module

    from datasets import Dataset

    from trl_decpo.monosemanticity.probes import load_labels

    rows = [{"prompt": f"prompt {i}", "topic": "ab"[i % 2]} for i in range(5)]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json_module.dumps(r) for r in rows))
    assert load_labels(str(jsonl), "topic") == ["a", "b", "a", "b", "a"]
    assert load_labels(str(jsonl), "topic", max_samples=2) == ["a", "b"]
    Dataset.from_list(rows).to_csv(str(tmp_path / "p.csv"))
    assert load_labels(str(tmp_path / "p.csv"), "topic") == ["a", "b", "a", "b", "a"]
    # a saved dataset whose prompts are token ids: the label column is read, not the ids
    Dataset.from_dict({"prompt_ids": [[1, 2]] * 5, "topic": [r["topic"] for r in rows]}).save_to_disk(
        str(tmp_path / "saved")
    )
    assert load_labels(str(tmp_path / "saved"), "topic") == ["a", "b", "a", "b", "a"]
    with pytest.raises(ValueError, match="`labels` 'kind' is not a column of"):
        load_labels(str(tmp_path / "saved"), "kind")
    with pytest.raises(ValueError, match="`labels` 'kind' is not a field of every record"):
        load_labels(str(jsonl), "kind")
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    with pytest.raises(ValueError, match="a .txt file of prompts"):
        load_labels(str(tmp_path / "p.txt"), "topic")
