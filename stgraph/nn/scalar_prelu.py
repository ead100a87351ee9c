"""PReLU with one shared slope, on faster CPU kernels.

``nn.PReLU()`` (one learnable slope) computes its backward with ``_prelu_kernel_backward``, which
on this CPU takes about three times as long as the leaky-ReLU backward plus a dot product for the
slope's gradient (on a 170 MB tensor, in an ad hoc timing not recorded in ``benchmarks/``: 650 ms
against about 250 ms); in SPIN's attention, where the message MLP runs on every (target step,
source step, edge) pair, that was the largest single cost of a training step.
:class:`ScalarPReLU` is ``nn.PReLU`` (same parameter ``weight`` of shape (1,), same
initialisation, same state-dict key) whose forward is
``leaky_relu`` at the current slope and whose backward is ``leaky_relu_backward`` for the input and
``<grad, min(x, 0)>`` for the slope. The same function; the slope's gradient is summed in another
order (float32 round-off only; a test holds both gradients to ``nn.PReLU``'s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ScalarPReLU"]


class _ScalarPReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        slope = float(weight)
        ctx.save_for_backward(x)
        ctx.slope = slope
        return F.leaky_relu(x, slope)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x = torch.ops.aten.leaky_relu_backward(grad, x, ctx.slope, False) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.dot(grad.reshape(-1), x.clamp(max=0).reshape(-1)).reshape(1)
        return grad_x, grad_w


class ScalarPReLU(nn.PReLU):
    """``nn.PReLU(num_parameters=1, init)`` on faster kernels. Shapes: any -> the same."""

    def __init__(self, init: float = 0.25):
        super().__init__(num_parameters=1, init=init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ScalarPReLUFunction.apply(x, self.weight)
