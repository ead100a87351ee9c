"""What AQ-Net learned, for one window of a run: its temporal attention (query step × key step, per
head, averaged over the visible stations) and its neural-kNN edges to the hidden stations on a map
(edge width = the learned weight; edges rebuilt in the learned space at this forward pass)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402


def aqnet_attention(run_dir: str | Path, out: str | Path, *, window_start: str | None = None) -> Path:
    """Render the attention and the neural-kNN edges of a trained AQ-Net run for the test window
    starting at ``window_start`` (default: the test period's first window)."""
    from stgraph.engine.config import load_config
    from stgraph.engine.run_folder import RunDir
    from stgraph.models.aqnet import _AQNetBase
    from stgraph.reanalysis.estimate import load_reanalysis_run

    run = RunDir(run_dir)
    if run.config_path.exists() and not load_config(run.config_path).model.name.startswith("aqnet"):
        raise ValueError(f"{run.path}: attention plots need an AQ-Net run (aqnet, aqnet-ref)")
    rr = load_reanalysis_run(run.path)  # the run rebuilt with its best checkpoint; refuses unfinished runs
    exp, model = rr.exp, rr.model
    if not isinstance(model, _AQNetBase):
        raise ValueError(f"{run.path}: attention plots need an AQ-Net run")
    inputs, _ = exp.eval_windows("test")
    times = pd.DatetimeIndex(exp.data.times)
    starts = inputs.starts.numpy()
    if window_start is None:
        i = 0
    else:
        hit = np.flatnonzero(times[starts] == pd.Timestamp(window_start))
        if not len(hit):
            raise ValueError(
                f"--window-start {window_start}: no test window starts then; test windows start "
                f"{times[starts[0]]} to {times[starts[-1]]}"
            )
        i = int(hit[0])
    src, tgt = exp.roles("test")
    with torch.no_grad():
        model(exp.batch(inputs[torch.tensor([i])], src, tgt))
    att = model.attention_weights()[0].mean(0).numpy()  # (heads, W, W) averaged over visible stations
    edge_index, alpha = model.interp.last_edges
    heads = att.shape[0]
    ratios = {"width_ratios": [1] * heads + [1.6]}
    fig, axes = plt.subplots(1, heads + 1, figsize=(3.2 * heads + 5, 4), gridspec_kw=ratios)
    for h in range(heads):
        axes[h].imshow(att[h], cmap="magma", origin="upper")
        axes[h].set(title=f"head {h + 1}", xlabel="key step", ylabel="query step" if h == 0 else None)
    ax = axes[-1]
    ps, pt = exp.data.latlon[src], exp.data.latlon[tgt]
    e = edge_index.numpy()
    a = alpha.numpy().ravel()
    segs = np.stack([ps[e[0] % len(src)][:, ::-1], pt[e[1] % len(tgt)][:, ::-1]], axis=1)
    ax.add_collection(LineCollection(segs, linewidths=0.5 + 4 * a / max(a.max(), 1e-9), colors="tab:blue", alpha=0.6))
    ax.scatter(ps[:, 1], ps[:, 0], s=25, color="black", label="visible")
    ax.scatter(pt[:, 1], pt[:, 0], s=60, marker="*", color="tab:red", label="hidden (never seen)")
    ax.set_aspect(1 / np.cos(np.deg2rad(ps[:, 0].mean())))
    ax.set(title="neural-kNN edges (width = weight)", xlabel="longitude", ylabel="latitude")
    ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{run.path.name}: window starting {times[starts[i]]}")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
