"""Encoders: published parameter counts, shapes with variable-length input, TorchScript, registry errors."""

from __future__ import annotations

import pytest
import torch

from speakerid.models import INFERENCE_ONLY, MODELS, ModelConfigError, build_model, count_parameters
from speakerid.models.pooling import ASTP, TSTP, build_pooling

torch.set_num_threads(1)

# Published sizes (encoder only, feat_dim=80): ECAPA-TDNN paper (Desplanques et al. 2020) 6.2M / 14.7M,
# WeSpeaker ECAPA_TDNN_GLOB_c512 / c1024 6.19M / 14.65M, WeSpeaker ResNet34 (256-d) 6.63M.
PUBLISHED = [
    ("ecapa_tdnn_c512", {"embed_dim": 192}, 6.19e6),
    ("ecapa_tdnn_c1024", {"embed_dim": 192}, 14.65e6),
    ("ecapa_tdnn", {"channels": 1024, "embed_dim": 192}, 14.65e6),
    ("resnet34", {"embed_dim": 256}, 6.63e6),
    ("campplus", {"embed_dim": 512}, 7.2e6),  # CAM++ paper Table 2
]

# Small versions of every registered model, for cheap shape / scripting tests.
TINY = {
    "ecapa_tdnn": {"channels": 32, "mfa_channels": 48, "embed_dim": 16},
    "ecapa_tdnn_c512": {"embed_dim": 16, "mfa_channels": 64},
    "ecapa_tdnn_c1024": {"embed_dim": 16, "mfa_channels": 64},
    "resnet": {"depth": 50, "base_channels": 4, "embed_dim": 16},
    "resnet18": {"base_channels": 4, "embed_dim": 16},
    "resnet34": {"base_channels": 4, "embed_dim": 16, "pooling": "ASTP"},
    "resnet50": {"base_channels": 2, "embed_dim": 16},
    "resnet101": {"base_channels": 2, "embed_dim": 16},
    "resnet152": {"base_channels": 2, "embed_dim": 16},
    "resnet221": {"base_channels": 2, "embed_dim": 16},
    "resnet293": {"base_channels": 2, "embed_dim": 16, "two_emb_layer": True},
    "campplus": {"growth_rate": 4, "bn_size": 2, "init_channels": 16, "embed_dim": 16},
    "redimnet": {"config": "B0", "embed_dim": 16},
    **{f"redimnet_b{i}": {"embed_dim": 16, "base_channels": 2} for i in range(7)},
    "ecapa_tdnn_speechbrain": {"channels": [16, 16, 16, 16, 48], "embed_dim": 16, "se_channels": 8, "attention_channels": 8},
}


@pytest.mark.parametrize("name,kwargs,published", PUBLISHED)
def test_parameter_counts_match_published(name: str, kwargs: dict, published: float) -> None:
    model = build_model(name, feat_dim=80, **kwargs)
    n = count_parameters(model)
    print(f"{name} {kwargs}: {n / 1e6:.3f}M parameters (published {published / 1e6:.2f}M)")
    assert abs(n - published) / published < 0.05
    assert model.embed_dim == kwargs["embed_dim"]


def test_every_registered_model_has_a_tiny_config() -> None:
    assert set(TINY) == set(MODELS) - INFERENCE_ONLY  # onnx_encoder: tests/test_interop_onnx.py


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", sorted(TINY))
def test_variable_length_shapes_and_torchscript(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, feat_dim=24, **TINY[name])
    model.train()
    out = model(torch.randn(3, 40, 24))
    assert out.shape == (3, 16)
    out.sum().backward()  # trainable end to end
    model.eval()
    scripted = torch.jit.script(model)
    for frames in (1, 9, 57):  # 1 frame: population statistics keep it finite
        feats = torch.randn(2, frames, 24)
        with torch.no_grad():
            eager = model(feats)
            assert eager.shape == (2, 16)
            assert torch.isfinite(eager).all()
            torch.testing.assert_close(scripted(feats), eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["ecapa_tdnn", "resnet"])
