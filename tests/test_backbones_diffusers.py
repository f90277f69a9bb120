"""The sd / sdxl / sd3 adapters on tiny random pipelines saved to local folders (no downloads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from erasekit.backbones.base import Backbone
from erasekit.backbones.loader import FAMILIES, load_backbone
from erasekit.backbones.sd import StableDiffusionBackbone
from erasekit.errors import UserError
from tiny_pipelines import BUILDERS, MAX_TOKENS

VARIANTS = ["sd", "sdxl", "sd3", "sd3_t5"]  # sd3: no T5 encoder (text_encoder_3=None); sd3_t5: a tiny T5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    return {variant: BUILDERS[variant](root / variant) for variant in VARIANTS}


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def backbone(variant: str, folders: dict[str, Path]):
    return load_backbone(folders[variant])


def has_t5(backbone) -> bool:
    return getattr(backbone.pipe, "text_encoder_3", None) is not None


@contextmanager
def zeroed(modules: list[nn.Linear]) -> Iterator[None]:
    """Zero the weights of ``modules`` in place, restoring them afterwards."""
    saved = [m.weight.detach().clone() for m in modules]
    try:
        with torch.no_grad():
            for m in modules:
                m.weight.zero_()
        yield
    finally:
        with torch.no_grad():
            for m, w in zip(modules, saved, strict=True):
                m.weight.copy_(w)


def expected_projector_names(backbone) -> set[str]:
    denoiser = backbone.denoiser
    if backbone.family == "sd3":
        joint = [n for n, m in denoiser.named_modules() if getattr(m, "add_k_proj", None) is not None]
        assert joint, "the tiny SD3 transformer has joint attention blocks"
        kv = {f"transformer.{n}.{p}" for n in joint for p in ("add_k_proj", "add_v_proj")}
        return kv | {"transformer.context_embedder"}
    attn2 = [n for n, _ in denoiser.named_modules() if n.endswith("attn2")]
    assert attn2, "the tiny UNet has cross-attention blocks"
    return {f"unet.{n}.{p}" for n in attn2 for p in ("to_k", "to_v")}


# --- loading and identity -------------------------------------------------------------------------


def test_loads_the_family_with_identity(backbone, variant: str, folders: dict[str, Path]) -> None:
    assert isinstance(backbone, Backbone)
    assert backbone.family == variant.removesuffix("_t5")
    assert isinstance(backbone, FAMILIES[backbone.family])
    identity = backbone.identity()
    assert identity["family"] == backbone.family
    assert identity["source"] == str(folders[variant].resolve())
    assert Path(identity["source"]).is_absolute()
    assert identity["pipeline_class"] == FAMILIES[backbone.family].pipeline_class


def pipeline_object(folder: Path):
    """The pipeline a user holds in a notebook: loaded with diffusers itself."""
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    absent = {k: None for k, v in index.items() if isinstance(v, list) and v[:1] == [None]}  # SD3 without T5
    return getattr(diffusers, index["_class_name"]).from_pretrained(str(folder), local_files_only=True, **absent)


def test_a_pipeline_object_is_wrapped_as_it_is(backbone, variant: str, folders: dict[str, Path]) -> None:
    pipe = pipeline_object(folders[variant])
    wrapped = load_backbone(pipe)
    assert wrapped.pipe is pipe and type(wrapped) is type(backbone)  # no reload, the family from its class
    assert wrapped.identity()["source"] == pipe.name_or_path
    live = {id(m) for m in pipe.components[backbone.denoiser_name].modules()}
    assert all(id(m) in live for m in wrapped.projectors().values())  # edits land in the user's pipeline
    states, mask = wrapped.encode(["a cat"])
    expected, expected_mask = backbone.encode(["a cat"])
    assert torch.equal(mask, expected_mask) and torch.allclose(states, expected, atol=1e-6)
    assert load_backbone(wrapped) is wrapped


def test_a_pipeline_object_keeps_its_dtype(folders: dict[str, Path]) -> None:
    pipe = pipeline_object(folders["sd"]).to(torch.float64)
    wrapped = load_backbone(pipe)
    states, _ = wrapped.encode(["a cat"])
    assert states.dtype == torch.float64 and pipe.unet.dtype == torch.float64  # not upcast nor downcast
    images = wrapped.generate(["a cat"], [3], steps=2)
    assert images.dtype == np.uint8 and images.shape == (1, *wrapped.image_size(), 3)


def test_an_object_that_is_no_supported_pipeline_is_refused() -> None:
    with pytest.raises(UserError, match="cannot use a dict as a model"):
        load_backbone({})
    with pytest.raises(UserError, match="is not a StableDiffusionXLPipeline"):
        FAMILIES["sdxl"].wrap(object())


def test_families_map_pipeline_classes() -> None:
    assert {family: cls.pipeline_class for family, cls in FAMILIES.items()} == {
        "sd": "StableDiffusionPipeline",
        "sdxl": "StableDiffusionXLPipeline",
        "sd3": "StableDiffusion3Pipeline",
    }


def test_importing_the_loader_does_not_import_diffusers() -> None:
    code = "import sys, erasekit.backbones.loader; print('diffusers' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


# --- encode, projectors, text layers --------------------------------------------------------------


def test_encode_shapes_and_mask(backbone) -> None:
    states, mask = backbone.encode(["a cat", "a dog on a mat"])
    assert states.dtype == torch.float32 and states.ndim == 3
    assert mask.dtype == torch.bool and mask.shape == states.shape[:2]
    # byte-level vocabulary without merges: BOS + one token per character + EOS
    clip_positions = MAX_TOKENS
    assert mask[:, :clip_positions].sum(dim=1).tolist() == [2 + len("acat"), 2 + len("adogonamat")]
    assert mask[:, 0].all() and not mask[:, -1].any()
    if backbone.family == "sd3":  # CLIP positions then the T5 positions (zeros without a T5 encoder)
        assert states.shape[1] == clip_positions + backbone.max_sequence_length
        t5_mask, t5_states = mask[:, clip_positions:], states[:, clip_positions:]
        if has_t5(backbone):
            lengths = [len(ids) for ids in backbone.pipe.tokenizer_3(["a cat", "a dog on a mat"]).input_ids]
            assert t5_mask.sum(dim=1).tolist() == lengths and t5_mask[:, 0].all()
            assert (t5_states[t5_mask].abs().sum(-1) > 0).all()
        else:
            assert not t5_mask.any() and torch.all(t5_states == 0)
    else:
        assert states.shape[1] == clip_positions


def test_encode_is_what_the_denoiser_consumes(backbone) -> None:
    captured: list[torch.Tensor] = []

    def grab(_module, _args, kwargs):
        captured.append(kwargs["encoder_hidden_states"].clone())

    handle = backbone.denoiser.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        backbone.generate(["a cat", "a dog"], [0, 1], steps=1, guidance=1.0)  # guidance 1: no CFG batch
    finally:
        handle.remove()
    states, _ = backbone.encode(["a cat", "a dog"])
    assert torch.equal(captured[0], states)


def test_projectors_are_the_expected_modules(backbone) -> None:
    projectors = backbone.projectors()
    assert projectors and all(isinstance(m, nn.Linear) for m in projectors.values())
    assert set(projectors) == expected_projector_names(backbone)
    prefix = f"{backbone.denoiser_name}."
    for name, module in projectors.items():
        assert backbone.denoiser.get_submodule(name.removeprefix(prefix)) is module
    dim = backbone.encode(["a cat"])[0].shape[-1]
    if backbone.family == "sd3":
        assert projectors["transformer.context_embedder"].in_features == dim
    else:
        assert sum(n.endswith("to_k") for n in projectors) == sum(n.endswith("to_v") for n in projectors)
        assert {m.in_features for m in projectors.values()} == {dim}


def test_text_layers_are_named_linears_of_the_encoders(backbone) -> None:
    layers = backbone.text_layers()
    assert layers and all(isinstance(m, nn.Linear) for _, m in layers)
    components = backbone.pipe.components
    for name, module in layers:
        component, _, rest = name.partition(".")
        assert component.startswith("text_encoder")
        assert components[component].get_submodule(rest) is module
    encoders = [name.partition(".")[0] for name, _ in layers]
    expected = {"sd": ["text_encoder"]}.get(backbone.family, ["text_encoder", "text_encoder_2"])
    expected += ["text_encoder_3"] if has_t5(backbone) else []
    assert list(dict.fromkeys(encoders)) == expected  # encoder after encoder, in order


def test_editing_text_layers_changes_encode(backbone) -> None:
    before, _ = backbone.encode(["a cat"])
    first_layer = [m for name, m in backbone.text_layers() if ".layers.0." in name or ".block.0." in name]
    with zeroed(first_layer):
        after, _ = backbone.encode(["a cat"])
    assert not torch.allclose(before, after)


# --- generate -------------------------------------------------------------------------------------


def test_generate_is_seeded_uint8(backbone) -> None:
    images = backbone.generate(["a cat", "a dog"], [0, 1], steps=2)
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[0] == 2 and images.shape[-1] == 3
    assert images.shape[1:3] == backbone.image_size()
    again = backbone.generate(["a cat", "a dog"], [0, 1], steps=2)
    assert np.array_equal(images, again)
    other_seed = backbone.generate(["a cat"], [2], steps=2)
    assert not np.array_equal(images[0], other_seed[0])


FAMILY_SAMPLING = {"sd": (50, 7.5), "sdxl": (50, 5.0), "sd3": (28, 7.0)}  # diffusers' pipeline defaults


def test_sampling_defaults_come_from_the_family_and_the_folder(backbone) -> None:
    defaults = backbone.sampling_defaults()
    assert (defaults.steps, defaults.guidance) == FAMILY_SAMPLING[backbone.family]
    assert (defaults.height, defaults.width) == backbone.image_size()  # the folder's denoiser x VAE configs
    scheduler = type(backbone.pipe.scheduler).__name__
    assert defaults.scheduler.startswith(scheduler) and defaults.describe().endswith(defaults.scheduler)


def test_a_v_prediction_folder_says_so(folders: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = shutil.copytree(folders["sd"], tmp_path / "sd-v")
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"prediction_type": "v_prediction"}))
    assert load_backbone(folder).sampling_defaults().scheduler == "DDIMScheduler (v_prediction)"


def test_generate_without_steps_or_guidance_uses_the_models_defaults(backbone, monkeypatch) -> None:
    calls = []

    def spy(prompts, seeds, steps, guidance, progress):
        calls.append((steps, guidance))
        return np.zeros((len(prompts), 2, 2, 3), np.uint8)

    monkeypatch.setattr(backbone, "_generate_batch", spy)
    backbone.generate(["a cat"], [0])
    backbone.generate(["a cat"], [0], steps=3, guidance=1.5)
    assert calls == [FAMILY_SAMPLING[backbone.family], (3, 1.5)]


def test_generate_batches_do_not_change_images(backbone) -> None:
    together = backbone.generate(["a cat", "a dog", "a fish"], [0, 1, 2], steps=2)
    one_by_one = backbone.generate(["a cat", "a dog", "a fish"], [0, 1, 2], steps=2, batch_size=1)
    assert np.abs(together.astype(int) - one_by_one.astype(int)).max() <= 1


def test_no_prompts(backbone) -> None:
    assert backbone.generate([], [], steps=2).shape == (0, *backbone.image_size(), 3)
    states, mask = backbone.encode([])
    assert states.shape[0] == mask.shape[0] == 0 and states.shape[1:] == backbone.encode(["a"])[0].shape[1:]


def test_projectors_are_live(backbone) -> None:
    before = backbone.generate(["a cat"], [0], steps=2)
    projectors = backbone.projectors()
    if backbone.family == "sd3":
        edited = [projectors["transformer.context_embedder"]]
    else:
        edited = [m for name, m in projectors.items() if name.endswith("to_v")]
    with zeroed(edited):
        after = backbone.generate(["a cat"], [0], steps=2)
    assert not np.array_equal(before, after)
    assert np.array_equal(before, backbone.generate(["a cat"], [0], steps=2))  # restored


# --- bad input ------------------------------------------------------------------------------------


def test_too_long_prompt(backbone) -> None:
    prompt = "a " * MAX_TOKENS
    message = rf"prompt has {MAX_TOKENS + 2} tokens, more than the encoder's maximum of {MAX_TOKENS}: 'a a "
    with pytest.raises(UserError, match=message):
        backbone.encode(["a cat", prompt])
    with pytest.raises(UserError, match="more than the encoder's maximum"):
        backbone.generate([prompt], [0], steps=1)


def test_longest_allowed_prompt_is_accepted(backbone) -> None:
    states, mask = backbone.encode(["a " * (MAX_TOKENS - 2)])
    assert mask[0, :MAX_TOKENS].all()


def test_prompt_limits_per_tokenizer(backbone) -> None:
    limits = [limit for _, limit in backbone.token_limits()]
    clip = [MAX_TOKENS] * (1 if backbone.family == "sd" else 2)
    assert limits == clip + ([backbone.max_sequence_length] if has_t5(backbone) else [])


def test_mismatched_prompts_and_seeds(backbone) -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        backbone.generate(["a cat", "a dog"], [0], steps=1)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model folder not found"):
        load_backbone(tmp_path / "nope")


def test_folder_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"not a diffusers model folder \(no model_index.json\)"):
        load_backbone(tmp_path)


def test_unsupported_pipeline_class(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UserError, match="FluxPipeline.*StableDiffusionPipeline"):
        load_backbone(str(tmp_path))


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"unet": ["diffusers", "UNet2DConditionModel"]}'])
def test_corrupted_model_index(tmp_path: Path, content: str) -> None:
    (tmp_path / "model_index.json").write_text(content)
    with pytest.raises(UserError, match="model_index.json"):
        load_backbone(tmp_path)


def test_missing_component_files(tmp_path: Path, folders: dict[str, Path]) -> None:
    (tmp_path / "model_index.json").write_text((folders["sd"] / "model_index.json").read_text())
    with pytest.raises(UserError, match="could not load StableDiffusionPipeline"):
        load_backbone(tmp_path)


def test_family_class_rejects_another_family(folders: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="StableDiffusionXLPipeline, not a StableDiffusionPipeline"):
        StableDiffusionBackbone.load(folders["sdxl"])


def test_no_prompt_reads_as_unknown_text_to_a_byte_level_tokenizer(backbone) -> None:
    """CLIP calls end-of-text its unknown token: every prompt carries it, so it must not flag one."""
    from erasekit.concepts.pairs import unknown_token_names

    clip, *t5 = backbone.token_segments(["a castle"])
    assert clip.unknown_id is None and unknown_token_names(["castle"], backbone) == []
    if t5:  # T5's sentencepiece does have an unknown token, and a snowman is spelt with it
        assert t5[0].unknown_id is not None and unknown_token_names(["castle", "☃"], backbone) == ["☃"]


# --- devices and precision ---------------------------------------------------------------------------------


def _dtypes(backbone) -> set[torch.dtype]:
    modules = [backbone.denoiser, *backbone.text_encoders().values(), backbone.pipe.vae]
    return {p.dtype for m in modules for p in m.parameters() if p.is_floating_point()}


def test_a_half_precision_folder_loads_in_the_precision_asked_for(folders, tmp_path) -> None:
    half = tmp_path / "sd16"
    load_backbone(folders["sd"], "cpu", "float16").pipe.save_pretrained(str(half), safe_serialization=True)
    assert _dtypes(load_backbone(half, "cpu", "float16")) == {torch.float16}
    as_float32 = load_backbone(half, "cpu", "float32")
    assert _dtypes(as_float32) == {torch.float32} and as_float32.device == torch.device("cpu")
    assert _dtypes(load_backbone(half)) == {torch.float32}  # auto on a machine without a GPU


def test_a_pipeline_object_keeps_its_dtype_unless_told(folders) -> None:
    pipe = load_backbone(folders["sd"], "cpu", "bfloat16").pipe
    assert _dtypes(load_backbone(pipe)) == {torch.bfloat16}
    assert _dtypes(load_backbone(pipe, dtype="float32")) == {torch.float32}


def test_generate_in_bfloat16_on_the_cpu(folders) -> None:
    backbone = load_backbone(folders["sd"], "cpu", "bfloat16")
    images = backbone.generate(["a cat"], [0], steps=2)
    assert images.dtype == np.uint8 and images.shape[0] == 1


# --- memory switches and SD3 without T5 ---------------------------------------------------------------------


def test_attention_slicing_and_vae_tiling_are_diffusers_switches_that_keep_the_images(folders) -> None:
    from diffusers.models.attention_processor import SlicedAttnProcessor

    from erasekit.backbones.diffusers_common import PipelineOptions

    plain = load_backbone(folders["sd"], "cpu")
    saving = load_backbone(folders["sd"], "cpu", options=PipelineOptions(("attention-slicing", "vae-tiling")))
    assert (
        saving.pipe.vae.use_tiling
        and not plain.pipe.vae.use_tiling
        and saving.memory
        == (
            "attention-slicing",
            "vae-tiling",
        )
    )
    assert {type(p) for p in saving.denoiser.attn_processors.values()} == {SlicedAttnProcessor}
    # the same arithmetic, a slice at a time: the same images (up to one level of rounding)
    a, b = plain.generate(["a cat", "a dog"], [0, 1], steps=2), saving.generate(["a cat", "a dog"], [0, 1], steps=2)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("folder", "options", "message"),
    [
        ("sd", {"memory": ("cpu-offload",)}, "cpu-offload .* CUDA GPU"),  # no GPU here (the CPU is the device)
        ("sd", {"memory": ("sliced",)}, "--memory sliced: choose from attention-slicing, vae-tiling, cpu-offload"),
        ("sd", {"without_t5": True}, "only SD3 has a T5 encoder, not this sd model"),
        ("shapeworld", {"memory": ("vae-tiling",)}, "diffusers models only"),
    ],
)
def test_a_switch_the_model_or_device_cannot_take_is_refused_before_loading(folders, options, folder, message):
    from erasekit.backbones.diffusers_common import PipelineOptions

    with pytest.raises(UserError, match=message):
        load_backbone(folders.get(folder, folder), "cpu", options=PipelineOptions(**options))


def test_sd3_without_t5_is_an_identity_an_edit_fitted_with_t5_refuses(folders) -> None:
    import erasekit
    from erasekit.artifacts import apply_artifact
    from erasekit.backbones.diffusers_common import PipelineOptions

    with_t5 = load_backbone(folders["sd3_t5"], "cpu")
    without = load_backbone(folders["sd3_t5"], "cpu", options=PipelineOptions(without_t5=True))
    assert with_t5.pipe.text_encoder_3 is not None and without.pipe.text_encoder_3 is None
    assert with_t5.identity()["text_encoders"] == "text_encoder+text_encoder_2+text_encoder_3"
    assert without.identity()["text_encoders"] == "text_encoder+text_encoder_2"
    assert without.encode(["a cat"])[1][:, MAX_TOKENS:].sum() == 0  # T5 positions: zeros, masked
    short = ["a photo of {}", "{}"]  # the tiny encoders read 32 tokens
    fitted_with, fitted_without = (
        erasekit.erase(b, ["cat"], method="uce", templates=short) for b in (with_t5, without)
    )
    assert fitted_with.base["text_encoders"] != fitted_without.base["text_encoders"]
    for backbone, artifact in ((without, fitted_with), (with_t5, fitted_without)):  # either way: one pathway unedited
        with pytest.raises(UserError, match="fitted with text encoders .* this model has"):
            apply_artifact(backbone, artifact)
    apply_artifact(without, fitted_without)  # as it was made: applies


def test_a_prefix_encoding_is_encode_at_those_positions(backbone) -> None:
    prefix = getattr(backbone, "encode_prefix", None)
    if backbone.family == "sd3":
        assert prefix is None  # its T5 part is bidirectional: every position may see every other
        return
    prompts = ["a cat", "a small dog on the grass", ""]
    full = backbone.encode(prompts)[0]
    for length in (1, 4, full.shape[1]):
        states = prefix(prompts, length)
        assert states.shape == (3, length, full.shape[2])
        assert torch.allclose(states, full[:, :length], atol=1e-5, rtol=1e-4)
