"""The early-exit baselines HadSkip is compared with (paper Table 1): one `ExitModel` with internal
classifiers (exit_model), exit rules and their calibration (rules), one file per method holding its loss
(static, entropy, pabee, berxit, leebert), and `training`, which binds each method of the registry to its
loss as a stage of the one training loop."""
