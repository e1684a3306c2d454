"""The figure of docs/accuracy.md: Dice against the painting interval k, for new subjects and for fills."""

from __future__ import annotations

from pathlib import Path

from bench.product_fills import PRODUCT_MODE


def plot_dice_against_k(gen: dict[str, dict[int, tuple[float, float]]], dens: dict[tuple[str, str], dict[int, tuple[float, float]]],
          path: Path) -> None:
    """Dice against k: one line per recipe tag for new subjects, one per (method, tag) for densifying."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]); no plot written")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    tags = sorted(gen)
    for index, tag in enumerate(tags):
        values = gen[tag]
        ks = sorted(values)
        # recipes side by side within +-0.4 of their k, so many recipes stay readable
        offset = 0.8 * (index / max(len(tags) - 1, 1) - 0.5)
        axes[0].errorbar([k + offset for k in ks], [values[k][0] for k in ks], [values[k][1] for k in ks],
                         marker="os^Dv"[index % 5], markersize=4, capsize=2, color=plt.cm.tab20(index % 20),
                         label="LiverUNet" + (f" ({tag})" if tag else ""))
    axes[0].axhline(0.83, color="grey", linestyle="--", label="published Keras study (0.83)")
    axes[0].set(title="New subjects (5-fold CV)", xlabel="k (every k-th slice painted)", ylabel="Dice", ylim=(0.6, 1.0))
    axes[0].legend(loc="lower left", fontsize=6, ncol=2)  # below the curves, which all lie above 0.75
    labels = {"mci": "contour interpolation (peer)", "base": "LiverUNet CV model, untrained on the paint",
              "finetune": "LiverUNet fine-tuned", "finetune_mean": "LiverUNet fine-tuned + starting model",
              "scratch": "LiverUNet from scratch", PRODUCT_MODE: "LiverUNet as the product fills"}
    for (mode, tag), values in dens.items():
        ks = sorted(values)
        product = {"color": "black", "linewidth": 2.5} if mode == PRODUCT_MODE else {}  # the headline line
        axes[1].errorbar(ks, [values[k][0] for k in ks], [values[k][1] for k in ks], marker="o", capsize=3,
                         label=labels[mode] + (f" ({tag})" if tag else ""), **product)
    axes[1].set(title="Densifying a painted volume", xlabel="k", ylabel="Dice on unpainted slices", ylim=(0.4, 1.0))
    if dens:
        axes[1].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
