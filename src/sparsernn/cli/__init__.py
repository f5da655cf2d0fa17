"""The ``sparsernn`` command line: parse, call the package, print.

The commands live in groups (``training``, ``search``, ``analysis``, ``deploy``, ``data``, ``listings``), each a thin
function; ``app`` holds the Typer app, the consoles and the one-line error exit they share, ``options``
the options generated from the settings models. They are registered here, in the order ``--help``
lists them.
"""

from __future__ import annotations

from sparsernn.cli import analysis, data, deploy, listings, search, training
from sparsernn.cli.app import app, data_app, err, iss_app, main, out, tag_app
from sparsernn.cli.options import EXECUTOR_OPTION_FIELDS, SEARCH_OPTION_FIELDS, TRAIN_OPTION_FIELDS, option_value
from sparsernn.cli.search import winner_lines

app.command("train")(training.train)
tag_app.command("train")(training.tag_train)
app.command("hyperprune")(search.hyperprune)
app.command("eval")(training.eval_)
app.command()(analysis.lyapunov)
app.command()(analysis.compact)
tag_app.command("eval")(training.tag_eval)
tag_app.command("predict")(training.tag_predict)
iss_app.command("tau")(analysis.iss_tau)
iss_app.command("plot")(analysis.iss_plot)
app.command()(analysis.match)
app.command()(deploy.export)
app.command()(deploy.quantize)
app.command()(deploy.generate)
app.command()(listings.presets)
app.command()(listings.methods)
app.command()(listings.cells)
app.command()(listings.tasks)
data_app.command("verify")(data.data_verify)
data_app.command("download")(data.data_download)

__all__ = ["EXECUTOR_OPTION_FIELDS", "SEARCH_OPTION_FIELDS", "TRAIN_OPTION_FIELDS", "app", "err", "main",
           "option_value", "out", "winner_lines"]
