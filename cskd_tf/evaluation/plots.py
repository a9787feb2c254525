"""The paper's figures from numpy arrays, written to image files.

Every function takes plain arrays (so it can be tested and reused without a
trained model), draws one panel per run and saves the figure to ``path``
(PNG, PDF or SVG by extension). Figures are drawn on
:class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot,
so no display or global backend state is involved.

* :func:`plot_reliability`: reliability diagrams with ECE (Guo et al., 2017),
  optionally before and after temperature scaling (:func:`temperature_scaling_panels`);
* :func:`plot_misclassified`: mean top-k softmax scores of misclassified
  samples (Yun et al., CVPR 2020, Figure 2);
* :func:`plot_tsne`: t-SNE of penultimate features (Figure 3);
* :func:`plot_curves`: training curves from the per-epoch logs;
* :func:`plot_domain_confusion`: domain-level confusion of a mixed dataset
  (Figure 4; see :mod:`cskd_tf.evaluation.domains`).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cskd_tf.evaluation.metrics import expected_calibration_error, reliability_bins, softmax

# history key -> panel title of the training curves.
CURVE_TITLES = {
    "loss": "Training loss",
    "ce": "Cross-entropy term",
    "cls": "Class-wise KL term",
    "accuracy": "Training accuracy",
    "top5_accuracy": "Training top-5 accuracy",
    "val_accuracy": "Validation accuracy",
    "val_top5_accuracy": "Validation top-5 accuracy",
    "val_loss": "Validation loss",
    "val_nll": "Validation NLL",
    "val_ece": "Validation ECE",
    "val_recall_at_1": "Validation Recall@1",
    "lr": "Learning rate",
    "lambda_cls": "λ (class-wise weight)",
}
DEFAULT_CURVES = ("loss", "accuracy", "val_accuracy", "val_ece")


def _figure(num_panels: int, panel_size=(4.2, 4.0), max_cols: int = 4):
    cols = min(num_panels, max_cols)
    rows = -(-num_panels // cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(num_panels)]
    return fig, axes


def _save(fig, path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    return path


def _check_panels(panels, what: str):
    panels = list(panels)
    if not panels:
        raise ValueError(f"{what}: nothing to plot (no panels)")
    return panels


# --------------------------------------------------------------------------
# Reliability diagrams.
# --------------------------------------------------------------------------


def temperature_scaling_panels(name: str, logits, labels, temperature: float) -> list:
    """Two reliability panels of one run: ``softmax(z)`` and ``softmax(z / T)``.

    ``T`` comes from :func:`cskd_tf.evaluation.calibration.fit_temperature` on the run's
    val split; the titles say which panel is which and where T was fitted.
    """
    from cskd_tf.evaluation.calibration import scaled_probabilities

    return [(f"{name}: before TS", softmax(logits), labels),
            (f"{name}: after TS (T = {temperature:.2f}, fit on val)",
             scaled_probabilities(logits, temperature), labels)]


def plot_reliability(panels, path: str, num_bins: int = 15, max_cols: int = 4) -> list:
    """One reliability diagram per ``(title, probs, labels)``; returns the ECEs (%).

    Blue bars: accuracy of each confidence bin; red hatched bars: the gap
    between that accuracy and the bin's mean confidence; dashed: the diagonal
    of perfect calibration. Empty bins are not drawn. ``max_cols=2`` with the
    panels of :func:`temperature_scaling_panels` puts each run's before/after
    pair on one row.
    """
    panels = _check_panels(panels, "reliability")
    fig, axes = _figure(len(panels), max_cols=max_cols)
    eces = []
    for ax, (title, probs, labels) in zip(axes, panels):
        bins = reliability_bins(probs, labels, num_bins)
        ece = 100.0 * expected_calibration_error(probs, labels, num_bins)
        eces.append(ece)
        width = bins.edges[1:] - bins.edges[:-1]
        left = bins.edges[:-1]
        used = bins.counts > 0
        ax.bar(left[used], bins.accuracy[used], width=width[used], align="edge",
               color="#3b75af", edgecolor="black", linewidth=0.6, label="Outputs")
        gap_low = np.minimum(bins.accuracy, bins.confidence)[used]
        gap_height = np.abs(bins.confidence - bins.accuracy)[used]
        ax.bar(left[used], gap_height, bottom=gap_low, width=width[used], align="edge",
               color="#d62728", alpha=0.35, edgecolor="#d62728", hatch="//", linewidth=0.6,
               label="Gap")
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1.2, label="Perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("Confidence")
        ax.set_ylabel("Accuracy")
        ax.set_title(f"{title}\nECE = {ece:.2f}%")
        ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)
    return eces


# --------------------------------------------------------------------------
# Softmax scores of misclassified samples.
# --------------------------------------------------------------------------


def mean_topk_misclassified(probs, labels, k: int = 5):
    """(mean of the k largest probabilities, sorted, over misclassified samples, count).

    The mean is NaN when no sample is misclassified.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (n, C) with n = len(labels) = {y.shape[0]}, "
                         f"got shape {p.shape}")
    k = min(int(k), p.shape[1])
    wrong = p.argmax(axis=1) != y
    if not wrong.any():
        return np.full(k, np.nan), 0
    top = -np.sort(-p[wrong], axis=1)[:, :k]
    return top.mean(axis=0), int(wrong.sum())


