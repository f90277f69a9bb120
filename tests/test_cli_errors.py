"""Bad input gives one clear line on stderr, exit status 2, and writes nothing."""

import pytest

from cli_helpers import run_cli
from tiny_pipelines import build_sd

HEADER = "prompt,evaluation_seed,case_number,concept,role\n"


def one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert fragment in lines[0], lines[0]


def test_missing_model_folder(capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "generate", "--prompt", "a red star", "--model", tmp_path / "nope", "--out", out)
    one_line_error(code, err, "not found")
    assert not out.exists()


def test_folder_that_is_not_a_diffusers_model(capsys, tmp_path):
    (tmp_path / "model").mkdir()
    code, _, err = run_cli(
        capsys, "generate", "--prompt", "a red star", "--model", tmp_path / "model", "--out", tmp_path / "out"
    )
    one_line_error(code, err, "model_index.json")
    assert not (tmp_path / "out").exists()


def test_classify_rejects_a_file_that_is_not_an_image(capsys, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    code, out, err = run_cli(capsys, "classify", bad)
    one_line_error(code, err, "not an image")
    assert out == ""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("", "missing column"), (HEADER, "no prompts"), (HEADER + "a star,x,0,shape=star,target\n", "integer")],
)
def test_evaluate_rejects_bad_prompt_files(capsys, tmp_path, content, fragment):
    csv = tmp_path / "p.csv"
    csv.write_text(content)
    code, _, err = run_cli(capsys, "evaluate", "--prompts", csv, "--out", tmp_path / "out")
    one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists()


def test_prompt_longer_than_the_encoder_maximum(capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", "--prompt", "a red star " * 30, "--out", tmp_path / "out")
    one_line_error(code, err, "maximum")
    assert not (tmp_path / "out").exists()


def test_generate_needs_exactly_one_prompt_source(capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", "--out", tmp_path / "out")
    one_line_error(code, err, "exactly one")


def test_unknown_option_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "generate", "--frobnicate")
    assert code == 2 and "frobnicate" in err


def test_compile_without_a_cpp_compiler_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("erasekit.backbones.shapeworld.has_cpp_compiler", lambda: False)
    code, _, err = run_cli(capsys, "generate", "--compile", "--prompt", "a red star", "--out", tmp_path / "out")
    one_line_error(code, err, "C++ compiler")
    assert not (tmp_path / "out").exists()


def test_compile_is_refused_for_a_diffusers_model(capsys, tmp_path):
    model = build_sd(tmp_path / "sd")
    args = ("--compile", "--prompt", "a castle", "--model", model, "--out", tmp_path / "out")
    code, _, err = run_cli(capsys, "generate", *args)
    one_line_error(code, err, "only the shapeworld model")
    assert not (tmp_path / "out").exists()


def test_a_report_shows_closed_form_stages_and_skips_timing_rows():
    from types import SimpleNamespace

    from erasekit.cli.tables import edit_html as _edit_html

    timing = {"stage": "memory", "seconds": 1.0, "peak_mib": 10.0}  # an ETC edit's stage rows
    assert _edit_html(SimpleNamespace(method="etc", metrics={"stages": [timing]})) == ""
    closed = {"stage": "projectors", "gap": 0.5, "residual": 1e-9, "delta": 0.1, "constraints": 3, "d_in": 8, "maps": 2}
    page = _edit_html(SimpleNamespace(method="uce", metrics={"stages": [closed, timing]}))
    assert "projectors" in page and "memory" not in page and "data:image/png" in page


# --- devices and precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "tpu"])
def test_a_device_this_machine_lacks_is_one_line(capsys, tmp_path, monkeypatch, device):
    import erasekit.utils.devices as devices

    monkeypatch.setattr(devices, "available", lambda: devices.Availability())  # a machine without a GPU
    loaded = []
    monkeypatch.setattr("erasekit.backbones.loader.family_for_folder", lambda folder: loaded.append(folder))
    model = build_sd(tmp_path / "sd")
    capsys.readouterr()  # what building the folder printed
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "generate", "--prompt", "a castle", "--model", model, "--device", device, "--out", out
    )
    one_line_error(code, err, f"--device {device}")
    assert not out.exists() and not loaded  # refused before the model loads


def test_a_bad_dtype_is_one_line(capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "generate", "--prompt", "a red star", "--dtype", "float64", "--out", out)
    one_line_error(code, err, "--dtype float64")
    assert not out.exists()


def test_generate_on_the_cpu_in_bfloat16(capsys, tmp_path):
    model = build_sd(tmp_path / "sd")
    out = tmp_path / "out"
    args = ("--prompt", "a castle", "--num-images", "2", "--steps", "2", "--device", "cpu", "--dtype", "bfloat16")
    code, _, err = run_cli(capsys, "generate", *args, "--model", model, "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0_0.png", "0_1.png", "grid.png"]
    # the summary says how and where: --steps as given, the SD family's guidance 7.5, the folder's size and sampler
    assert "2 steps, guidance 7.5, 32x32, DDIMScheduler (epsilon) on cpu" in err and "bfloat16" in err
