"""The diffusion-step embedding: CSDI's sinusoidal table and its 2-layer SiLU MLP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stgraph.diffusion import DiffusionStepEmbedding, diffusion_step_table


def test_table_is_csdis_sin_cos_layout():
    table = diffusion_step_table(50, 128)
    assert table.shape == (50, 128)
    for t, j in ((0, 0), (7, 0), (7, 13), (49, 63)):
        f = 10.0 ** (4.0 * j / 63)
        assert float(table[t, j]) == pytest.approx(math.sin(t * f), abs=1e-4)
        assert float(table[t, 64 + j]) == pytest.approx(math.cos(t * f), abs=1e-4)
    with pytest.raises(ValueError, match="even"):
        diffusion_step_table(50, 127)


def test_embedding_is_table_then_linear_silu_twice():
    emb = DiffusionStepEmbedding(50, 128, projection_dim=64)
    t = torch.tensor([0, 3, 49, 3])
    out = emb(t)
    assert out.shape == (4, 64)
    want = F.silu(emb.projection2(F.silu(emb.projection1(diffusion_step_table(50, 128)[t]))))
    torch.testing.assert_close(out, want)
    assert torch.equal(out[1], out[3]) and not torch.equal(out[0], out[1])
    out.sum().backward()
    assert emb.projection1.weight.grad is not None
    assert "table" not in emb.state_dict()  # fixed, rebuilt from T: not a checkpoint entry
    with pytest.raises(ValueError, match="0..49"):
        emb(torch.tensor([50]))
