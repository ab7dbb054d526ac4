"""Two data-parallel workers on CPU (gloo): same weights after training, evaluation gathered on both."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import tiny_model

    from hadskip.config import Stage1Settings
    from hadskip.core.inference import predict
    from hadskip.core.loop import fit
    from hadskip.core.model import GatedModel
    from hadskip.core.runtime import Runtime
    from hadskip.core.stages import stage1
    from hadskip.data.encoding import Encoded

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        model = GatedModel(tiny_model("bert", seed=rank))  # different on purpose: broadcast must align them
        rt = Runtime(rank=rank, world_size=world, progress=False)
        rt.broadcast_module(model)
        rng = np.random.default_rng(0)
        ids = [[2, *rng.integers(5, 1000, size=int(rng.integers(3, 10))).tolist()] for _ in range(64)]
        data = Encoded(ids, None, np.array([i % 2 for i in range(64)]), pad_id=0)
        fit(model, stage1(Stage1Settings(batch_size=8, max_steps=3, lr=1e-3)), data, rt, seed=0)
        out = predict(model, data, rt, batch_size=16, open_gates=True)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.save({"params": flat, "logits": out.logits, "n": len(out.logits)}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_workers_stay_in_sync(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    torch.testing.assert_close(r0["params"], r1["params"])
    assert r0["n"] == r1["n"] == 64
    np.testing.assert_allclose(r0["logits"], r1["logits"])