def plot_misclassified(panels, path: str, k: int = 5) -> list:
    """Grouped bars of :func:`mean_topk_misclassified` per ``(name, probs, labels)``.

    A well-regularised model spreads its mass over several classes when it is
    wrong, so its top-1 bar is lower and the following ones higher (Figure 2).
    Returns the mean score vectors.
    """
    panels = _check_panels(panels, "misclassified")
    fig, axes = _figure(1, panel_size=(1.6 + 1.2 * k, 4.0))
    ax = axes[0]
    width = 0.8 / len(panels)
    results = []
    for i, (name, probs, labels) in enumerate(panels):
        means, count = mean_topk_misclassified(probs, labels, k)
        results.append(means)
        x = np.arange(1, means.shape[0] + 1) + (i - (len(panels) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(means), width=width, edgecolor="black", linewidth=0.5,
               label=f"{name} ({count} misclassified)")
    ax.set_xticks(np.arange(1, len(results[0]) + 1))
    ax.set_xticklabels([f"Top-{r}" for r in range(1, len(results[0]) + 1)])
    ax.set_ylabel("Mean softmax score")
    ax.set_ylim(0, 1)
    ax.set_title("Softmax scores of misclassified samples")
    ax.legend(fontsize=8)
    _save(fig, path)
    return results


# --------------------------------------------------------------------------
# t-SNE of penultimate features.
# --------------------------------------------------------------------------


def choose_classes(labels, num_classes: int, seed: int = 0) -> np.ndarray:
    """``num_classes`` classes present in ``labels``, drawn with ``seed``, sorted."""
    present = np.unique(np.asarray(labels).reshape(-1))
    if num_classes >= present.size:
        return present
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(present, size=num_classes, replace=False))


