"""One run on one task (`hadskip.run.train.train_run`): the backbone and task data, stage I and its cache,
HadSkip's walk along the homotopic path or an early-exit method, and the shared step that evaluates,
checkpoints and publishes every budget's point."""
