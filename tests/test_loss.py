import pytest
import torch
import torch.nn.functional as F

from mt.loss import smoothed_cross_entropy


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_equals_pytorch_cross_entropy_and_its_gradient(eps):
    torch.manual_seed(0)
    logits = torch.randn(50, 37, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 37, (50,))
    loss, nll = smoothed_cross_entropy(logits, target, eps)
    reference = F.cross_entropy(logits, target, label_smoothing=eps, reduction="sum")
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(nll, F.cross_entropy(logits.detach(), target, reduction="sum"))
    assert not nll.requires_grad
    (grad,) = torch.autograd.grad(loss * 0.7, logits)
    (expected,) = torch.autograd.grad(reference * 0.7, logits)
    torch.testing.assert_close(grad, expected)


def test_low_precision_logits_get_a_gradient_of_their_dtype():
    logits = torch.randn(8, 11).to(torch.bfloat16).requires_grad_()
    loss, _ = smoothed_cross_entropy(logits, torch.arange(8), 0.1)
    assert loss.dtype == torch.float32  # computed in fp32
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()
