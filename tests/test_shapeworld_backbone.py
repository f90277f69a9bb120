import numpy as np
import pytest
import torch

from erasekit.backbones.base import Backbone
from erasekit.backbones.shapeworld import ShapeWorldBackbone, has_cpp_compiler
from erasekit.errors import PromptTooLongError
from erasekit.world.denoiser import build_unet, images_to_latents, latents_to_images
from erasekit.world.render import render
from erasekit.world.text_encoder import MAX_TOKENS, shared_encoder
from tiny_shapeworld import TINY_UNET_CONFIG


@pytest.fixture(scope="module")
def backbone() -> ShapeWorldBackbone:
    torch.manual_seed(0)
    return ShapeWorldBackbone(build_unet(TINY_UNET_CONFIG), shared_encoder(), source="tiny")


def test_latent_codec_round_trips_images_exactly():
    images, _ = render(np.random.default_rng(0), 8)
    latents = images_to_latents(torch.from_numpy(images))
    assert latents.shape == (8, 12, 16, 16) and latents.abs().max() <= 1
    assert np.array_equal(latents_to_images(latents).numpy(), images)


def test_encode_gives_fixed_length_states_with_zero_padding(backbone):
    states, mask = backbone.encode(["a red star", "a small blue dotted ring in the upper left corner on snow"])
    assert states.shape == (2, MAX_TOKENS, 384) and mask.shape == (2, MAX_TOKENS)
    assert mask[0].sum() < mask[1].sum()
    assert (states[~mask] == 0).all()
    # Real-token states do not depend on what else is in the batch (padding length).
    alone, _ = backbone.encode(["a red star"])
    assert torch.allclose(alone[0], states[0], atol=1e-5)


def test_prompt_longer_than_maximum_is_rejected(backbone):
    with pytest.raises(PromptTooLongError, match="maximum"):
        backbone.encode(["a red star " * 20])


def test_protocol_pieces(backbone):
    assert isinstance(backbone, Backbone)
    projectors = backbone.projectors()
    attn2 = [n for n, _ in backbone.unet.named_modules() if n.endswith("attn2")]
    assert len(projectors) == 2 * len(attn2) > 0
    assert all(p.in_features == 384 for p in projectors.values())
    layers = backbone.text_layers()
    assert len(layers) == 6 * 6  # 6 BERT layers x (q, k, v, attn-out, intermediate, output)
    assert [n for n, _ in layers][:3] == [
        f"text_encoder.encoder.layer.0.attention.self.{x}" for x in ("query", "key", "value")
    ]


@pytest.mark.slow  # the shipped model, 25 steps: ~40 s
def test_generate_is_seeded_and_projectors_are_live(backbone):
    prompts = ["a red star", "a blue ring"]
    a = backbone.generate(prompts, [0, 1], steps=3)
    b = backbone.generate(prompts, [0, 1], steps=3)
    c = backbone.generate(prompts, [2, 3], steps=3)
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Batch composition does not change an image: seeds are per image.
    assert np.array_equal(backbone.generate(prompts[:1], [0], steps=3)[0], a[0])
    name, proj = next(iter(backbone.projectors().items()))
    saved = proj.weight.detach().clone()
    with torch.no_grad():
        proj.weight.mul_(25.0)
    try:
        assert not np.array_equal(backbone.generate(prompts, [0, 1], steps=3), a), name
    finally:
        with torch.no_grad():
            proj.weight.copy_(saved)


def test_generate_checks_seed_count(backbone):
    with pytest.raises(ValueError, match="seeds"):
        backbone.generate(["a red star"], [0, 1], steps=2)


@pytest.mark.slow
@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile needs a C++ compiler")
def test_compiled_denoiser_samples_what_eager_does_and_follows_weight_edits():
    torch.manual_seed(0)
    backbone = ShapeWorldBackbone(build_unet(TINY_UNET_CONFIG), shared_encoder(), source="tiny")  # own: mutated
    states, mask = backbone.encode(["a red star", "a blue circle"])
    eager = backbone.denoise(states, mask, [0, 1], steps=2, guidance=5.0)
    backbone.compile_denoiser()
    assert torch.allclose(backbone.denoise(states, mask, [0, 1], steps=2, guidance=5.0), eager, atol=1e-4)
    projector = next(iter(backbone.projectors().values()))
    with torch.no_grad():
        projector.weight.mul_(0.0)  # an edit applied in place after compiling must take effect
    edited_compiled = backbone.denoise(states, mask, [0, 1], steps=2, guidance=5.0)
    backbone.compiled = None
    edited_eager = backbone.denoise(states, mask, [0, 1], steps=2, guidance=5.0)
    assert not torch.allclose(edited_eager, eager, atol=1e-4)
    assert torch.allclose(edited_compiled, edited_eager, atol=1e-4)
