"""Sentence-pair datasets (BoolQ, RTE, QNLI) read from their official files and tokenised.

Each dataset is read from the files of its official release under `data_dir`
(nothing is downloaded at run time). The official test files carry no labels,
so the official validation file is the test split; `trainables.data` carves the
validation split from the training file with `data_seed`.

Tokenisation, for every example, gives three int64 rows of length
`max_length`: token ids, attention mask, segment (token type) ids, held as one
(N, 3, max_length) tensor so the training loop only slices tensors. Pairs are
encoded BERT-style, `[CLS] first [SEP] second [SEP]`, truncated longest-first
and padded on the right.

The tokenizer is either a local pretrained one (a folder with `tokenizer.json`,
or any folder `transformers.AutoTokenizer` reads offline, such as a BERT
folder with `vocab.txt` and `config.json`) or a WordPiece vocabulary trained
with HF `tokenizers` on the whole official training file (no labels are used). The trained vocabulary is cached
beside the data as JSON (`<folder>/wordpiece-<vocab_size>.json`), because
training it anew is not deterministic: `tokenizers` breaks frequency ties in an
unspecified order. The first trial to finish training publishes its file with an
atomic create-if-absent and every trial then reads the published file, so all
trials of a sweep and every replay share one vocabulary. Delete the file after
changing the training data.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class TextSource:
    """Where a dataset's official files are and how to read one example."""

    folder: str
    train_file: str
    test_file: str  # the official validation file: the official test file has no labels
    first: str  # field of the first text of the pair
    second: str
    labels: dict[Any, int]  # official label value -> class index
    url: str


_NLI_LABELS = {"entailment": 0, "not_entailment": 1}
TEXT_SOURCES: dict[str, TextSource] = {
    "boolq": TextSource(
        "BoolQ", "train.jsonl", "val.jsonl", "question", "passage", {False: 0, True: 1},
        "https://dl.fbaipublicfiles.com/glue/superglue/data/v2/BoolQ.zip",
    ),
    "rte": TextSource(
        "RTE", "train.jsonl", "val.jsonl", "premise", "hypothesis", _NLI_LABELS,
        "https://dl.fbaipublicfiles.com/glue/superglue/data/v2/RTE.zip",
    ),
    "qnli": TextSource(
        "QNLI", "train.tsv", "dev.tsv", "question", "sentence", _NLI_LABELS,
        "https://dl.fbaipublicfiles.com/glue/data/QNLIv2.zip",
    ),
}
NUM_CLASSES = 2


@dataclass(frozen=True)
class Pairs:
    """The text pairs of one official file and their class indices."""

    first: list[str]
    second: list[str]
    labels: torch.Tensor  # int64


@dataclass(frozen=True)
class EncodedText:
    """A text dataset tokenised: (N, 3, L) int64 ids/mask/segments per file, labels, vocabulary."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    vocab_size: int


def missing_text_file(name: str, data_dir: Path) -> str | None:
    """A one-line explanation when the dataset's files are absent, else None."""
    source = TEXT_SOURCES[name]
    root = data_dir / source.folder
    for file in (source.train_file, source.test_file):
        if not (root / file).is_file():
            return (
                f"{name}: expected {root / file} (the official release) but it is missing. "
                f"Download {source.url} and unzip it into {data_dir}."
            )
    return None


def load_text(
    name: str, *, data_dir: Path, tokenizer: str, vocab_size: int, max_length: int
) -> EncodedText:
    """Read and tokenise `name`; `tokenizer` is a folder path, or empty to train WordPiece."""
    problem = missing_text_file(name, data_dir)
    if problem:
        raise FileNotFoundError(problem)
    source = TEXT_SOURCES[name]
    root = data_dir / source.folder
    train = read_pairs(source, root / source.train_file)
    test = read_pairs(source, root / source.test_file)
    if tokenizer:
        backend = pretrained_tokenizer(Path(tokenizer).expanduser())
    else:
        cache = root / f"wordpiece-{vocab_size}.json"
        backend = cached_wordpiece(cache, lambda: train_wordpiece(train, vocab_size))
    return EncodedText(
        train_x=encode_pairs(backend, train, max_length),
        train_y=train.labels,
        test_x=encode_pairs(backend, test, max_length),
        test_y=test.labels,
        vocab_size=backend.get_vocab_size(with_added_tokens=True),
    )


