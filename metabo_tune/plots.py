"""Per-trial PNGs (MLP_sub, MLP_node, learned vs true k, embeddings and loss curves) and the sweep's
metric-against-value curves.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so nothing touches a
global figure registry or the backend of the process (trials may share one). Curves come from the
helpers in metrics.py, so plots and metrics show the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from metabo_tune import metrics as m
from metabo_tune.model import MetabolicGNN
from metabo_tune.simulate import Dataset

DPI = 100
TYPE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _colour(t: int) -> str:
    return TYPE_COLOURS[t % len(TYPE_COLOURS)]


# Fixed margins in inches (left, right, bottom, top), wide enough for our tick labels and axis labels.
# tight_layout would fit them, but it draws the figure once more: half a trial's plotting time.
MARGINS_IN = (0.9, 0.25, 0.6, 0.4)
TWIN_AXIS_RIGHT_IN = 0.8


def _save(path: Path, draw: Callable[[Axes], None], size: tuple[float, float] = (6.4, 4.8),
          right_in: float = MARGINS_IN[1]) -> Path:
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    draw(fig.add_subplot())
    (width, height), (left, _, bottom, top) = size, MARGINS_IN
    fig.subplots_adjust(left=left / width, right=1 - right_in / width, bottom=bottom / height, top=1 - top / height)
    fig.savefig(path, dpi=DPI)
    return path


def _plot_substrate(ax: Axes, model: MetabolicGNN, dataset: Dataset) -> None:
    conc = dataset.observed.trajectory.concentrations
    alpha_ls = m.alpha_least_squares(model, conc)
    c, values = m.substrate_curve(model, conc)
    hist = ax.twinx()
    hist.hist(conc.ravel(), bins=60, range=(c[0], c[-1]), color="grey", alpha=0.2)
    hist.set_ylabel("frames × metabolites (data)", color="grey")
    ax.set_zorder(hist.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(c, values / alpha_ls, color="tab:blue", label="learned MLP_sub(c, 1) / α_ls")
    ax.plot(c, c, "k--", label="true rate law c")
    ax.set_xlabel("concentration c")
    ax.set_ylabel("substrate term")
    ax.set_title(f"MLP_sub over the observed 0–99 % range (α_ls = {alpha_ls:.4g})")
    ax.legend(loc="upper left")


def _plot_homeostasis(ax: Axes, model: MetabolicGNN, dataset: Dataset) -> None:
    grid, values = m.homeostasis_grid(model, dataset.observed.trajectory.concentrations)
    truth = dataset.truth
    types = truth.types if truth is not None else np.zeros(grid.shape[1], dtype=int)
    for i in range(grid.shape[1]):
        ax.plot(grid[:, i], values[:, i], color=_colour(int(types[i])), alpha=0.4, lw=1)
    if truth is None:
        ax.plot([], [], color=_colour(0), label="learned, per metabolite")
    else:
        for t, (lam, base) in enumerate(zip(truth.lambda_per_type, truth.baseline_per_type, strict=True)):
            members = types == t
            if not members.any():
                continue
            c = np.linspace(grid[:, members].min(), grid[:, members].max(), 100)
            ax.plot([], [], color=_colour(t), label=f"learned, type {t}")
            ax.plot(c, _true_type_homeostasis(truth, t, c), "--", color=_colour(t), lw=2,
                    label=_true_type_label(truth, lam, base, t))
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("concentration c (each metabolite over its own 5–95 % range)")
    ax.set_ylabel("MLP_node(c, a_i)")
    ax.set_title("Homeostasis function per metabolite")
    ax.legend(fontsize="small")


def _true_type_homeostasis(truth, t: int, c: np.ndarray) -> np.ndarray:
    """The true h of type t at c; its tangent at b (slope −λ) where the form is not known."""
    if truth.homeostasis_width is None:
        return -truth.lambda_per_type[t] * (c - truth.baseline_per_type[t])
    member = int(np.flatnonzero(truth.types == t)[0])
    return truth.homeostasis(np.repeat(c[:, None], len(truth.types), axis=1))[:, member]


def _true_type_label(truth, lam: float, base: float, t: int) -> str:
    if truth.homeostasis_width is None:
        return f"true type {t}, tangent at b (form unknown): −{lam:g}·(c − {base:g})"
    if truth.homeostasis_form == "linear":
        return f"true type {t}: −{lam:g}·(c − {base:g})"
    return f"true type {t}: −{lam:g}·{truth.homeostasis_width:g}·tanh((c − {base:g})/{truth.homeostasis_width:g})"


def _plot_substrate_forms(ax: Axes, model: MetabolicGNN, dataset: Dataset) -> None:
    """log–log per order: the learned f̂ = |MLP_sub(c, s)| shifted by the mean log offset that the shape R²
    removes, against the true f (or, without it, f̂ in the gauge f̂(1, s) = 1 beside c^s)."""
    network, truth = dataset.observed.network, dataset.truth
    known = truth is not None and truth.michaelis_K is not None
    log_at_one = m.substrate_at_one(model, network.substrate_order)
    for i, (s, c) in enumerate(m.order_shape_points(network, dataset.observed.trajectory.concentrations).items()):
        learned = np.abs(m.substrate_values(model, c, s))
        if known:
            true = truth.substrate(c, s)
            shift = np.mean(np.log10(true)) - np.mean(np.log10(learned + 1e-300))
            reference, label = true, f"true f(c)^{s} ({truth.substrate_kinetics})"
        else:
            shift, reference, label = -log_at_one[s], c**s, f"c^{s} (mass action, for reference)"
        ax.plot(c, learned * 10.0**shift, color=f"C{i}", label=f"learned, order {s}")
        ax.plot(c, reference, "--", color=f"C{i}", lw=2, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concentration c (1st–99th percentile of the order's substrates)")
    ax.set_ylabel("substrate term (learned: mean log offset removed)" if known else "substrate term, f̂(1, s) = 1")
    ax.set_title("MLP_sub shape per order, learned against true")
    ax.legend(fontsize="small")


def _plot_homeostasis_forms(ax: Axes, model: MetabolicGNN, dataset: Dataset) -> None:
    """Per type: the median learned h over the type's range against the true h, the zeros marked."""
    truth = dataset.truth
    conc = dataset.observed.trajectory.concentrations
    types = truth.types
    n_types = len(truth.lambda_per_type)
    grid, median = m.type_median_curves(model, conc, types, n_types)
    zeros, _ = m.type_zero_and_slopes(model, conc, types, n_types)
    for t in range(grid.shape[1]):
        if not (types == t).any():
            continue
        ax.plot(grid[:, t], median[:, t], color=_colour(t), label=f"learned, type {t} (median of its metabolites)")
        if np.isfinite(zeros[t]):
            ax.plot([zeros[t]], [0.0], "o", color=_colour(t))
        if truth.homeostasis_width is not None:
            ax.plot(grid[:, t], _true_type_homeostasis(truth, t, grid[:, t]), "--", color=_colour(t), lw=2,
                    label=f"true type {t} ({truth.homeostasis_form})")
        ax.plot([truth.baseline_per_type[t]], [0.0], "x", color=_colour(t), ms=10)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("concentration c (the type's observed range); o learned zero, x true baseline")
    ax.set_ylabel("h(c)")
    ax.set_title("Homeostasis per type, learned against true")
    ax.legend(fontsize="small")


