"""Looking into trained models: ``lyapunov``, ``compact``, the ``iss`` group (tau, plot) and ``match``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sparsernn.cli.app import Device, err, note, out, print_table
from sparsernn.errors import SparsernnError
from sparsernn.files import refuse_overwriting_inputs

# lyapunov's options with a fixed set of values: option -> (parameter, the values)
_LYAPUNOV_CHOICES = {"--state": ("state", ("hc", "h")), "--basis": ("basis", ("layers", "stack")),
                     "--log-base": ("log_base", ("e", "2")),
                     "--orthonormalization": ("orthonormalization", ("householder", "cholesky"))}
_LYAPUNOV_COUNTS = {"--samples": "samples", "--steps": "steps", "--qr-every": "qr_every"}


def lyapunov(
    ckpts: Annotated[list[Path], typer.Argument(help="checkpoints or run directories (best); several are overlaid")],
    data_dir: Annotated[Optional[str], typer.Option(help="corpus [default: the one the model trained on]")] = None,
    samples: Annotated[int, typer.Option(help="K sequences from the validation data")] = 10,
    steps: Annotated[int, typer.Option(help="T steps per sequence")] = 100,
    warmup: Annotated[int, typer.Option(help="steps run before exponents are counted")] = 0,
    k: Annotated[Optional[int], typer.Option("--k", help="number of exponents [default: all]")] = None,
    state: Annotated[str, typer.Option(help="hc: (h, c) per LSTM layer; h: h only, c held fixed in the step")] = "hc",
    basis: Annotated[str, typer.Option(help="layers: one basis per layer (exact union, faster); "
                                            "stack: one basis for the whole state (the public code's estimate)")] = "layers",
    qr_every: Annotated[int, typer.Option(help="re-orthonormalise every s steps")] = 1,
    orthonormalization: Annotated[str, typer.Option(
        help="householder: QR every time; cholesky: CholeskyQR2 (GEMM-bound), Householder where it breaks down")
    ] = "householder",
    float32: Annotated[bool, typer.Option("--float32/--float64", help="arithmetic precision")] = False,
    log_base: Annotated[str, typer.Option(help="e or 2")] = "e",
    device: Device = "auto",
    out_json: Annotated[Optional[Path], typer.Option("--out", "-o", help="write spectra as JSON")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="write the spectra as a PNG plot")] = None,
) -> None:
    """Lyapunov spectrum of trained models on validation sequences (closed-form Jacobians, batched)."""
    from sparsernn.runtime import resolve_device

    options = dict(samples=samples, steps=steps, warmup=warmup, k=k, state=state, basis=basis, qr_every=qr_every,
                   orthonormalization=orthonormalization, float32=float32, log_base=log_base)
    _check_lyapunov_options(options)
    dev = resolve_device(device, "--device")
    for option, output in (("--out", out_json), ("--plot", plot)):
        if output is not None:
            refuse_overwriting_inputs(option, output, ckpts)
    spectra = _spectra(ckpts, data_dir, dev, options)
    _print_spectra(spectra, options)
    if out_json is not None:
        _write_spectra(spectra, out_json)
    if plot is not None:
        from sparsernn.plots import plot_spectra

        title = f"Lyapunov spectra: K={samples}, T={steps}, state {state}, basis {basis}"
        out.print(f"plot: {plot_spectra(spectra, plot, title=title)}")


def _check_lyapunov_options(options: dict[str, Any]) -> None:
    for option, (name, allowed) in _LYAPUNOV_CHOICES.items():
        if options[name] not in allowed:
            raise SparsernnError(f"{option}: expected {' or '.join(allowed)}, got {options[name]!r}")
    for option, name in _LYAPUNOV_COUNTS.items():
        if options[name] < 1:
            raise SparsernnError(f"{option}: expected a positive number, got {options[name]}")


def _spectra(ckpts: list[Path], data_dir: str | None, device, options: dict[str, Any]) -> dict[str, Any]:
    """Each model's spectrum on its own task's validation sequences, by the label it was given."""
    import math

    import torch

    from sparsernn.dynamics import lyapunov_spectrum
    from sparsernn.errors import memory_for
    from sparsernn.launch import model_and_task

    samples, steps = options["samples"], options["steps"]
    settings = {name: options[name] for name in ("k", "state", "basis", "warmup", "qr_every", "orthonormalization")}
    settings |= {"dtype": torch.float32 if options["float32"] else torch.float64,
                 "log_base": math.e if options["log_base"] == "e" else 2.0}
    spectra, corpora = {}, {}
    for ckpt in ckpts:
        path, model, _, task = model_and_task(ckpt, data_dir, device, corpora, note=note)
        try:
            with memory_for(f"--samples {samples}, --steps {steps}"):
                spectrum = lyapunov_spectrum(model, task.lyapunov_inputs(samples, steps), **settings)
        except ValueError as exc:
            raise SparsernnError(f"{path}: {exc}") from None
        spectra[str(ckpt)] = spectrum
        if spectrum.fallbacks:
            err.print(f"note: {path}: CholeskyQR2 broke down (ill-conditioned J Q) at {spectrum.fallbacks} step(s); "
                      f"Householder QR was used there", soft_wrap=True)
    return spectra


def _print_spectra(spectra: dict[str, Any], options: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Lyapunov spectra: K={options['samples']}, T={options['steps']}, warm-up "
                        f"{options['warmup']}, state {options['state']}, basis {options['basis']}")
    for column in ("model", "exponents", "max", "mean", "variance", "positive", "-inf"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for label, spectrum in spectra.items():
        f = spectrum.features
        stats = ["-" if f[name] is None else f"{f[name]:.4f}" for name in ("max", "mean", "variance")]
        table.add_row(label, str(spectrum.exponents.numel()), *stats, str(f["num_positive"]), str(f["num_minus_inf"]))
    out.print(table)


def _write_spectra(spectra: dict[str, Any], path: Path) -> None:
    import json

    from sparsernn.files import atomic_write_text

    atomic_write_text(path, json.dumps({label: s.to_dict() for label, s in spectra.items()}, indent=1,
                                       allow_nan=False))


def compact(
    ckpt: Annotated[Path, typer.Argument(help="checkpoint or run directory (best) with zeroed ISS components")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="compacted checkpoint (.safetensors)")],
    plots: Annotated[Optional[Path], typer.Option(help="directory for the zero-pattern and group-norm plots")] = None,
    timing: Annotated[bool, typer.Option("--timing/--no-timing", help="measure the inference speed-up (batch 10, "
                                                                      "30 steps, models interleaved)")] = True,
) -> None:
    """Remove every all-zero ISS component: a smaller dense model of plain nn.LSTM/nn.Linear modules."""
    from sparsernn.errors import Failure
    from sparsernn.runs import load_model, model_path, save_model
    from sparsernn.sparsity.iss import compact_removable, compacted_config, size_summary

    path = model_path(ckpt)
    refuse_overwriting_inputs("--out", out_path, [ckpt, path])
    model, cfg, _, meta = load_model(path)
    try:
        small = compact_removable(model, getattr(cfg.sparsity, "zero_threshold", None))  # iss/l1's setting
    except Failure as exc:
        raise Failure(f"{path}: {exc}") from None
    except ValueError as exc:
        raise SparsernnError(f"{path}: {exc}") from None
    timed: dict[str, float] = {}
    if timing:
        from sparsernn.timing import inference_seconds

        timed = inference_seconds({"before": model, "after": small}, model.vocab_size)
    rows = _size_rows(size_summary(model), size_summary(small), timed)
    save_model(out_path, small, {**meta, "config": compacted_config(cfg, small).to_dict(), "compacted_from": str(path)})
    print_table(f"compacted {path} -> {out_path}", ["", "hidden sizes", "parameters", "mult-adds / token",
                                                    *(["inference (measured)"] if timed else [])], rows)
    if plots is not None:
        _compaction_plots(model, plots)


def _size_rows(before: dict[str, Any], after: dict[str, Any], timed: dict[str, float]) -> list[list[str]]:
    """Sizes before and after compaction and their ratios; measured inference times when there are some."""
    rows = [[label, ",".join(map(str, row["hidden_sizes"])), f"{row['parameters']:,}", f"{row['multiply_adds']:,}",
             *([f"{1000 * timed[label]:.2f} ms"] if timed else [])] for label, row in (("before", before),
                                                                                      ("after", after))]
    rows.append(["ratio", "", f"{before['parameters'] / after['parameters']:.2f}x",
                 f"{before['multiply_adds'] / after['multiply_adds']:.2f}x",
                 *([f"{timed['before'] / timed['after']:.2f}x faster"] if timed else [])])
    return rows


def _compaction_plots(model, plots: Path) -> None:
    from sparsernn.plots import plot_group_norms, plot_zero_pattern
    from sparsernn.sparsity.iss import group_sq_norms

    norms = {f"layer {n + 1}": sq.sqrt() for n, sq in enumerate(group_sq_norms(model))}
    out.print(f"plots: {plot_zero_pattern(model, plots / 'zero_pattern.png')}, "
              f"{plot_group_norms(norms, plots / 'group_norms.png')}")


def iss_tau(
    ckpt: Annotated[Path, typer.Argument(help="trained checkpoint or run directory (best), usually dense")],
    margin: Annotated[float, typer.Option(help="largest relative worsening of the validation metric allowed")] = 0.01,
    data_dir: Annotated[Optional[str], typer.Option(help="corpus directory [default: the one it trained on]")] = None,
    device: Device = "auto",
) -> None:
    """The ISS paper's zeroing threshold: the largest tau whose zeroing of |w| < tau keeps validation
    perplexity within --margin; use it as --zero-threshold with --lasso-update subgradient."""
    from sparsernn.launch import model_and_task
    from sparsernn.sparsity.lasso import zeroing_threshold
    from sparsernn.runtime import resolve_device

    if not 0.0 <= margin < 1.0:
        raise SparsernnError(f"--margin: expected a fraction in [0, 1), got {margin}")
    path, model, _, task = model_and_task(ckpt, data_dir, resolve_device(device, "--device"), note=note)
    primary = task.primary.name
    try:
        tau, trials = zeroing_threshold(model, lambda m: task.evaluate(m, "valid")[primary], margin, task.primary.goal)
    except ValueError as exc:
        raise SparsernnError(f"{path}: {exc}") from None
    print_table(f"zeroing |w| < tau in {path} (validation {primary}, margin {margin:g})",
                ["tau", "weights zeroed", f"valid {primary}"],
                [[f"{t['tau']:.3g}", f"{t['zeroed']:.1%}", f"{t['score']:.3f}"] for t in trials])
    out.print(f"tau = {tau:.4g}" + (f"   (train with --lasso-update subgradient --zero-threshold {tau:.4g})"
                                     if tau > 0 else "   (even the smallest threshold tried costs more than the margin)"))


def iss_plot(
    run_dir: Annotated[Path, typer.Argument(help="run directory of an iss or l1 run (or a checkpoint)")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="directory for the PNGs [default: RUN/plots]")] = None,
) -> None:
    """Structure plots: zero pattern of each recurrent matrix, component norms (final and over epochs),
    and the all-zero rows and columns that L1 reveals."""
    from sparsernn.plots import plot_structure
    from sparsernn.runs import RunDir, load_model, model_path

    path = model_path(run_dir)
    model, _, _, _ = load_model(path)
    out_dir = out_dir or (run_dir if run_dir.is_dir() else path.parent) / "plots"
    records = [r for r in RunDir(path.parent).records() if "iss_norms" in r]  # read (and checked) before any plot
    written, lines = plot_structure(model, out_dir, records)
    print_table(f"all-zero rows and columns in {path}", ["matrix", "zero rows", "zero columns"],
                [[name, f"{line['zero_rows']}/{line['rows']}", f"{line['zero_columns']}/{line['columns']}"]
                 for name, line in lines.items()])
    out.print("plots: " + ", ".join(str(p) for p in written))


def match(
    dense: Annotated[str, typer.Option(help="the dense LSTM layer: INPUT,HIDDEN (e.g. 1150,1150)")],
    sparse: Annotated[str, typer.Option(help="the wider block-sparse layer: INPUT,HIDDEN (e.g. 1725,1725)")],
    segments: Annotated[int, typer.Option(help="parallel LSTMs in the block-sparse layer")] = 3,
) -> None:
    """Parameter matching (Demeester et al. 2018): the input-window fraction gamma that gives a wider
    block-sparse LSTM layer the parameter count of a dense one (PyTorch's two bias vectors counted)."""
    from rich.table import Table

    from sparsernn.models.cells.block_lstm import block_layout, block_parameters, dense_parameters, match_gamma

    (i_d, h_d), (i_s, h_s) = _layer_shape("--dense", dense), _layer_shape("--sparse", sparse)
    if not 1 <= segments <= h_s:
        raise SparsernnError(f"--segments: expected 1..{h_s} (the sparse layer's units), got {segments}")
    try:
        gamma, difference = match_gamma(i_d, h_d, i_s, h_s, segments)
    except ValueError as exc:
        raise SparsernnError(str(exc)) from None
    layout = block_layout(i_s, h_s, segments, gamma)
    table = Table(title=f"block-sparse ({i_s}, {h_s}, N={segments}) with the parameters of dense ({i_d}, {h_d})")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("dense parameters", f"{dense_parameters(i_d, h_d):,}")
    table.add_row("gamma (window / input)", f"{gamma:.4f}")
    table.add_row("window", f"{layout[0].width} of {i_s} inputs")
    table.add_row("segments (units)", " + ".join(str(s.hidden) for s in layout))
    table.add_row("block-sparse parameters", f"{block_parameters(i_s, h_s, segments, gamma):,}")
    table.add_row("difference", f"{difference:+,} (the integer window closest in parameters)")
    out.print(table)
    out.print(f"train with --cell block_lstm --segments {segments} --gamma {gamma:.4f}")


def _layer_shape(option: str, text: str) -> tuple[int, int]:
    """An ``INPUT,HIDDEN`` pair of positive integers."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise SparsernnError(f"{option}: expected INPUT,HIDDEN as two positive integers, got {text!r}")
    return int(parts[0]), int(parts[1])
