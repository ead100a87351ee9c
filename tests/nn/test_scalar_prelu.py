"""ScalarPReLU is nn.PReLU: the same values, input gradients and slope gradient, state dict and
initialisation."""

import torch
from torch import nn

from stgraph.nn.scalar_prelu import ScalarPReLU


def test_scalar_prelu_equals_nn_prelu_in_value_and_both_gradients():
    torch.manual_seed(0)
    ours, ref = ScalarPReLU(init=0.2), nn.PReLU(init=0.2)
    with torch.no_grad():
        ours.weight.fill_(0.37)
        ref.weight.fill_(0.37)
    x = torch.randn(3, 5, 7, 4)
    x[0, 0, 0] = 0.0  # the kink: both take the slope branch at 0
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(3, 5, 7, 4)
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    assert ours.weight.grad.abs().item() > 0


def test_scalar_prelu_keeps_nn_prelus_parameter_and_initialisation():
    ours = ScalarPReLU(init=0.2)
    assert list(ours.state_dict()) == ["weight"] and ours.weight.shape == (1,)
    with torch.no_grad():
        ours.weight.fill_(0.9)
    ours.reset_parameters()
    assert ours.weight.item() == torch.tensor(0.2).item()
    ref = nn.PReLU(init=0.2)
    ref.load_state_dict(ours.state_dict())  # checkpoints move between the two
