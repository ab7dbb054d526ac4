"""Tokenised splits, length-grouped batching and dynamic padding."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hadskip.data.tasks import Split


@dataclass
class Encoded:
    """A tokenised split: ragged token ids (no padding) and labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def sample(self, rows: int, seed: int) -> Encoded:
        """A seeded random slice of at most `rows` rows, in their original order (calibration slices)."""
        rng = np.random.default_rng(seed)
        return self.subset(np.sort(rng.permutation(len(self))[: min(rows, len(self))]))

    def subset(self, idx: np.ndarray) -> Encoded:
        return Encoded(
            [self.input_ids[i] for i in idx],
            None if self.token_type_ids is None else [self.token_type_ids[i] for i in idx],
            self.labels[idx],
            self.pad_id,
        )

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode(split: Split, tokenizer, max_length: int) -> Encoded:
    enc = tokenizer(split.text_a, split.text_b, truncation=True, max_length=max_length, padding=False)
    types = enc.get("token_type_ids")
    return Encoded(enc["input_ids"], types, split.labels, tokenizer.pad_token_id or 0)


def batch_indices(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    group: int = 50,
) -> list[np.ndarray]:
    """Batches of row indices. Training: shuffle, then sort by length inside windows of `group` batches
    so a batch holds similar lengths (less padding), then shuffle the batches. Evaluation: sorted by
    length. With several workers each takes every world_size-th batch (same count on every rank)."""
    n = len(lengths)
    if shuffle:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        window = batch_size * group
        order = np.concatenate(
            [
                chunk[np.argsort(lengths[chunk], kind="stable")]
                for chunk in np.array_split(order, max(1, -(-n // window)))
            ]
        )
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    else:
        order = np.argsort(lengths, kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if world_size > 1:
        per_rank = len(batches) // world_size
        if per_rank == 0:
            raise ValueError(f"{len(batches)} batches cannot be shared by {world_size} workers")
        batches = batches[rank : per_rank * world_size : world_size]
    return batches


def collate(data: Encoded, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Pad the rows `idx` to their longest member."""
    rows = [data.input_ids[i] for i in idx]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), data.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long) if data.token_type_ids is not None else None
    for j, (i, r) in enumerate(zip(idx, rows, strict=True)):
        ids[j, : len(r)] = torch.tensor(r)
        mask[j, : len(r)] = 1
        if types is not None:
            types[j, : len(r)] = torch.tensor(data.token_type_ids[i])
    labels = torch.as_tensor(data.labels[idx])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if types is not None:
        batch["token_type_ids"] = types
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def iterate(
    data: Encoded, batches: list[np.ndarray], device
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    for idx in batches:
        yield idx, collate(data, idx, device)