def _plot_rate_constants(ax: Axes, model: MetabolicGNN, dataset: Dataset) -> None:
    truth, network = dataset.truth, dataset.observed.network
    n_subs = m.n_substrates(network)
    log_alpha = m.log10_alpha(m.alpha_point(model))
    learned = m.to_numpy(model.log_k)
    corrected = m.corrected_log_k(learned, n_subs, log_alpha)
    mask = dataset.identifiability.identifiable
    scores = m.rate_constant_metrics(learned, truth.log_k, n_subs, log_alpha, mask)
    ax.scatter(truth.log_k[mask], corrected[mask], s=12, color="black", label="identifiable")
    ax.scatter(truth.log_k[~mask], corrected[~mask], s=30, marker="x", color="tab:red",
               label="not identifiable from the data")
    lo = float(np.nanmin([truth.log_k.min(), np.nanmin(corrected)]))
    hi = float(np.nanmax([truth.log_k.max(), np.nanmax(corrected)]))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
    ax.set_xlabel("true log10 k")
    ax.set_ylabel("learned log10 k + n_sub·log10 α")
    ax.set_title(f"Rate constants: R² = {scores['rate_constants_R2']:.3f}, "
                 f"RMSE = {scores['log_k_rmse']:.3f}, outliers = {scores['n_outliers']} "
                 f"(of {scores['n_identifiable']} identifiable)", fontsize="medium")
    ax.legend(fontsize="small")


def _plot_embeddings(ax: Axes, model: MetabolicGNN, dataset: Dataset) -> None:
    emb = m.to_numpy(model.embedding)
    y = emb[:, 1] if emb.shape[1] > 1 else np.zeros(len(emb))
    if dataset.truth is None:
        ax.scatter(emb[:, 0], y, s=15, color=_colour(0))
    else:
        for t in np.unique(dataset.truth.types):
            members = dataset.truth.types == t
            ax.scatter(emb[members, 0], y[members], s=15, color=_colour(int(t)), label=f"type {t}")
        ax.legend()
    ax.set_xlabel("embedding dim 0")
    ax.set_ylabel("embedding dim 1" if emb.shape[1] > 1 else "")
    ax.set_title("Metabolite embeddings a_i")


