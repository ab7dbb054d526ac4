"""The method on torch and transformers only: architectures, skip gates, the gated model, losses, the
homotopic schedule, the training loop and HadSkip's stages, inference and speed measurement."""
