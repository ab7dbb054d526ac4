"""The command line: argument parsing and the command table (`hadskip ...`, and the sweep's
`sweeps/glue_sweep.py`). The only package that imports argparse; library modules expose functions and this
calls them."""

from hadskip.cli.commands import main

__all__ = ["main"]
