"""Training checkpoints resume to exactly the state an uninterrupted run reaches."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import run_cli
from erasekit.world.classifier import ClassifierTrainConfig, load_classifier, train_classifier
from erasekit.world.train_denoiser import DenoiserTrainConfig, train_denoiser
from tiny_shapeworld import TINY_UNET_CONFIG


def tiny_denoiser_config(steps: int) -> DenoiserTrainConfig:
    return DenoiserTrainConfig(
        steps=steps,
        batch_size=4,
        pool_random_captions=24,
        pool_canonical=False,
        checkpoint_every=2,
        warmup_steps=2,
        unet_config=TINY_UNET_CONFIG,
    )


@pytest.mark.slow  # trains for real: 15-70 s
def test_denoiser_resume_matches_uninterrupted_run(tmp_path):
    card = train_denoiser(tmp_path / "straight", tiny_denoiser_config(4), export=tmp_path / "export")
    train_denoiser(tmp_path / "resumed", tiny_denoiser_config(2))
    train_denoiser(tmp_path / "resumed", tiny_denoiser_config(4))
    a = load_file(tmp_path / "straight" / "step-00000004" / "ema.safetensors")
    b = load_file(tmp_path / "resumed" / "step-00000004" / "ema.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert card["steps"] == 4 and card["final_loss"] > 0
    exported = tmp_path / "export"
    assert (exported / "diffusion_pytorch_model.safetensors").exists()
    assert json.loads((exported / "training.json").read_text())["steps"] == 4


@pytest.mark.slow  # trains for real: 15-70 s
def test_classifier_trains_resumes_and_exports(tmp_path):
    config = ClassifierTrainConfig(steps=6, batch_size=16, checkpoint_every=3)
    train_classifier(tmp_path / "run", ClassifierTrainConfig(steps=3, batch_size=16, checkpoint_every=3))
    card = train_classifier(tmp_path / "run", config, export=tmp_path / "export")
    assert set(card["heldout_accuracy"]) == {"shape", "colour", "pattern", "background"}
    model = load_classifier(tmp_path / "export")
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.slow  # trains for real: 15-70 s
def test_denoiser_continues_from_an_exported_model(tmp_path):
    train_denoiser(tmp_path / "first", tiny_denoiser_config(2), export=tmp_path / "export")
    card = train_denoiser(tmp_path / "second", tiny_denoiser_config(4), init_from=tmp_path / "export")
    assert card["steps"] == 4
    assert (
        card["objective_history"][-1]["from_step"] == 2 and "fresh optimizer" in card["objective_history"][-1]["note"]
    )
    assert not (tmp_path / "second" / "step-00000002").exists() and (tmp_path / "second" / "step-00000004").exists()


@pytest.mark.slow  # trains for real: 15-70 s
def test_continuing_into_other_attention_heads_says_so(tmp_path):
    train_denoiser(tmp_path / "first", tiny_denoiser_config(2), export=tmp_path / "export")
    config = tiny_denoiser_config(3)
    config.unet_config = {**TINY_UNET_CONFIG, "attention_head_dim": (2, 4, 4)}
    card = train_denoiser(tmp_path / "second", config, init_from=tmp_path / "export")
    assert card["objective_history"][-1]["note"].endswith("attention heads 8 -> [2, 4, 4]")
    unchanged = train_denoiser(tmp_path / "third", tiny_denoiser_config(3), init_from=tmp_path / "export")
    assert "attention heads" not in unchanged["objective_history"][-1]["note"]


@pytest.mark.slow  # trains for real: 15-70 s
def test_resume_builds_the_architecture_the_checkpoint_was_saved_with(tmp_path):
    train_denoiser(tmp_path / "run", tiny_denoiser_config(2))
    config = tiny_denoiser_config(4)
    config.unet_config = {**TINY_UNET_CONFIG, "attention_head_dim": (2, 4, 4)}  # e.g. UNET_CONFIG changed since
    train_denoiser(tmp_path / "run", config, export=tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["attention_head_dim"] == 8
    state = json.loads((tmp_path / "run" / "step-00000004" / "state.json").read_text())
    assert state["architecture"]["attention_head_dim"] == 8


def test_pattern_weights_oversample_the_named_pattern():
    from erasekit.world.data import FACTORS, CaptionPool
    from erasekit.world.factors import VOCAB
    from erasekit.world.train_denoiser import caption_probabilities

    pattern = FACTORS.index("pattern")
    ids = -np.ones((4, len(FACTORS)), dtype=np.int64)
    ids[:, pattern] = [VOCAB.index("pattern", "ringed"), VOCAB.index("pattern", "solid"), -1, -1]
    pool = CaptionPool(["a", "b", "c", "d"], ids, -np.ones(4), -np.ones(4), torch.zeros(4, 1, 1), torch.ones(4, 1))
    assert caption_probabilities(pool, None) is None
    p = caption_probabilities(pool, {"ringed": 3.0})
    np.testing.assert_allclose(p, [0.5, 1 / 6, 1 / 6, 1 / 6])


def test_pattern_weight_option_rejects_bad_weights(tmp_path, capsys):
    for bad in ("plaid=2", "ringed", "ringed=x", "ringed=0", "ringed=inf"):
        code, _, err = run_cli(capsys, "world", "train-denoiser", "--pattern-weight", bad, "--out", tmp_path / "run")
        assert code == 2 and bad in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_damaged_checkpoint_is_a_one_line_error_naming_it(tmp_path):
    from erasekit.errors import UserError
    from erasekit.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path, 1, {"model": model}, optimizer, {})
    path = latest_checkpoint(tmp_path)
    (path / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(UserError, match="damaged training checkpoint") as caught:
        load_checkpoint(path, {"model": model}, optimizer)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