# -- reading the official files ------------------------------------------------
def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSON-lines file or a GLUE TSV file with a header row."""
    with open(path, encoding="utf-8", newline="") as handle:
        if path.suffix == ".jsonl":
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, json.loads(line)
        else:
            # GLUE's TSVs contain stray quotes: read them without quoting, as GLUE's own code does.
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows, [])
            for number, row in enumerate(rows, start=2):
                yield number, dict(zip(header, row, strict=False))


def read_pairs(source: TextSource, path: Path) -> Pairs:
    """Every labelled pair of one official file (ValueError naming the line of a bad record)."""
    first, second, labels = [], [], []
    for number, record in _records(path):
        try:
            label = source.labels[record["label"]]
            first.append(str(record[source.first]))
            second.append(str(record[source.second]))
        except (KeyError, TypeError) as error:
            known = ", ".join(map(repr, source.labels))
            raise ValueError(
                f"{path}:{number}: expected fields {source.first!r}, {source.second!r} and "
                f"'label' (one of {known}); problem with {error}"
            ) from None
        labels.append(label)
    if not labels:
        raise ValueError(f"{path} holds no examples")
    return Pairs(first, second, torch.tensor(labels, dtype=torch.int64))


# -- tokenizers ------------------------------------------------------------------
def train_wordpiece(pairs: Pairs, vocab_size: int):
    """A BERT-style (lower-cased) WordPiece tokenizer trained on both texts of every pair."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    backend.train_from_iterator(pairs.first + pairs.second, trainer)
    return backend


def cached_wordpiece(cache: Path, train: Callable[[], Any]):
    """The vocabulary published at `cache`, training and publishing one if there is none.

    Publishing links a private file to `cache` (atomic and refused when the
    file exists), so concurrent trials never overwrite each other and all
    read the one vocabulary that was published first. The file is JSON: reading
    it runs no code.
    """
    from tokenizers import Tokenizer

    if not cache.is_file():
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(train().to_str(), encoding="utf-8")
        try:
            os.link(partial, cache)
        except FileExistsError:
            pass  # another trial published first: use its vocabulary
        except OSError:
            os.replace(partial, cache)  # a file system without hard links
        finally:
            partial.unlink(missing_ok=True)
    return Tokenizer.from_file(str(cache))


def pretrained_tokenizer(folder: Path):
    """The `tokenizers` backend of a local pretrained tokenizer folder (never downloads)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"setting 'tokenizer': {folder} is not a folder")
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError):
        raise FileNotFoundError(
            f"setting 'tokenizer': {folder} holds no tokenizer that can be read offline "
            f"(tokenizer.json, or vocab.txt beside the model's config.json)"
        ) from None
    return loaded.backend_tokenizer


def encode_pairs(backend: Any, pairs: Pairs, max_length: int) -> torch.Tensor:
    """(N, 3, max_length) int64: token ids, attention mask and segment ids of every pair."""
    from tokenizers import processors

    backend = type(backend).from_str(backend.to_str())  # a copy: padding settings stay local
    cls, sep, pad = (backend.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    if cls is None or sep is None or pad is None:
        raise ValueError("the tokenizer has no [CLS], [SEP] or [PAD] token: pairs need BERT-style specials")
    if backend.post_processor is None:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    backend.enable_truncation(max_length=max_length, strategy="longest_first")
    backend.enable_padding(length=max_length, pad_id=pad, pad_token="[PAD]", direction="right")
    encodings = backend.encode_batch(list(zip(pairs.first, pairs.second, strict=True)))
    rows = [
        np.array([getattr(e, field) for e in encodings], dtype=np.int64)
        for field in ("ids", "attention_mask", "type_ids")
    ]
    return torch.from_numpy(np.stack(rows, axis=1))
