"""The public Python API (erasekit/__init__.py): its docstring example runs, and it works on a pipeline object."""

import doctest

import numpy as np
import pytest

import erasekit
from erasekit.errors import UserError
from tiny_pipelines import build_sd


def test_the_documented_example_runs():
    result = doctest.testmod(erasekit, raise_on_error=False)
    assert result.attempted >= 5 and result.failed == 0


def test_erase_apply_and_remove_on_a_pipeline_object_the_user_holds(tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(build_sd(tmp_path / "sd"))
    weights = {k: v.clone() for k, v in pipe.unet.state_dict().items() if "attn2.to_k" in k}
    edit = erasekit.erase(pipe, ["cat"], method="uce", anchor="animal", templates=["a {}", "a photo of a {}"])
    edit.save(tmp_path / "edit")
    loaded = erasekit.load_artifact(tmp_path / "edit")
    handle = loaded.apply(pipe)
    changed = [k for k, v in weights.items() if not np.allclose(v, pipe.unet.state_dict()[k])]
    assert changed  # the user's own pipeline object is edited in place
    loaded.remove(handle)
    assert all(np.array_equal(v, pipe.unet.state_dict()[k]) for k, v in weights.items())


def test_a_setting_is_checked_as_the_cli_checks_it():
    with pytest.raises(UserError, match="ridge"):
        erasekit.erase("shapeworld", ["star"], method="uce", anchor="shape", ridge=float("inf"))
    with pytest.raises(UserError, match="no setting 'lamda'"):
        erasekit.erase("shapeworld", ["star"], method="uce", anchor="shape", lamda=1.0)
