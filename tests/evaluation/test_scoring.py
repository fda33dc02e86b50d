"""trl_decpo.evaluation.scoring: `module:function` scorers and text-classification model folders."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from tests.helpers import make_tokenizer
from trl_decpo.evaluation import load_scorer
from trl_decpo.testing import VOCAB_SIZE


TEXTS = ["the cat sat on the mat", "bad", "yes i agree because the answer is good", "no"]


def word_count(texts):  # a scorer: any callable on a list of strings
    return np.array([len(t.split()) for t in texts], dtype=float)


def wrong_length(texts):
    return [0.0]


def not_numbers(texts):
    return ["high"] * len(texts)


NOT_CALLABLE = 3


def classifier_dir(tmp_path, labels=("clean", "toxic")):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    path = tmp_path / "classifier"
    LlamaForSequenceClassification(config).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)


def by_hand(path, texts, label_id):
    model = LlamaForSequenceClassification.from_pretrained(path).eval()
    tokenizer = make_tokenizer()
    with torch.no_grad():
        return [float(model(**tokenizer(t, return_tensors="pt")).logits[0].softmax(-1)[label_id]) for t in texts]


def test_callable_from_a_module():
    scorer = load_scorer(f"{__name__}:word_count")
    assert scorer(TEXTS) == [6.0, 1.0, 8.0, 1.0]
    assert scorer([]) == []
    assert scorer.label is None and "word_count" in scorer.description


@pytest.mark.parametrize("batch_size", [1, 3])
def test_classifier_folder_scores_are_the_models_probabilities(tmp_path, batch_size):
    path = classifier_dir(tmp_path)
    scorer = load_scorer(path, batch_size=batch_size, device="cpu")
    assert scorer.label == "toxic" and "the last label" in scorer.description
    assert scorer(TEXTS) == pytest.approx(by_hand(path, TEXTS, 1), abs=1e-5)
    clean = load_scorer(path, label="clean", device="cpu")
    assert clean(TEXTS) == pytest.approx(by_hand(path, TEXTS, 0), abs=1e-5)
    assert "clean" in clean.description and "--scorer_label" in clean.description


def test_default_label_is_positive_when_there_is_one(tmp_path):
    path = classifier_dir(tmp_path, labels=("negative", "positive", "neutral"))
    scorer = load_scorer(path, device="cpu")
    assert scorer.label == "positive" and "named 'positive'" in scorer.description
    assert scorer(TEXTS) == pytest.approx(by_hand(path, TEXTS, 1), abs=1e-5)


@pytest.mark.parametrize(
    "spec, label, message",
    [
        ("no_such_module_xyz:predict", None, "`--scorer` 'no_such_module_xyz:predict': cannot import module"),
        (f"{__name__}:no_such_function", None, "has no attribute 'no_such_function'"),
        (f"{__name__}:NOT_CALLABLE", None, "'NOT_CALLABLE' is not callable"),
        ("/no/such/folder", None, "is neither an existing model folder nor `module:function`"),
        ("just words", None, "is neither an existing model folder nor `module:function`"),
        (f"{__name__}:word_count", "toxic", "`--scorer_label` applies to a classifier folder"),
    ],
)
def test_bad_scorer_specs(spec, label, message):
    with pytest.raises(ValueError, match="text-classification model folder|--scorer_label") as err:
        load_scorer(spec, label)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_label_lists_the_labels(tmp_path):
    path = classifier_dir(tmp_path)
    with pytest.raises(ValueError) as err:
        load_scorer(path, label="hateful", device="cpu")
    assert (
        str(err.value) == f"`--scorer_label` 'hateful' is not a label of {path!r}; its labels are ['clean', 'toxic']"
    )


def test_a_file_or_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="`--scorer` .* is a file; give `module:function`"):
        load_scorer(str(tmp_path / "f.txt"))
    with pytest.raises(ValueError, match="`--scorer` .* is not a model folder"):
        load_scorer(str(tmp_path))


def test_bad_scorer_outputs():
    with pytest.raises(ValueError, match="returned 1 scores for 4 texts"):
        load_scorer(f"{__name__}:wrong_length")(TEXTS)
    with pytest.raises(ValueError, match="must return one float per text"):
        load_scorer(f"{__name__}:not_numbers")(TEXTS)
