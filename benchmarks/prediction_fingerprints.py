"""Fingerprints of every registered model's outputs on the contract batches, to show that a
refactor left behaviour unchanged (bit-identical predictions and training losses).

For each (model, task) of the contract (``tests/models/test_contract.py``): build the model at
seed 0, predict the contract batch in eval mode and in train mode (seeded), take five Adam steps
on the contract's loss (the model's own ``training_loss`` if it has one), predict again, and hash
the bytes of every output tensor (SHA-256 of ``src``, ``tgt`` and any samples).

``--engine`` adds whole runs through the engine (training, validation, evaluation) on synthetic
stations for a few (model, task) pairs, hashing their metrics and predictions.

Run it at two commits on the same machine and compare the files:

    python benchmarks/prediction_fingerprints.py --out before.json   # at the old commit
    python benchmarks/prediction_fingerprints.py --out after.json    # at the new one
    python benchmarks/prediction_fingerprints.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stgraph.models import build_model  # noqa: E402
from tests.models.contract import make_batch  # noqa: E402
from tests.models.test_contract import CASES, TINY  # noqa: E402


def _digest(pred) -> str:
    h = hashlib.sha256()
    for t in (pred.src, pred.tgt, pred.samples_src, pred.samples_tgt):
        if t is not None:
            h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(name: str, task: str) -> dict[str, str]:
    torch.manual_seed(0)
    batch, sizes = make_batch(task)
    model = build_model(name, sizes, TINY[name])
    out: dict[str, str] = {}
    model.eval()
    torch.manual_seed(1)
    out["eval"] = _digest(model(batch))
    if not model.trainable:
        return out
    model.train()
    torch.manual_seed(2)
    out["train"] = _digest(model(batch))
    h = sizes.horizon
    y = torch.randn(4, h, 6, 1, generator=torch.Generator().manual_seed(1))
    every = torch.ones_like(y, dtype=torch.bool)
    free = ~batch.x_mask[..., :1] if sizes.aligned else every[:, :, :5]
    terms = [("src", y[:, :, :5], free, 1.0), ("tgt", y[:, :, 5:], every[:, :, 5:], 1.0)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    torch.manual_seed(3)
    for _ in range(5):
        if model.has_training_loss:
            loss = model.training_loss(batch, terms, lambda p, t, m: ((p - t) ** 2 * m).sum() / m.sum())
        else:
            p = model(batch)
            loss = ((p.src - y[:, :, :5]) ** 2 * free).sum() / free.sum() + ((p.tgt - y[:, :, 5:]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["losses"] = hashlib.sha256(repr(losses).encode()).hexdigest()[:16]
    model.eval()
    torch.manual_seed(4)
    out["trained"] = _digest(model(batch))
    return out


ENGINE_CASES = [("idw", "krige"), ("ignnk", "krige"), ("stgcn", "forecast"), ("grin", "reconstruct"),
                ("diffrecon", "reconstruct"), ("amlsg", "krige")]


def engine_fingerprint(name: str, task: str, out: Path) -> dict[str, str]:
    """One short run of ``name`` on ``task`` over synthetic stations: digests of its metrics and
    predictions (wall times left out)."""
    import numpy as np

    from stgraph.engine.config import config_from_dict
    from stgraph.engine.run import run_experiment
    from stgraph.testing import synthetic_stations

    data = synthetic_stations(num_nodes=12, num_steps=24 * 12, num_channels=2, seed=5)
    hp = {k: v for k, v in TINY[name].items() if k != "num_threads"}
    cfg = config_from_dict(
        {
            "name": f"{name}-{task}",
            "data": {"target_channels": ["x0"], "task": task, "window": 12, "horizon": 4, "eval_steps": [1, 4]},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2, "pattern_ratio": 0.3},
            "model": {"name": name, "hparams": hp},
            "train": {"batch_size": 8, "steps": 12, "val_every": 6, "max_eval_windows": 48, "seed": 0},
        }
    )
    run, metrics = run_experiment(cfg, out, data=data, progress=False)

    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if "second" not in k and "wall" not in k}
        return [strip(v) for v in d] if isinstance(d, list) else d

    preds = np.load(run.predictions_path)
    h = hashlib.sha256()
    for k in sorted(preds.files):
        h.update(np.ascontiguousarray(preds[k]).tobytes())
    return {
        "metrics": hashlib.sha256(json.dumps(strip(metrics), sort_keys=True, default=str).encode()).hexdigest()[:16],
        "predictions": h.hexdigest()[:16],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
    ap.add_argument("--engine", type=Path, help="also run ENGINE_CASES through the engine into this folder")
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        print(f"{len(set(a) & set(b))} cases in both; {len(diff)} differ" + (": " + ", ".join(diff) if diff else ""))
        sys.exit(1 if diff else 0)
    torch.set_num_threads(1)
    result = {}
    for name, task in CASES:
        try:
            result[f"{name}/{task}"] = fingerprint(name, task)
        except Exception as e:  # a model that needs a fit context: its error is part of the fingerprint
            result[f"{name}/{task}"] = {"error": f"{type(e).__name__}: {e}"}
    if args.engine:
        for name, task in ENGINE_CASES:
            try:
                result[f"engine:{name}/{task}"] = engine_fingerprint(name, task, args.engine)
            except Exception as e:
                result[f"engine:{name}/{task}"] = {"error": f"{type(e).__name__}: {e}"}
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
