"""Ray sweeps: plain settings and search spaces (`settings`, no Ray), the per-trial rows (`rows`), the Ray Train
worker (`worker`), the Tune driver (`driver`) and the cluster-config check (`cluster`). This package is the only
one that imports Ray, and only inside functions that run it.

```python
from hadskip.sweep import SweepSettings, run_sweep
```
Both load on first use, so `hadskip.sweep.settings` imports without torch.
"""

__all__ = ["SweepSettings", "run_sweep"]


def __getattr__(name: str):
    if name == "SweepSettings":
        from hadskip.sweep.settings import SweepSettings

        return SweepSettings
    if name == "run_sweep":
        from hadskip.sweep.driver import run_sweep

        return run_sweep
    raise AttributeError(f"module 'hadskip.sweep' has no attribute {name!r}")