def _plot_loss(ax: Axes, loss_history: dict[str, np.ndarray]) -> None:
    components = {k: np.asarray(v, dtype=float) for k, v in loss_history.items() if k != "iteration"}
    length = max((len(v) for v in components.values()), default=0)
    x = np.asarray(loss_history.get("iteration", np.arange(length)), dtype=float)
    # Per-iteration losses jump by orders of magnitude between batches: draw each component's running
    # mean over 1 % of the run, with the raw values faint behind the total.
    window = max(1, length // 100)
    plotted = False
    for name, values in components.items():
        keep = np.isfinite(values) & (values > 0)
        if not keep.any():
            continue
        if name == "loss":
            ax.plot(x[keep], values[keep], lw=0.5, color="0.8", zorder=0, label="loss (per iteration)")
        smooth = np.convolve(np.where(keep, values, 0.0), np.ones(window), "same")
        counts = np.convolve(keep.astype(float), np.ones(window), "same")
        shown = counts > 0
        ax.plot(x[shown], smooth[shown] / counts[shown], lw=1.2, label=f"{name} (running mean)")
        plotted = True
    if plotted:
        ax.set_yscale("log")
        ax.legend(fontsize="small", loc="upper right")  # "best" scans every drawn point: seconds for a long run
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (positive values)")
    ax.set_title(f"Training loss components (running mean over {window} iterations)")


def write_trial_plots(model: MetabolicGNN, dataset: Dataset, loss_history: dict[str, np.ndarray] | None,
                      out_dir: str | Path) -> list[Path]:
    """Write the trial's PNGs into out_dir; mlp_node_forms.png and rate_constants.png need the truth and
    are skipped without it, loss.png a loss history (the regression has none)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _save(out / "mlp_sub.png", lambda ax: _plot_substrate(ax, model, dataset), right_in=TWIN_AXIS_RIGHT_IN),
        _save(out / "mlp_node.png", lambda ax: _plot_homeostasis(ax, model, dataset), (7.5, 5.0)),
    ]
    written.append(_save(out / "mlp_sub_forms.png", lambda ax: _plot_substrate_forms(ax, model, dataset)))
    if dataset.truth is not None:
        written.append(_save(out / "mlp_node_forms.png", lambda ax: _plot_homeostasis_forms(ax, model, dataset),
                             (7.5, 5.0)))
        written.append(_save(out / "rate_constants.png", lambda ax: _plot_rate_constants(ax, model, dataset)))
    written.append(_save(out / "embeddings.png", lambda ax: _plot_embeddings(ax, model, dataset)))
    if loss_history is not None:
        written.append(_save(out / "loss.png", lambda ax: _plot_loss(ax, loss_history)))
    return written


def _log_or_symlog(set_scale: Callable[..., None], values: np.ndarray) -> None:
    """Log when every value is positive, else symlog linear up to the smallest non-zero |value| (so 0 and
    negative values are shown)."""
    if (values > 0).all():
        set_scale("log")
    else:
        nonzero = np.abs(values[values != 0])
        set_scale("symlog", linthresh=float(nonzero.min()) if nonzero.size else 1.0)


def _value_axis(ax: Axes, values: np.ndarray) -> None:
    """Log or symlog x (`_log_or_symlog`), a tick at each value."""
    values = np.unique(values)
    _log_or_symlog(ax.set_xscale, values)
    ax.set_xticks(values, [f"{v:g}" for v in values], rotation=45, fontsize="small")
    ax.xaxis.set_minor_locator(NullLocator())


def _ratio_axis(ax: Axes) -> None:
    """Log y for a ratio (2× too steep and 2× too flat are equally wrong), symlog when a curve drawn on `ax` has
    a value ≤ 0, which a log axis would drop."""
    drawn = np.concatenate([np.empty(0), *(np.asarray(c.lines[0].get_ydata(), dtype=float) for c in ax.containers)])
    _log_or_symlog(ax.set_yscale, drawn[np.isfinite(drawn)])


def curve_figure(curves: dict[str, pd.DataFrame], key: str, panels: list[str],
                 truths: dict[str, float] | None = None, columns: int = 3) -> Figure:
    """One panel per name in `panels`: each curve (label → table indexed by the values of `key`) as
    `<name>_mean` with `<name>_sd` error bars, or as the plain column `<name>` without; a dashed line
    at `truths[name]` where given, and at 1 on the slope-ratio panels, which have a log y axis (symlog when a
    value is ≤ 0). A curve without the panel's column is left out of that panel."""
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.4 * rows), dpi=DPI)
    FigureCanvasAgg(fig)
    values = np.concatenate([np.asarray(table.index, dtype=float) for table in curves.values()])
    for n, name in enumerate(panels):
        ax = fig.add_subplot(rows, columns, n + 1)
        _value_axis(ax, values)
        for i, (label, table) in enumerate(curves.items()):
            table = table.sort_index()
            x = np.asarray(table.index, dtype=float)
            style = {"marker": "os^vD"[i % 5], "color": f"C{i}", "label": label}
            if f"{name}_mean" in table:
                ax.errorbar(x, table[f"{name}_mean"], yerr=table[f"{name}_sd"].fillna(0.0), capsize=3, **style)
            elif name in table:
                ax.errorbar(x, table[name], **style)
        truth = 1.0 if "slope_ratio" in name else (truths or {}).get(name)
        if "slope_ratio" in name:
            _ratio_axis(ax)
        if truth is not None:
            ax.axhline(truth, color="black", ls="--", lw=1, label="true value")
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel(key, fontsize="small")
        if n == 0 or truth is not None:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
