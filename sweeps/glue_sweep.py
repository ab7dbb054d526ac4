"""Sweep HadSkip over GLUE tasks and layer budgets on Ray: Ray Tune + Optuna search, Ray Train trials.

    python sweeps/glue_sweep.py --tasks all --budgets 3,6,9                 # 12-layer BERT-base
    python sweeps/glue_sweep.py --tasks cola,mrpc --budgets 4.5,3,1.5       # the default MiniLM-L6
    python sweeps/glue_sweep.py --smoke-test                                # a real sweep in minutes
    python sweeps/glue_sweep.py ... --name NAME --resume                    # continue an interrupted sweep

The options are those of `hadskip.cli.sweep` (`--help`); the GLUE files default to ../shared/data/glue
beside this checkout when present, else the hub.
"""

import sys
from pathlib import Path

from hadskip.cli.sweep import main

DEFAULT_GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"

if __name__ == "__main__":
    sys.exit(main(default_data_dir=DEFAULT_GLUE))
