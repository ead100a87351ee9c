"""Fingerprints of every registered model's outputs on the contract batches, to show that a
refactor left behaviour unchanged (bit-identical predictions and training losses).

For each (model, task) of the contract (``tests/models/test_contract.py``): build the model at
seed 0, predict the contract batch in eval mode and in train mode (seeded), take five Adam steps
on the contract's loss (the model's own ``training_loss`` if it has one), predict again, and hash
the bytes of every output tensor (SHA-256 of ``src``, ``tgt`` and any samples).

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
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
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
