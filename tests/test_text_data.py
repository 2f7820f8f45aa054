"""Text datasets read from the official BoolQ, RTE and QNLI files that the tests write.

Checks the splits (official validation file = test; a seeded, stratified slice
of the training file = validation), the labels, the BERT-style pair encoding,
the cached WordPiece vocabulary and the one-line errors for missing data.
"""

from __future__ import annotations

import json

import official_formats
import pytest
import torch

from trainables import text_data
from trainables.data import load_dataset
from trainables.dataset_catalog import check_dataset_available

TEXT = {"max_length": 20, "vocab_size": 120}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    labels = {
        "rte": official_formats.write_rte(folder, train=60, val=20),
        "boolq": official_formats.write_boolq(folder, train=40, val=12),
        "qnli": official_formats.write_qnli(folder, train=40, dev=12),
    }
    return folder, labels


def decode(dataset, row: torch.Tensor, root) -> list[str]:
    """The tokens of one encoded example, through the cached vocabulary."""
    from tokenizers import Tokenizer

    vocabulary = Tokenizer.from_file(str(root / "RTE" / f"wordpiece-{TEXT['vocab_size']}.json"))
    return [vocabulary.id_to_token(int(i)) for i in row[0][row[1] == 1]]


@pytest.mark.parametrize(("name", "test_key"), [("rte", "val"), ("boolq", "val"), ("qnli", "dev")])
def test_official_validation_file_is_the_test_split(root, name, test_key):
    folder, labels = root
    dataset = load_dataset(name, data_dir=folder, **TEXT)
    assert dataset.modality == "text" and dataset.num_classes == 2
    assert (dataset.crop_padding, dataset.flip, dataset.masking) == (0, False, None)
    assert torch.equal(dataset.test.y, torch.tensor(labels[name][test_key]))
    train_size = len(labels[name]["train"])
    assert len(dataset.train) + len(dataset.val) == train_size
    assert len(dataset.val) == round(0.1 * train_size)
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.x.dtype == torch.int64 and split.x.shape[1:] == (3, TEXT["max_length"])
    assert dataset.input_shape == (3, TEXT["max_length"])
    assert 0 < dataset.vocab_size <= TEXT["vocab_size"]
    assert int(dataset.train.x[:, 0].max()) < dataset.vocab_size


def test_pairs_are_encoded_bert_style(root):
    folder, _ = root
    dataset = load_dataset("rte", data_dir=folder, **TEXT)
    ids, mask, segments = dataset.test.x.unbind(1)
    lengths = mask.sum(1)
    # The mask is a prefix of ones; padding is id 0; segments are 0 then 1, only where the mask is on.
    assert torch.equal(mask, (torch.arange(TEXT["max_length"]) < lengths[:, None]).long())
    assert (ids[mask == 0] == 0).all() and (segments[mask == 0] == 0).all()
    within = torch.where(mask == 1, segments, 1)  # padding counted as the second segment
    assert ((within[:, 1:] - within[:, :-1]) >= 0).all() and (segments.amax(1) == 1).all()
    # [CLS] first [SEP] second [SEP]: the second text opens with its label's keyword.
    lines = (folder / "RTE" / "val.jsonl").read_text().splitlines()
    for row, label, line in zip(dataset.test.x[:5], dataset.test.y[:5], lines, strict=False):
        tokens = decode(dataset, row, folder)
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
        second = tokens[tokens.index("[SEP]") + 1 :]
        assert second[0] == official_formats.KEYWORDS[int(label)]
        assert json.loads(line)["hypothesis"].lower().startswith(second[0])


def test_long_pairs_are_truncated_longest_first(root):
    folder, _ = root
    dataset = load_dataset("rte", data_dir=folder, max_length=8, vocab_size=TEXT["vocab_size"])
    ids, mask, segments = dataset.train.x.unbind(1)
    assert (mask.sum(1) <= 8).all()
    assert (segments.amax(1) == 1).all()  # the second text is never cut away entirely


def test_validation_slice_is_stratified_and_fixed_by_data_seed(root):
    folder, _ = root
    first = load_dataset("rte", data_dir=folder, data_seed=1, **TEXT)
    again = load_dataset("rte", data_dir=folder, data_seed=1, **TEXT)
    other = load_dataset("rte", data_dir=folder, data_seed=2, **TEXT)
    assert torch.equal(first.val.x, again.val.x) and torch.equal(first.train.y, again.train.y)
    assert not torch.equal(first.val.x, other.val.x)
    assert torch.equal(torch.bincount(first.val.y), torch.tensor([3, 3]))
    # Train and validation partition the training file: no pair on both sides.
    train_rows = {tuple(r.flatten().tolist()) for r in first.train.x}
    assert not any(tuple(r.flatten().tolist()) in train_rows for r in first.val.x)


