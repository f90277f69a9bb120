"""Bad input across every command (issue 21): each case below is refused with one line on stderr and exit status 2,
no traceback, nothing written (no output, no temporary folder) and every input left as it was."""

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import run_cli

HEADER = "prompt,evaluation_seed,case_number,concept,role\n"
ROW = "a red star,0,0,shape=star,target\n"
FILES = {  # name -> content of the input files a case may name as {name}
    "csv": HEADER + ROW,
    "dup_case": HEADER + ROW + "a blue heart,1,0,shape=heart,preserve\n",
    "neg_seed": HEADER + "a red star,-1,0,shape=star,target\n",
    "big_seed": HEADER + f"a red star,{2**64 - 1},0,shape=star,target\n",
    "bad_role": HEADER + "a red star,0,0,shape=star,victim\n",
    "header_only": HEADER,
    "no_targets": HEADER + "a blue heart,1,0,shape=heart,preserve\n",
    "empty": "",
    "blank_line": "star\n\nheart\n",
    "binary": "\x00\x01\x02",
    "latin1": "caf\xe9\n",
    "pool": "heart\ncross\ndiamond\n",
    "pool_dup": "heart\ncross\nheart\n",
    "pool_with_star": "star\nheart\ncross\n",
    "no_slot": "a picture\n",
    "two_prompts": "a star\na red star\n",
    "not_image": "not an image",
    "list.json": "[1, 2]",
    "unknown.json": '{"lambda": 0.5}',
}
MISSING = "{tmp}/nope"
GEN = ("generate", "--prompt", "a red star")
EVAL = ("evaluate", "--prompts", "{csv}")
UCE = ("erase", "--method", "uce", "--target", "star", "--anchor", "shape")
EPRO = ("erase", "--method", "erasepro", "--target", "star", "--anchor", "shape")
ETC = ("erase", "--method", "etc", "--target", "red striped star", "--mapping-pool", "{pool}")
ATT = ("attack", "--attack", "soft-prompt", "--task", "instance")
BENCH = ("bench", "--task", "instance", "--method", "uce", "--no-attacks")