def test_eval_embedding_does_not_depend_on_batch(name: str) -> None:
    torch.manual_seed(1)
    model = build_model(name, feat_dim=24, **TINY[name]).eval()
    feats = torch.randn(4, 33, 24)
    with torch.no_grad():
        batched = model(feats)
        single = torch.cat([model(feats[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_full_size_forward_shapes() -> None:
    for name, dim in (("ecapa_tdnn_c512", 192), ("resnet34", 256)):
        model = build_model(name, feat_dim=80).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 37, 80)).shape == (1, dim)


def test_resnet_feat_dim_not_multiple_of_8() -> None:
    model = build_model("resnet18", feat_dim=41, base_channels=4, embed_dim=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 20, 41)).shape == (2, 8)


def test_resnet_custom_blocks_and_two_emb_layer() -> None:
    model = build_model("resnet", blocks=[1, 2, 1, 1], base_channels=4, feat_dim=16, embed_dim=8, two_emb_layer=True)
    assert len(model.layer2) == 2
    assert model(torch.randn(2, 12, 16)).shape == (2, 8)


def test_pooling_statistics() -> None:
    x = torch.randn(2, 5, 30)
    torch.testing.assert_close(TSTP(5)(x)[:, 5:], x.std(-1, unbiased=True), rtol=1e-4, atol=1e-4)  # as WeSpeaker
    single = TSTP(5)(x[..., :1])  # one frame: no Bessel correction, finite (torch.var would give NaN)
    assert torch.isfinite(single).all() and float(single[:, 5:].max()) < 1e-3
    stats = TSTP(5, unbiased=False)(x)
    torch.testing.assert_close(stats[:, :5], x.mean(-1))
    torch.testing.assert_close(stats[:, 5:], x.std(-1, unbiased=False), rtol=1e-4, atol=1e-4)
    # ASTP with constant attention (zero second layer) reduces to population-std TSTP.
    astp = ASTP(5, bottleneck_dim=4)
    torch.nn.init.zeros_(astp.linear2.weight)
    torch.nn.init.zeros_(astp.linear2.bias)
    torch.testing.assert_close(astp(x), stats, rtol=1e-4, atol=1e-4)
    assert build_pooling("astp", 5).out_dim == 10


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("ecapa", {}, "unknown model"),
        ("resnet", {"depth": 35}, "depth 35"),
        ("resnet34", {"nonsense": 1}, "nonsense"),
        ("ecapa_tdnn", {"channels": 100}, "divisible"),
        ("resnet", {"pooling": "max"}, "unknown pooling"),
    ],
)
def test_build_model_errors(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(name, **kwargs)
    assert issubclass(ModelConfigError, ValueError)


@pytest.mark.parametrize("name,bound", [("ecapa_tdnn", 1e-4), ("resnet34", None)])
def test_pooling_unbiased_switch(name: str, bound: float | None) -> None:
    """``pooling_unbiased=False`` restores the population std of models trained before the
    Bessel-corrected default; for ECAPA-TDNN (context std of the attention only) the two agree
    within 1e-4 relative, for ResNet (TSTP std in the embedding) they do not."""
    torch.manual_seed(0)
    old = build_model(name, feat_dim=80, pooling_unbiased=False).eval()
    new = build_model(name, feat_dim=80).eval()
    new.load_state_dict(old.state_dict())
    x = torch.randn(2, 200, 80)
    with torch.no_grad():
        a, b = old(x), new(x)
    diff = float((a - b).abs().max() / b.abs().max())
    print(f"{name}: population vs Bessel-corrected pooling std, max relative difference {diff:.1e}")
    assert not old.pool.unbiased and new.pool.unbiased
    assert diff < bound if bound is not None else diff > 1e-4


@pytest.mark.parametrize("shape", [(2, 6, 9), (1, 1100, 1000)])  # two-pass branch, var_mean branch
def test_frame_var_mean_matches_torch(shape: tuple[int, ...]) -> None:
    from speakerid.models.pooling import frame_var_mean

    x = torch.randn(*shape, dtype=torch.float64) * 3 + 5
    for unbiased in (True, False):
        var, mean = frame_var_mean(x, unbiased)
        torch.testing.assert_close(var, x.var(dim=-1, keepdim=True, unbiased=unbiased))
        torch.testing.assert_close(mean, x.mean(dim=-1, keepdim=True))
    var1, _ = frame_var_mean(x[..., :1])
    assert torch.equal(var1, torch.zeros_like(var1))  # one frame: no Bessel correction, no NaN


def test_pointwise_conv_equals_conv1d_values_and_grads() -> None:
    from speakerid.models.pointwise import PointwiseConv1d

    torch.manual_seed(0)
    for bias in (True, False):
        conv = torch.nn.Conv1d(7, 5, 1, bias=bias).double()
        pw = PointwiseConv1d(7, 5, bias=bias).double()
        pw.load_state_dict(conv.state_dict())
        x = torch.randn(3, 7, 11, dtype=torch.float64, requires_grad=True)
        g = torch.randn(3, 5, 11, dtype=torch.float64)
        a, b = conv(x), pw(x)
        torch.testing.assert_close(a, b)
        ga = torch.autograd.grad(a, [x, conv.weight], g)
        gb = torch.autograd.grad(b, [x, pw.weight], g)
        for u, v in zip(ga, gb):
            torch.testing.assert_close(u, v)


def test_astp_context_as_bias_equals_concatenation() -> None:
    """ASTP.attention_hidden (context columns once per utterance) == W [h; mu; sigma] + b (Eq. 1)."""
    torch.manual_seed(0)
    astp = ASTP(6, bottleneck_dim=4).double()
    x = torch.randn(2, 6, 13, dtype=torch.float64)
    var, mean = torch.var(x, -1, keepdim=True), x.mean(-1, keepdim=True)
    std = torch.sqrt(var + astp.eps)
    cat = torch.cat([x, mean.expand(-1, -1, 13), std.expand(-1, -1, 13)], dim=1)
    ref = torch.nn.functional.conv1d(cat, astp.linear1.weight, astp.linear1.bias)
    torch.testing.assert_close(astp.attention_hidden(x), ref)


@pytest.mark.parametrize("frames", [37, 100, 150, 201])
def test_cam_layer_mask_per_segment_equals_per_frame_form(frames: int) -> None:
    """CAM++ Eqs. 2-5 at every frame (context = utterance mean + the mean of the frame's
    100-frame segment, the last one shorter) against the layer, which computes the mask once per
    segment; inside a dense block (maps shared by its layers) too."""
    from speakerid.models.campplus import CAMDenseTDNNBlock, CAMLayer

    torch.manual_seed(0)
    layer = CAMLayer(16, 8, kernel_size=3, dilation=2).eval()
    x = torch.randn(2, 16, frames, dtype=torch.float64)
    layer = layer.double()
    seg = torch.cat([x[..., s:s + 100].mean(-1, keepdim=True).expand(-1, -1, x[..., s:s + 100].shape[-1])
                     for s in range(0, frames, 100)], dim=-1)
    context = x.mean(-1, keepdim=True) + seg
    mask = torch.sigmoid(layer.linear2(torch.relu(layer.linear1(context))))
    expected = layer.linear_local(x) * mask
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)

        block = CAMDenseTDNNBlock(3, 16, 8, 16, kernel_size=3, dilation=1).double().eval()
        out, h = block(x), x
        for sub in block.children():  # the block with each layer building its own maps
            h = torch.cat([h, sub.cam_layer(sub.nonlinear2(sub.linear1(sub.nonlinear1(h))))], dim=1)
        torch.testing.assert_close(out, h, rtol=1e-12, atol=1e-12)
