"""Seconds per stage III step: every distillation term (eager attention, a teacher pass per step), prediction
distillation only with a teacher pass per step, and prediction distillation only from teacher logits cached
once per task (what a run does when alpha_hidden = alpha_attn = alpha_emb = 0).

    python bench/stage3_step.py [--task cola] [--rows 640] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hadskip.cli.commands import quiet_transformers
from hadskip.config import GateSettings, Stage3Settings, build_settings
from hadskip.core.inference import predict
from hadskip.core.loop import fit
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime
from hadskip.core.stages import stage3
from hadskip.run.backbone import load_classifier, resolve_model_source
from hadskip.run.task_data import load_task_data
from hadskip.tables import Column, text_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cola")
    p.add_argument("--rows", type=int, default=640)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")
    )
    args = p.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)
    settings = build_settings(
        {}, [f"data.task={args.task}", f'data.data_dir="{args.data_dir}"', f"data.train_limit={args.rows}"]
    )
    source = resolve_model_source(settings.model.name_or_path)
    data = load_task_data(settings, source)
    teacher = GatedModel(load_classifier(source, data.task, settings)).eval()
    runtime = Runtime()
    records = []
    for name, alphas, cached in (
        ("every term, teacher pass per step", {"alpha_hidden": 1, "alpha_attn": 1, "alpha_emb": 1}, False),
        ("prediction KD, teacher pass per step", {"alpha_hidden": 0, "alpha_attn": 0, "alpha_emb": 0}, False),
        ("prediction KD, cached teacher logits", {"alpha_hidden": 0, "alpha_attn": 0, "alpha_emb": 0}, True),
    ):
        s3 = Stage3Settings(max_steps=args.steps, batch_size=32, **alphas)
        teacher.set_attn_implementation("eager" if s3.alpha_attn > 0 else "sdpa")  # as the HadSkip walk does
        start = time.perf_counter()
        logits = (
            torch.from_numpy(predict(teacher, data.train, runtime, open_gates=True).logits)
            if cached
            else None
        )
        cache_s = time.perf_counter() - start
        student = GatedModel(load_classifier(source, data.task, settings))
        stats = fit(student, stage3(s3, GateSettings(), teacher, 4.5, logits), data.train, runtime, seed=0)
        records.append(
            {"variant": name, "s/step": f"{stats.seconds / stats.steps:.3f}", "cache s": f"{cache_s:.1f}"}
        )
    print(f"{args.task}, {args.rows} training rows, {args.steps} steps of batch 32, {args.threads} thread(s)")
    print(text_table(records, [Column("variant", align="<"), Column("s/step"), Column("cache s")]))


if __name__ == "__main__":
    main()
