"""What a method's training body needs from the run around it, and the one step every evaluated budget
goes through: evaluate on dev, time it (when asked), save its checkpoint, publish its results row."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hadskip.config import RunSettings
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime
from hadskip.core.speed import SpeedRow, measure_speed
from hadskip.results.schema import ResultRow, make_row
from hadskip.run.run_dir import RunDir, RunState, checkpoint_rel
from hadskip.run.task_data import TaskData, evaluate

log = logging.getLogger(__name__)

# dev rows timed for the speed columns (a warm-up + 2 interleaved repeats of full/gated/forced)
SPEED_ROWS = 128

PointCallback = Callable[[ResultRow, Path | None], None]


def budget_seed(seed: int, budget: float) -> int:
    """The seed of the training that ends at `budget` (a HadSkip stage III step, a static model): one per
    budget, the same whether the run started fresh or resumed."""
    return seed + 3 + round(budget * 100)


@dataclass
class RunContext:
    """One run's settings, data, place, state and output, handed to the method that trains in it."""

    settings: RunSettings
    run: RunDir
    state: RunState
    data: TaskData
    runtime: Runtime
    stage1_path: Path
    targets: list[float]  # budgets to evaluate, highest first
    num_layers: int
    done: set[tuple[str, float]]  # (method, budget) points finished before a restart
    publish: PointCallback
    save_checkpoints: bool

    def remaining(self, method: str) -> list[float]:
        return [k for k in self.targets if (method, k) not in self.done]

    def save_state(self) -> None:
        if self.runtime.is_main:
            self.run.write("state.json", self.state.to_json())

    def save_checkpoint(self, model: GatedModel, rel: str, meta: dict) -> str | None:
        """Save a model under the run (main worker only, when checkpoints are kept); its URI or None."""
        if not (self.save_checkpoints and self.runtime.is_main):
            return None
        return self.run.save_checkpoint(model, self.data.tokenizer, rel, meta)

    def measure_speed(self, model: GatedModel) -> SpeedRow | None:
        """The measured speed-up at `speed_batch_size` (None when off, or not the main worker)."""
        if not self.settings.speed_batch_size or not self.runtime.is_main:
            return None
        return measure_speed(
            model,
            self.data.dev["dev"],
            [self.settings.speed_batch_size],
            device=self.runtime.device,
            repeats=2,
            max_rows=SPEED_ROWS,
        )[0]

    def finish_point(
        self,
        model: GatedModel,
        method: str,
        budget: float,
        *,
        threshold: float | None,
        train_seconds: float,
        resume_from_here: bool = False,
    ) -> ResultRow:
        """Evaluate `model` at `budget` on dev, save its checkpoint, publish and return its row.
        `resume_from_here`: a restart continues from this checkpoint (HadSkip's walk)."""
        ev = evaluate(model, self.data, self.runtime, self.settings.eval_batch_size)
        speed = self.measure_speed(model)
        rel = checkpoint_rel(budget)
        uri = self.save_checkpoint(
            model, rel, {"budget": budget, "metric": ev.metric, "task": self.data.task.name}
        )
        if uri is not None and resume_from_here:  # recorded in state.json by the publish below
            self.state.resume_from, self.state.resume_budget = rel, budget
        log.info(
            "%s budget %g: %s %.4f, mean layers %.2f",
            method,
            budget,
            self.data.task.metric,
            ev.metric,
            ev.stats["mean_layers"],
        )
        speed_fields = (
            {
                "speedup": speed.speedup,
                "ideal_speedup": speed.ideal_speedup,
                "speed_batch_size": speed.batch_size,
                "device": speed.device,
                "dtype": speed.dtype,
            }
            if speed is not None
            else {}
        )
        row = make_row(
            self.settings,
            run_id=self.state.run_id,
            method=method,
            num_layers=self.num_layers,
            budget=budget,
            majority=self.data.majority,
            metric=ev.metric,
            metrics=ev.metrics,
            layer_stats=ev.stats,
            train_seconds=train_seconds,
            eval_seconds=ev.seconds,
            checkpoint=uri,
            gate_threshold=threshold,
            **speed_fields,
        )
        self.publish(row, self.run.local / rel if uri else None)
        return row