CASES = {  # name: (arguments, a fragment of the one-line error); {out} is appended unless the case names it
    # numbers: non-finite, out of range, the wrong type
    "generate-guidance-nan": ((*GEN, "--guidance", "nan"), "guidance"),
    "generate-guidance-inf": ((*GEN, "--guidance", "inf"), "guidance"),
    "generate-guidance-negative": ((*GEN, "--guidance", "-1"), "guidance"),
    "generate-guidance-huge": ((*GEN, "--guidance", "1e6"), "guidance"),
    "generate-guidance-word": ((*GEN, "--guidance", "high"), "--guidance"),
    "generate-steps-zero": ((*GEN, "--steps", "0"), "--steps"),
    "generate-steps-huge": ((*GEN, "--steps", "1000000"), "steps"),
    "generate-steps-float": ((*GEN, "--steps", "2.5"), "--steps"),
    "generate-images-zero": ((*GEN, "--num-images", "0"), "--num-images"),
    "generate-images-huge": ((*GEN, "--num-images", "100000"), "num_images"),
    "generate-seed-negative": ((*GEN, "--seed", "-1"), "--seed"),
    "generate-seed-2**64": ((*GEN, "--seed", str(2**64)), "--seed"),
    "generate-seed-word": ((*GEN, "--seed", "lucky"), "--seed"),
    "evaluate-guidance-nan": ((*EVAL, "--guidance", "nan"), "guidance"),
    "evaluate-images-zero": ((*EVAL, "--num-images", "0"), "--num-images"),
    "evaluate-steps-huge": ((*EVAL, "--steps", "5000"), "steps"),
    "uce-ridge-inf": ((*UCE, "--set", "ridge=inf"), "ridge"),
    "uce-ridge-nan": ((*UCE, "--set", "ridge=nan"), "ridge"),
    "uce-ridge-zero": ((*UCE, "--set", "ridge=0"), "ridge"),
    "uce-ridge-negative": ((*UCE, "--set", "ridge=-1"), "ridge"),
    "uce-s-e-inf": ((*UCE, "--set", "s_e=inf"), "s_e"),
    "uce-s-e-overflow": ((*UCE, "--set", "s_e=1e400"), "s_e"),
    "uce-s-p-inf": ((*UCE, "--set", "s_p=inf"), "s_p"),
    "uce-s-p-negative": ((*UCE, "--set", "s_p=-0.5"), "s_p"),
    "erasepro-ridge-inf": ((*EPRO, "--set", "ridge=inf"), "ridge"),
    "erasepro-s-p-nan": ((*EPRO, "--set", "s_p=nan"), "s_p"),
    "erasepro-chain-layers-zero": ((*EPRO, "--set", "chain_layers=0"), "chain_layers"),
    "erasepro-chain-layers-deeper-than-the-encoder": ((*EPRO, "--set", "chain_layers=7"), "only 6 layers"),
    "etc-coverage-zero": ((*ETC, "--set", "coverage=0"), "coverage"),
    "etc-coverage-above-one": ((*ETC, "--set", "coverage=1.5"), "coverage"),
    "etc-coverage-nan": ((*ETC, "--set", "coverage=nan"), "coverage"),
    "etc-residual-negative": ((*ETC, "--set", "residual=-0.1"), "residual"),
    "etc-residual-inf": ((*ETC, "--set", "residual=inf"), "residual"),
    "etc-contexts-one": ((*ETC, "--set", "contexts=1"), "contexts"),
    "etc-seed-negative": ((*ETC, "--set", "seed=-5"), "seed"),
    "etc-moe-steps-huge": ((*ETC, "--set", "eraser=moe", "--set", "steps=10000000"), "steps"),
    "etc-setting-unknown": ((*ETC, "--set", "ridge=1"), "no setting 'ridge'"),
    "erase-set-without-equals": ((*UCE, "--set", "ridge"), "KEY=VALUE"),
    "erase-set-bool-word": ((*EPRO, "--set", "progressive=maybe"), "progressive"),
    "erase-config-missing": ((*UCE, "--config", MISSING), "not found"),
    "erase-config-not-toml": ((*UCE, "--config", "{binary}"), "{binary}"),
    "erase-config-a-list": ((*UCE, "--config", "{list.json}"), "table of settings"),
    "erase-config-unknown-setting": ((*UCE, "--config", "{unknown.json}"), "no setting 'lambda'"),
    "attack-guidance-inf": ((*ATT, "--guidance", "inf"), "guidance"),
    "attack-steps-zero": ((*ATT, "--steps", "0"), "--steps"),
    "attack-seed-negative": ((*ATT, "--seed", "-1"), "--seed"),
    "attack-budget-lr-inf": ((*ATT, "--budget", "lr=inf"), "lr"),
    "attack-budget-lr-nan": ((*ATT, "--budget", "lr=nan"), "lr"),
    "attack-budget-lr-negative": ((*ATT, "--budget", "lr=-1"), "lr"),
    "attack-budget-steps-zero": ((*ATT, "--budget", "steps=0"), "steps"),
    "attack-budget-steps-huge": ((*ATT, "--budget", "steps=1e9"), "steps"),
    "attack-budget-steps-word": ((*ATT, "--budget", "steps=abc"), "steps"),
    "attack-budget-unknown-key": ((*ATT, "--budget", "stepz=3"), "stepz"),
    "attack-budget-no-equals": ((*ATT, "--budget", "lr"), "KEY=VALUE"),
    "attack-budget-other-attack": ((*ATT, "--budget", "inversion:steps=3"), "inversion"),
    "bench-per-group-zero": ((*BENCH, "--per-group", "0"), "--per-group"),
    "bench-steps-zero": ((*BENCH, "--steps", "0"), "--steps"),
    "bench-budget-lr-nan": (("bench", "--task", "instance", "--budget", "soft-prompt:lr=nan"), "lr"),
    "bench-budget-without-attack": (("bench", "--task", "instance", "--budget", "lr=1"), "ATTACK:KEY=VALUE"),
    "train-denoiser-lr-inf": (("world", "train-denoiser", "--lr", "inf", "--steps", "1"), "lr"),
    "train-denoiser-lr-nan": (("world", "train-denoiser", "--lr", "nan", "--steps", "1"), "--lr"),
    "train-denoiser-steps-zero": (("world", "train-denoiser", "--steps", "0"), "--steps"),
    "train-denoiser-pattern-weight-inf": (("world", "train-denoiser", "--pattern-weight", "striped=inf"), "finite"),
    "train-denoiser-pattern-weight-unknown": (("world", "train-denoiser", "--pattern-weight", "plaid=2"), "plaid"),
    "train-classifier-steps-zero": (("world", "train-classifier", "--steps", "0"), "--steps"),
    "demo-per-group-zero": (("demo", "--per-group", "0"), "--per-group"),
    "evaluate-guidance-inf": ((*EVAL, "--guidance", "inf"), "guidance"),
    "evaluate-steps-zero": ((*EVAL, "--steps", "0"), "--steps"),
    "attack-guidance-nan": ((*ATT, "--guidance", "nan"), "guidance"),
    "attack-budget-lr-zero": ((*ATT, "--budget", "lr=0"), "lr"),
    "bench-budget-steps-zero": (("bench", "--task", "instance", "--budget", "soft-prompt:steps=0"), "steps"),
    "erase-ridge-word": ((*UCE, "--set", "ridge=big"), "ridge"),
    "etc-residual-nan": ((*ETC, "--set", "residual=nan"), "residual"),
    "etc-coverage-inf": ((*ETC, "--set", "coverage=inf"), "coverage"),
    "etc-contexts-word": ((*ETC, "--set", "contexts=many"), "contexts"),
    "etc-unknown-eraser": ((*ETC, "--set", "eraser=mlp"), "eraser"),
    "train-classifier-seed-negative": (("world", "train-classifier", "--seed", "-1"), "seed"),
    "train-denoiser-lr-final-inf": (("world", "train-denoiser", "--lr-final", "inf", "--steps", "1"), "lr_final"),
    # inputs: missing, a folder, empty, not text, misread rows
    "generate-no-prompt": (("generate",), "exactly one"),
    "generate-both-prompts": ((*GEN, "--prompts", "{csv}"), "exactly one"),
    "generate-blank-prompt": (("generate", "--prompt", "   "), "empty"),
    "generate-too-long-prompt": (("generate", "--prompt", "a red star " * 30), "maximum"),
    "generate-prompts-missing": (("generate", "--prompts", MISSING), "not found"),
    "generate-prompts-a-folder": (("generate", "--prompts", "{folder}"), "folder"),
    "generate-prompts-duplicate-case": (("generate", "--prompts", "{dup_case}"), "case_number"),
    "generate-prompts-negative-seed": (("generate", "--prompts", "{neg_seed}"), "evaluation_seed"),
    "generate-prompts-seed-2**64": (("generate", "--prompts", "{big_seed}"), "evaluation_seed"),
    "generate-prompts-binary": (("generate", "--prompts", "{binary}"), "{binary}"),
    "generate-edit-missing": ((*GEN, "--edit", MISSING), "not found"),
    "generate-edit-not-an-artifact": ((*GEN, "--edit", "{edit}"), "manifest"),
    "generate-edit-a-file": ((*GEN, "--edit", "{csv}"), "{csv}"),
    "generate-model-missing": ((*GEN, "--model", MISSING), "not found"),
    "generate-model-not-diffusers": ((*GEN, "--model", "{edit}"), "model_index.json"),
    "evaluate-prompts-missing": (("evaluate", "--prompts", MISSING), "not found"),
    "evaluate-prompts-empty": (("evaluate", "--prompts", "{empty}"), "{empty}"),
    "evaluate-prompts-header-only": (("evaluate", "--prompts", "{header_only}"), "no prompts"),
    "evaluate-prompts-bad-role": (("evaluate", "--prompts", "{bad_role}"), "role"),
    "evaluate-prompts-duplicate-case": (("evaluate", "--prompts", "{dup_case}"), "case_number"),
    "evaluate-prompts-latin1": (("evaluate", "--prompts", "{latin1}"), "UTF-8"),
    "evaluate-prompts-a-folder": (("evaluate", "--prompts", "{folder}"), "folder"),
    "evaluate-prompts-negative-seed": (("evaluate", "--prompts", "{neg_seed}"), "evaluation_seed"),
    "evaluate-prompts-seed-2**64": (("evaluate", "--prompts", "{big_seed}"), "evaluation_seed"),
    "generate-prompts-bad-role": (("generate", "--prompts", "{bad_role}"), "role"),
    "attack-prompts-missing": (("attack", "--attack", "paraphrase", "--prompts", MISSING), "not found"),
    "attack-prompts-duplicate-case": (("attack", "--attack", "paraphrase", "--prompts", "{dup_case}"), "case_number"),
    "classify-empty-file": (("classify", "{empty}"), "not an image"),
    "evaluate-clip-on-shapeworld": ((*EVAL, "--clip", "{edit}"), "--clip"),
    "evaluate-nudenet-threshold-alone": ((*EVAL, "--nudenet-threshold", "0.5"), "--nudenet"),
    "evaluate-edit-not-an-artifact": ((*EVAL, "--edit", "{edit}"), "manifest"),
    "erase-unknown-method": (("erase", "--method", "esd", "--target", "star"), "unknown method"),
    "erase-unknown-task": (("erase", "--task", "nudity"), "unknown task"),
    "erase-targets-missing": (("erase", "--method", "uce", "--targets", MISSING), "not found"),
    "erase-targets-a-folder": (("erase", "--method", "uce", "--targets", "{folder}"), "folder"),
    "erase-targets-empty": (("erase", "--method", "uce", "--targets", "{empty}"), "empty"),
    "erase-targets-blank-line": (("erase", "--method", "uce", "--targets", "{blank_line}"), "blank"),
    "erase-targets-binary": (("erase", "--method", "uce", "--targets", "{binary}"), "{binary}"),
    "erase-templates-without-slot": ((*UCE, "--templates", "{no_slot}"), "{}"),
    "erase-s-e-for-erasepro": ((*EPRO, "--set", "s_e=2"), "no setting 's_e'"),
    "erase-chain-layers-for-uce": ((*UCE, "--set", "chain_layers=2"), "no setting 'chain_layers'"),
    "erase-mapping-pool-for-uce": ((*UCE, "--mapping-pool", "{pool}"), "--mapping-pool does not apply"),
    "etc-without-mapping-pool": (("erase", "--method", "etc", "--target", "star"), "--mapping-pool"),
    "etc-mapping-pool-missing": (("erase", "--method", "etc", "--target", "star", "--mapping-pool", MISSING), "found"),
    "etc-mapping-pool-duplicate": (
        ("erase", "--method", "etc", "--target", "star", "--mapping-pool", "{pool_dup}"),
        "duplicate",
    ),
    "etc-target-in-mapping-pool": (
        ("erase", "--method", "etc", "--target", "star", "--mapping-pool", "{pool_with_star}"),
        "both a target",
    ),
    "etc-with-anchor": ((*ETC, "--anchor", "shape"), "no --anchor"),
    "etc-keyed-with-steps": ((*ETC, "--set", "steps=10"), "steps applies to eraser=moe"),
    "etc-moe-with-coverage": ((*ETC, "--set", "eraser=moe", "--set", "coverage=0.9"), "eraser=keyed"),
    "etc-target-prompts-empty": ((*ETC, "--target-prompts", "{empty}"), "{empty}"),
    "etc-target-prompts-too-few": ((*ETC, "--target-prompts", "{two_prompts}"), "at least 4"),
    "etc-templates-without-slot": ((*ETC, "--templates", "{no_slot}"), "{}"),
    "etc-work-dir-is-out": ((*ETC, "--set", "work_dir={out}"), "own input"),
    "attack-unknown-attack": (("attack", "--attack", "jailbreak", "--task", "instance"), "jailbreak"),
    "attack-no-prompts": (("attack", "--attack", "paraphrase"), "exactly one"),
    "attack-task-and-prompts": (
        ("attack", "--attack", "paraphrase", "--task", "instance", "--prompts", "{csv}"),
        "exactly one",
    ),
    "attack-unknown-task": (("attack", "--attack", "paraphrase", "--task", "nudity"), "unknown task"),
    "attack-no-target-rows": (("attack", "--attack", "paraphrase", "--prompts", "{no_targets}"), "no target rows"),
    "attack-clip-on-shapeworld": ((*ATT, "--clip", "{edit}"), "--clip"),
    "attack-edit-not-an-artifact": ((*ATT, "--edit", "{edit}"), "manifest"),
    "bench-unknown-task": (("bench", "--task", "nudity"), "nudity"),
    "bench-unknown-method": (("bench", "--method", "esd"), "esd"),
    "bench-unknown-attack": (("bench", "--attack", "jailbreak"), "jailbreak"),
    "bench-attack-and-no-attacks": (("bench", "--attack", "paraphrase", "--no-attacks"), "not both"),
    "bench-scale-too-large": (("bench", "--task", "scale", "--scale-concepts", "5000"), "scale"),
    "export-edit-missing": (("export", "--edit", MISSING, "--model", "{model}"), "not found"),
    "export-edit-not-an-artifact": (("export", "--edit", "{edit}", "--model", MISSING), "manifest"),
    "classify-missing": (("classify", MISSING), "not found"),
    "classify-a-folder": (("classify", "{folder}"), "folder"),
    "classify-not-an-image": (("classify", "{not_image}"), "not an image"),
    "classify-too-large": (("classify", "{huge_png}"), "too large"),
    "classify-decompression-bomb": (("classify", "{bomb_png}"), "{bomb_png}"),
    # outputs: what exists is never lost, an input never overwritten
    "generate-out-exists": ((*GEN, "--out", "{full}"), "--overwrite"),
    "generate-out-is-its-edit": ((*GEN, "--edit", "{full}", "--out", "{full}", "--overwrite"), "own input"),
    "generate-out-is-current-folder": ((*GEN, "--out", ".", "--overwrite"), "current folder"),
    "generate-out-under-a-file": ((*GEN, "--out", "{csv}/out"), "is a file"),
    "evaluate-out-holds-its-prompts": (
        ("evaluate", "--prompts", "{full}/p.csv", "--out", "{full}", "--overwrite"),
        "own input",
    ),
    "evaluate-out-exists": ((*EVAL, "--out", "{full}"), "--overwrite"),
    "erase-out-exists": ((*UCE, "--out", "{full}"), "--overwrite"),
    "erase-out-is-its-targets": (
        ("erase", "--method", "uce", "--targets", "{full}/p.csv", "--out", "{full}", "--overwrite"),
        "own input",
    ),
    "attack-out-exists": ((*ATT, "--out", "{full}"), "--overwrite"),
    "bench-out-exists": ((*BENCH, "--out", "{full}"), "--overwrite"),
    "bench-results-exists": ((*BENCH, "--results", "{csv}"), "--overwrite"),
    "export-out-is-its-model": (
        ("export", "--edit", "{edit}", "--model", "{full}", "--out", "{full}", "--overwrite"),
        "own input",
    ),
    "demo-out-exists": (("demo", "--out", "{full}"), "--overwrite"),
    "demo-out-is-current-folder": (("demo", "--out", ".", "--overwrite"), "current folder"),
    "export-out-exists": (("export", "--edit", "{edit}", "--model", "{model}", "--out", "{full}"), "--overwrite"),
    # options of the Stable Diffusion protocol on ShapeWorld: refused, never silently ignored
    "evaluate-zero-shot-template-on-shapeworld": ((*EVAL, "--zero-shot-template", "a {concept}"), "diffusers"),
    "attack-zero-shot-template-on-shapeworld": ((*ATT, "--zero-shot-template", "a {concept}"), "--zero-shot"),
    # loading switches a model cannot take: refused before it loads
    "generate-memory-unknown": ((*GEN, "--memory", "sliced"), "choose from attention-slicing"),
    "generate-memory-on-shapeworld": ((*GEN, "--memory", "vae-tiling"), "diffusers models only"),
    "evaluate-without-t5-on-shapeworld": ((*EVAL, "--without-t5"), "diffusers models only"),
    "erase-memory-offload-on-shapeworld": ((*UCE, "--memory", "cpu-offload"), "diffusers models only"),
    "attack-without-t5-on-shapeworld": ((*ATT, "--without-t5"), "diffusers models only"),
    # flags: one line naming the nearest valid one
    "generate-misspelt-flag": ((*GEN, "--guidence", "5"), "--guidance"),
    "erase-misspelt-flag": ((*UCE, "--sett", "ridge=1"), "--set"),
    "misspelt-command": (("generat", "--prompt", "x"), "generate"),
    "flag-without-value": (("generate", "--out", "{out}", "--prompt"), "--prompt"),
}
NEEDS_OUT = {"classify", "world"}


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> dict[str, str]:
    """A 5000 x 5000 PNG (too large to classify) and a 20000 x 20000 one (a decompression bomb): made once."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("large")
    Image.new("1", (5000, 5000)).save(folder / "huge.png")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")
    return {"huge_png": str(folder / "huge.png"), "bomb_png": str(folder / "bomb.png")}


def _inputs(tmp_path: Path) -> dict[str, str]:
    files = {"tmp": str(tmp_path), "out": str(tmp_path / "out")}
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content.encode("latin-1" if name == "latin1" else "utf-8"))
        files[name] = str(tmp_path / name)
    for name in ("edit", "model", "folder"):
        (tmp_path / name).mkdir()
        files[name] = str(tmp_path / name)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "p.csv").write_text(HEADER + ROW)
    files["full"] = str(tmp_path / "full")
    return files


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def _fill(value: str, files: dict[str, str]) -> str:
    for name, path in files.items():
        value = value.replace("{" + name + "}", path)
    return value


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(capsys, tmp_path, monkeypatch, large_images, case):
    args, fragment = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    files = _inputs(work)
    argv = [_fill(a, files | large_images) for a in args]
    if "--out" not in argv and argv[0] not in NEEDS_OUT and "generat" != argv[0]:
        argv += ["--out", files["out"]]
    before = _snapshot(work)
    code, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err and _fill(fragment, files | large_images) in lines[0], lines[0]
    assert _snapshot(work) == before  # no output, no temporary folder, every input as it was
    assert sorted(p.name for p in work.iterdir()) == sorted(Path(f).name for f in files.values() if f != files["tmp"]
                                                            and Path(f).exists())  # fmt: skip


def test_the_suite_covers_every_command_and_at_least_150_cases_with_the_others():
    commands = {args[0] if args[0] != "world" else args[1] for args, _ in CASES.values()}
    assert {"generate", "evaluate", "erase", "attack", "bench", "export", "classify", "demo"} <= commands
    assert {"train-denoiser", "train-classifier"} <= commands
    assert len(CASES) >= 150


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet="0123456789.eE+-naifNIF_x ", max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["ridge", "s_p", "s_e"]), value=NUMBERS)
def test_any_number_for_an_erase_option_is_taken_or_refused_in_one_line(capsys, tmp_path, flag, value):
    """A valid value goes on to the model, which is missing: the run stops there, before any compute."""
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "erase", "--method", "uce", "--target", "star", "--model", str(tmp_path / "none"),
        "--set", f"{flag}={value}", "--out", out,
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--guidance", "--steps", "--num-images", "--seed"]), value=NUMBERS)
def test_any_number_for_a_generation_option_is_taken_or_refused_in_one_line(capsys, tmp_path, flag, value):
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "generate", "--prompt", "a red star", "--model", str(tmp_path / "none"), flag, value, "--out", out
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists()
