"""HadSkip: homotopic, adaptive layer skipping for BERT-family encoders (Wang et al., 2023)."""

from hadskip.model import GatedModel, load

__all__ = ["GatedModel", "load"]
__version__ = "0.1.0"
