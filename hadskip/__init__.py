"""HadSkip: homotopic, adaptive layer skipping for BERT-family encoders (Wang et al., 2023).

`hadskip.load(path)` reads any checkpoint this package writes; `hadskip.GatedModel` wraps an HF model.
Both load on first use, so `import hadskip.results` (pandas and pyarrow only) does not pull in torch.
"""

__all__ = ["GatedModel", "load"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "GatedModel":
        from hadskip.core.model import GatedModel

        return GatedModel
    if name == "load":
        from hadskip.checkpoint import load

        return load
    raise AttributeError(f"module 'hadskip' has no attribute {name!r}")