def test_boolq_true_is_class_one_and_question_comes_first(root):
    folder, labels = root
    dataset = load_dataset("boolq", data_dir=folder, **TEXT)
    assert dataset.test.y.tolist() == labels["boolq"]["val"]
    first_record = json.loads((folder / "BoolQ" / "val.jsonl").read_text().splitlines()[0])
    assert int(dataset.test.y[0]) == int(first_record["label"])
    keyword = first_record["question"].split()[0].lower()
    assert keyword in official_formats.KEYWORDS


def test_qnli_tsv_with_stray_quotes_is_read_row_by_row(root):
    folder, labels = root
    dataset = load_dataset("qnli", data_dir=folder, **TEXT)
    assert len(dataset.test) == 12 and dataset.test.y.tolist() == labels["qnli"]["dev"]


def test_vocabulary_is_cached_as_json_and_reused(root, monkeypatch):
    folder, _ = root
    first = load_dataset("rte", data_dir=folder, **TEXT)
    cache = folder / "RTE" / f"wordpiece-{TEXT['vocab_size']}.json"
    assert json.loads(cache.read_text())["model"]["type"] == "WordPiece"
    assert not list((folder / "RTE").glob("*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("the cached vocabulary should have been read")

    monkeypatch.setattr(text_data, "train_wordpiece", no_training)
    second = load_dataset("rte", data_dir=folder, **TEXT)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.x, second.test.x)


def test_the_first_published_vocabulary_wins(tmp_path):
    """A trial that finishes training second uses the vocabulary published first."""
    pairs = text_data.Pairs(["the cat sat"] * 4, ["alpha river stone"] * 4, torch.zeros(4, dtype=torch.int64))
    cache = tmp_path / "wordpiece-50.json"
    published = text_data.train_wordpiece(pairs, 50)
    published.add_tokens(["published-first"])

    def train_while_another_trial_publishes():
        cache.write_text(published.to_str())  # the other trial wins the race meanwhile
        return text_data.train_wordpiece(pairs, 50)

    used = text_data.cached_wordpiece(cache, train_while_another_trial_publishes)
    assert used.token_to_id("published-first") is not None
    assert not list(tmp_path.glob("*.tmp"))


def test_pretrained_tokenizer_folder(root, tmp_path):
    folder, _ = root
    pairs = text_data.read_pairs(text_data.TEXT_SOURCES["rte"], folder / "RTE" / "train.jsonl")
    own = text_data.train_wordpiece(pairs, 60)
    (tmp_path / "tok").mkdir()
    own.save(str(tmp_path / "tok" / "tokenizer.json"))
    dataset = load_dataset("rte", data_dir=folder, tokenizer=str(tmp_path / "tok"), max_length=20)
    assert dataset.vocab_size == own.get_vocab_size() != load_dataset("rte", data_dir=folder, **TEXT).vocab_size
    test_pairs = text_data.read_pairs(text_data.TEXT_SOURCES["rte"], folder / "RTE" / "val.jsonl")
    assert torch.equal(dataset.test.x, text_data.encode_pairs(own, test_pairs, 20))
    assert not list((tmp_path / "tok").glob("wordpiece-*"))  # nothing trained or cached


def test_tokenizer_folder_without_a_tokenizer_is_refused(root, tmp_path):
    folder, _ = root
    with pytest.raises(FileNotFoundError, match="setting 'tokenizer'"):
        load_dataset("rte", data_dir=folder, tokenizer=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_dataset("rte", data_dir=folder, tokenizer=str(tmp_path / "none"))


@pytest.mark.parametrize(
    ("name", "expected", "archive"),
    [("rte", "RTE/train.jsonl", "superglue/data/v2/RTE.zip"),
     ("boolq", "BoolQ/train.jsonl", "superglue/data/v2/BoolQ.zip"),
     ("qnli", "QNLI/train.tsv", "glue/data/QNLIv2.zip")],
)
def test_missing_text_dataset_says_where_and_how_in_one_line(tmp_path, name, expected, archive):
    for attempt in (lambda: load_dataset(name, data_dir=tmp_path),
                    lambda: check_dataset_available(name, data_dir=tmp_path)):
        with pytest.raises(FileNotFoundError) as error:
            attempt()
        message = str(error.value)
        assert str(tmp_path / expected) in message and archive in message and "\n" not in message


def test_a_bad_record_is_named_by_file_and_line(tmp_path):
    official_formats.write_rte(tmp_path, train=10, val=4)
    path = tmp_path / "RTE" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"premise": "a", "hypothesis": "b", "label": "contradiction"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:3: .*'label'"):
        load_dataset("rte", data_dir=tmp_path)


def test_label_noise_flips_text_labels_too(root):
    folder, _ = root
    clean = load_dataset("rte", data_dir=folder, **TEXT)
    noisy = load_dataset("rte", data_dir=folder, label_noise=0.3, **TEXT)
    assert int(noisy.noisy.sum()) == round(0.3 * len(noisy.train))
    assert (noisy.train.y[noisy.noisy] != clean.train.y[noisy.noisy]).all()
