"""Linear2d: the GEMM path equals a 1x1 convolution, and tracing records the convolution."""
import torch
import torch.nn.functional as F

from mmvmamba.models.layers import Linear2d


def test_gemm_path_equals_a_1x1_convolution_with_gradients():
    torch.manual_seed(0)
    layer = Linear2d(5, 7)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(3, 5, 4, 9, requires_grad=True)
    out = layer(x)
    expected = F.conv2d(x, layer.weight[:, :, None, None], layer.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.shape == (3, 7, 4, 9) and out.is_contiguous()
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
    want = torch.autograd.grad(expected, (x, layer.weight, layer.bias), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_without_bias_and_on_a_strided_input():
    layer = Linear2d(4, 6, bias=False)
    x = torch.randn(2, 9, 5, 4)[:, ::2]  # (2, 5, 5, 4) viewed with channel stride 2
    x = x[:, :4]
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight[:, :, None, None]),
                               rtol=1e-5, atol=1e-5)


def test_tracing_records_a_convolution():
    layer = Linear2d(4, 6)
    graph = torch.jit.trace(layer, torch.randn(1, 4, 3, 3)).inlined_graph
    kinds = {node.kind() for node in graph.nodes()}
    assert 'aten::_convolution' in kinds or 'aten::conv2d' in kinds
    assert 'aten::matmul' not in kinds