def subsample(labels, classes, max_per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_per_class`` samples of each class in ``classes``."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if max_per_class and idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        keep.append(idx)
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def tsne_embedding(features, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(n, 2) t-SNE embedding (sklearn, PCA initialisation)."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {n}")
    # sklearn requires perplexity < n; a third of n keeps tiny sets stable.
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(x)


def plot_tsne(panels, path: str, num_classes: int = 10, seed: int = 0,
              max_per_class: int = 100, perplexity: float = 30.0, class_names=None) -> list:
    """One t-SNE scatter per ``(title, features, labels)``, on the same classes.

    The classes are drawn once from the first panel's labels, so every panel
    shows the same classes in the same colours (Figure 3). Returns the
    embeddings.
    """
    panels = _check_panels(panels, "tsne")
    classes = choose_classes(panels[0][2], num_classes, seed)
    fig, axes = _figure(len(panels), panel_size=(4.6, 4.6))
    cmap = _class_colours(len(classes))
    embeddings = []
    for ax, (title, features, labels) in zip(axes, panels):
        labels = np.asarray(labels).reshape(-1)
        idx = subsample(labels, classes, max_per_class, seed)
        emb = tsne_embedding(np.asarray(features)[idx], seed, perplexity)
        embeddings.append(emb)
        for i, c in enumerate(classes):
            mask = labels[idx] == c
            name = class_names[int(c)] if class_names is not None else str(int(c))
            ax.scatter(emb[mask, 0], emb[mask, 1], s=6, color=cmap(i), label=name)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title)
    if len(classes) <= 20:
        axes[-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _save(fig, path)
    return embeddings


def _class_colours(n: int):
    import matplotlib

    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"
    cmap = matplotlib.colormaps[name]
    if name == "turbo":
        return lambda i: cmap(i / max(n - 1, 1))
    return cmap


# --------------------------------------------------------------------------
# Training curves.
# --------------------------------------------------------------------------


def plot_curves(histories, path: str, keys=DEFAULT_CURVES) -> list:
    """One panel per key, one line per ``(name, history)``; returns the keys drawn.

    ``history`` maps names to per-epoch arrays with an ``"epoch"`` entry
    (0-based, as in :mod:`cskd_tf.evaluation.history`); epochs are drawn
    1-based. NaN entries (epochs without that value) are skipped, and a key
    no run logged is left out rather than drawn empty.
    """
    histories = _check_panels(histories, "curves")
    drawn = [k for k in keys if any(k in h and np.isfinite(h[k]).any() for _, h in histories)]
    if not drawn:
        available = sorted({k for _, h in histories for k in h if k != "epoch"})
        raise ValueError(f"none of {', '.join(keys)} is in the logs; available: "
                         f"{', '.join(available) or 'nothing'}")
    fig, axes = _figure(len(drawn), panel_size=(4.6, 3.6), max_cols=2)
    for ax, key in zip(axes, drawn):
        for name, history in histories:
            if key not in history:
                continue
            x = np.asarray(history["epoch"], dtype=np.float64) + 1
            y = np.asarray(history[key], dtype=np.float64)
            ok = np.isfinite(y)
            # Markers make sparse points (validation every few epochs) visible.
            ax.plot(x[ok], y[ok], marker="o" if ok.sum() < 30 else None, markersize=3,
                    linewidth=1.3, label=name)
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(CURVE_TITLES.get(key, key))
        if key == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return drawn


# --------------------------------------------------------------------------
# Domain confusion of a mixed dataset.
# --------------------------------------------------------------------------


def plot_domain_confusion(panels, domain_names, path: str) -> str:
    """One annotated D x D heat map (percent, rows = true domain) per ``(title, matrix)``."""
    panels = _check_panels(panels, "hierarchy")
    d = len(domain_names)
    fig, axes = _figure(len(panels), panel_size=(1.4 + 1.1 * d, 1.0 + 1.1 * d))
    for ax, (title, matrix) in zip(axes, panels):
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (d, d):
            raise ValueError(f"confusion matrix must be {d}x{d}, got {matrix.shape}")
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=100)
        for i in range(d):
            for j in range(d):
                value = matrix[i, j]
                text = "–" if np.isnan(value) else f"{value:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if value > 60 else "black")
        ax.set_xticks(range(d))
        ax.set_yticks(range(d))
        ax.set_xticklabels(domain_names, rotation=30, ha="right")
        ax.set_yticklabels(domain_names)
        ax.set_xlabel("Predicted domain")
        ax.set_ylabel("True domain")
        ax.set_title(f"{title} (%)")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)
