"""`erasekit erase` and `--edit`: a working round trip, and bad input refused with one line, exit 2,
nothing written."""

from pathlib import Path

import pytest

from cli_helpers import run_cli
from test_cli_errors import one_line_error
from tiny_pipelines import build_sd


@pytest.fixture(scope="module")
def sd_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sd")
    return {"sd": build_sd(root / "sd"), "other": build_sd(root / "other", seed=1)}


@pytest.fixture
def sd_edit(capsys, sd_folders, tmp_path) -> Path:
    templates = tmp_path / "templates.txt"
    templates.write_text("a {}\na photo of a {}\n")
    out = tmp_path / "cat"
    code, _, err = run_cli(
        capsys, "erase", "--model", sd_folders["sd"], "--target", "cat", "--anchor", "animal",
        "--templates", templates, "--out", out,
    )  # fmt: skip
    assert code == 0, err
    return out


def test_erase_writes_an_artifact_and_generate_uses_it(capsys, sd_folders, sd_edit, tmp_path):
    assert (sd_edit / "manifest.json").exists() and (sd_edit / "tensors.safetensors").exists()
    out = tmp_path / "images"
    code, _, err = run_cli(
        capsys, "generate", "--model", sd_folders["sd"], "--edit", sd_edit, "--prompt", "a cat",
        "--num-images", "1", "--steps", "2", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert (out / "0_0.png").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--target", "star", "--anchor", "star"], "equals its anchor"),
        (["--target", ""], "empty"),
        (["--target", "star", "--target", "star"], "duplicate"),
        (["--target", "star", "--preserve", "star"], "both a target"),
        (["--method", "magic", "--target", "star"], "unknown method"),
        (["--task", "nope"], "unknown task"),
        ([], "no target"),
        (["--method", "uce", "--target", "star", "--set", "chain_layers=2"], "uce has no setting 'chain_layers'"),
        (["--target", "star", "--set", "s_e=10"], "method erasepro has no setting 's_e'"),
        (["--method", "etc", "--target", "red star", "--set", "ridge=1"], "method etc has no setting 'ridge'"),
    ],
)
def test_bad_erase_requests(capsys, tmp_path, args, fragment):
    out = tmp_path / "edit"
    code, _, err = run_cli(capsys, "erase", *args, "--out", out)
    one_line_error(code, err, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "command",
    [("erase",), ("attack", "--attack", "paraphrase", "--clip", "{clip}")],
)
def test_a_task_on_a_model_without_a_world_is_refused(capsys, sd_folders, tmp_path, command):
    out = tmp_path / "out"
    args = [a.format(clip=sd_folders["other"]) for a in command]
    code, _, err = run_cli(capsys, *args, "--model", sd_folders["sd"], "--task", "instance", "--out", out)
    one_line_error(code, err, "a diffusers model has no tasks")
    assert not out.exists()


def test_targets_file_with_a_blank_line(capsys, tmp_path):
    targets = tmp_path / "targets.txt"
    targets.write_text("star\n\nheart\n")
    code, _, err = run_cli(capsys, "erase", "--targets", targets, "--out", tmp_path / "edit")
    one_line_error(code, err, "line 2 is blank")
    assert not (tmp_path / "edit").exists()


def test_artifact_from_another_base_is_refused(capsys, sd_folders, sd_edit, tmp_path):
    for model, fragment in [(sd_folders["other"], "different base model"), ("shapeworld", "made for a sd model")]:
        out = tmp_path / "images"
        code, _, err = run_cli(
            capsys, "generate", "--model", model, "--edit", sd_edit, "--prompt", "a cat", "--steps", "2", "--out", out
        )
        one_line_error(code, err, fragment)
        assert not out.exists()


def test_corrupted_artifact_is_refused(capsys, sd_folders, sd_edit, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_bytes((sd_edit / "manifest.json").read_bytes())
    data = bytearray((sd_edit / "tensors.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (broken / "tensors.safetensors").write_bytes(bytes(data))
    out = tmp_path / "images"
    code, _, err = run_cli(
        capsys, "generate", "--model", sd_folders["sd"], "--edit", broken, "--prompt", "a cat", "--out", out
    )
    one_line_error(code, err, "corrupted")
    assert not out.exists()


def test_export_writes_a_loadable_pipeline(capsys, sd_folders, sd_edit, tmp_path):
    out = tmp_path / "exported"
    code, _, err = run_cli(capsys, "export", "--edit", sd_edit, "--model", sd_folders["sd"], "--out", out)
    assert code == 0, err
    assert (out / "model_index.json").exists() and (out / "erasekit_edit.json").exists()
    code, _, err = run_cli(
        capsys, "generate", "--model", out, "--prompt", "a cat", "--num-images", "1", "--steps", "2",
        "--out", tmp_path / "img",
    )  # fmt: skip
    assert code == 0, err


def test_export_of_a_shapeworld_edit_is_refused(capsys, tmp_path):
    out = tmp_path / "edit"
    assert run_cli(capsys, "erase", "--target", "star", "--anchor", "shape", "--out", out)[0] == 0
    code, _, err = run_cli(capsys, "export", "--edit", out, "--model", "shapeworld", "--out", tmp_path / "x")
    one_line_error(code, err, "diffusers folder")
    assert not (tmp_path / "x").exists()


def test_targets_file_that_is_not_text(capsys, tmp_path):
    targets = tmp_path / "targets.bin"
    targets.write_bytes(b"\xff\xfe\x00star")
    code, _, err = run_cli(capsys, "erase", "--targets", targets, "--out", tmp_path / "edit")
    one_line_error(code, err, "not a UTF-8 text file")
    assert not (tmp_path / "edit").exists()


def test_chain_layers_limits_the_progressive_chain(capsys, tmp_path):
    import json

    out = tmp_path / "edit"
    code, stdout, err = run_cli(
        capsys, "erase", "--target", "star", "--anchor", "shape", "--set", "chain_layers=2", "--out", out
    )
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    stages = [s["stage"] for s in manifest["metrics"]["stages"]]
    assert stages == ["text layer 0", "text layer 1", "projectors"] and manifest["config"]["chain_layers"] == 2
