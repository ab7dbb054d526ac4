"""bench/skip_cost.py: the routes it measures, and that its numbers belong to the rows they are compared with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model

from hadskip.core.inference import predict
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime
from hadskip.data.encoding import Encoded

spec = importlib.util.spec_from_file_location(
    "bench_skip_cost", Path(__file__).resolve().parents[1] / "bench" / "skip_cost.py"
)
skip_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(skip_cost)


def test_routes_drop_each_layer_once_then_truncate():
    routes = dict(skip_cost.routes(3))
    assert routes == {
        "all layers": [True, True, True],
        "without 1": [False, True, True],
        "without 2": [True, False, True],
        "without 3": [True, True, False],
        "first 2": [True, True, False],
        "first 1": [True, False, False],
    }


def test_logits_come_back_in_row_order_though_batches_group_rows_by_length():
    rng = np.random.default_rng(0)
    lengths = [3, 40, 5, 30, 4, 50, 6, 35] * 20  # 160 rows, 64 per batch: the batches reorder them
    ids = [[2, *rng.integers(5, 1000, size=n).tolist()] for n in lengths]
    data = Encoded(ids, None, np.array([i % 2 for i in range(len(ids))]), pad_id=0)
    model = GatedModel(tiny_model("bert")).eval()
    loss, logits = skip_cost.run_route(model, data, [True] * model.num_layers)
    expected = predict(model, data, Runtime(), open_gates=True).logits
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    rows = torch.nn.functional.cross_entropy(torch.from_numpy(expected), torch.from_numpy(data.labels))
    assert loss == pytest.approx(float(rows), abs=1e-5)
