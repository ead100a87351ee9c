"""The fast dropout keeps each element with probability 1 - p (to 1/65536) and rescales it; the
transformer layer built on it is PyTorch's encoder layer in eval mode, and drops in training."""

import pytest
import torch
from torch import nn

from stgraph.nn.fast_dropout import PostNormTransformerLayer, fast_dropout


def test_fast_dropout_keeps_1_minus_p_scales_the_survivors_and_follows_the_seed():
    x = torch.ones(200_000)
    torch.manual_seed(0)
    y = fast_dropout(x, 0.1)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.9, abs=0.003)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 65536 / (65536 - round(0.1 * 65536))))
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x, 0.1), y)
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0) is x
    odd = torch.randn(3, 5, 7)  # element counts that are not a multiple of 4
    assert fast_dropout(odd, 0.5).shape == odd.shape
    with pytest.raises(ValueError, match="p must be"):
        fast_dropout(x, 1.0)


def test_the_layer_is_pytorchs_encoder_layer_in_eval_mode():
    torch.manual_seed(0)
    ours = PostNormTransformerLayer(16, 4, 32, 0.1).eval()
    ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation="gelu", batch_first=True).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.in_proj.weight)
        ref.self_attn.in_proj_bias.copy_(ours.in_proj.bias)
        ref.self_attn.out_proj.weight.copy_(ours.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.out_proj.bias)
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(ref, name).load_state_dict(getattr(ours, name).state_dict())
    x = torch.randn(5, 9, 16)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    ours.train()
    assert not torch.allclose(ours(x), ref(x))  # dropout acts in training


def test_queries_and_keys_from_another_input_need_it():
    layer = PostNormTransformerLayer(8, 2, 16, query_channels=3)
    assert layer(torch.randn(2, 4, 8), torch.randn(2, 4, 3)).shape == (2, 4, 8)
    with pytest.raises(ValueError, match="give qk"):
        layer(torch.randn(2, 4, 8))
