"""Every command's --out: what exists is never lost, inputs are never overwritten, an interrupted run leaves
nothing behind (utils/io.py, cli.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli
from test_cli_errors import one_line_error

PROMPTS = "prompt,evaluation_seed,case_number,concept,role\na red star,0,0,shape=star,target\n"


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "precious.txt").write_text("user data")
    return path


def untouched(path: Path) -> bool:
    return sorted(p.name for p in path.iterdir()) == ["precious.txt"] and (path / "precious.txt").read_text() == (
        "user data"
    )


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".partial-" in p.name]


COMMANDS = {
    "generate": ("generate", "--prompt", "a red star"),
    "evaluate": ("evaluate", "--prompts", "{csv}"),
    "erase": ("erase", "--method", "uce", "--target", "star", "--anchor", ""),
    "attack": ("attack", "--attack", "paraphrase", "--task", "instance"),
    "bench": ("bench", "--task", "instance", "--method", "uce", "--no-attacks"),
    "export": ("export", "--edit", "{edit}", "--model", "{model}"),
    "demo": ("demo",),
}


def _args(command: str, tmp_path: Path) -> list[str]:
    (tmp_path / "p.csv").write_text(PROMPTS)
    for name in ("edit", "model"):
        (tmp_path / name).mkdir(exist_ok=True)
    fill = {"{csv}": str(tmp_path / "p.csv"), "{edit}": str(tmp_path / "edit"), "{model}": str(tmp_path / "model")}
    return [fill.get(a, a) for a in COMMANDS[command]]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_that_exists_and_is_not_empty_is_refused_before_any_work(capsys, tmp_path, command):
    out = user_folder(tmp_path / "out")
    started = time.time()
    code, _, err = run_cli(capsys, *_args(command, tmp_path), "--out", out)
    one_line_error(code, err, "--overwrite")
    assert untouched(out) and time.time() - started < 5  # refused up front, not after the compute


@pytest.mark.parametrize(
    ("args", "input_name"),
    [
        (("generate", "--prompt", "a red star", "--edit", "{d}", "--out", "{d}"), "edit"),
        (("evaluate", "--prompts", "{d}/p.csv", "--out", "{d}"), "p.csv"),
        (("export", "--edit", "{e}", "--model", "{d}", "--out", "{d}"), "model"),
        (("export", "--edit", "{d}", "--model", "{e}", "--out", "{d}/inside"), "edit"),
        (("erase", "--method", "uce", "--targets", "{d}/p.csv", "--out", "{d}"), "targets"),
        (("attack", "--attack", "paraphrase", "--prompts", "{d}/p.csv", "--out", "{d}"), "prompts"),
    ],
)
def test_an_out_that_is_or_holds_an_input_is_refused_even_with_overwrite(capsys, tmp_path, args, input_name):
    folder = user_folder(tmp_path / "data")
    (folder / "p.csv").write_text(PROMPTS)
    (tmp_path / "other").mkdir()
    argv = [a.replace("{d}", str(folder)).replace("{e}", str(tmp_path / "other")) for a in args]
    code, _, err = run_cli(capsys, *argv, "--overwrite")
    one_line_error(code, err, "own input")
    assert sorted(p.name for p in folder.iterdir()) == ["p.csv", "precious.txt"]


def test_the_current_folder_and_an_unwritable_parent_are_refused_up_front(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(user_folder(tmp_path / "here"))
    code, _, err = run_cli(capsys, "generate", "--prompt", "a red star", "--out", ".", "--overwrite")
    one_line_error(code, err, "current folder")
    assert untouched(tmp_path / "here")
    code, _, err = run_cli(capsys, "generate", "--prompt", "a red star", "--out", "precious.txt/out")
    one_line_error(code, err, "is a file")
    assert untouched(tmp_path / "here")


def test_overwrite_replaces_an_earlier_output(capsys, tmp_path):
    out = user_folder(tmp_path / "out")
    code, _, err = run_cli(
        capsys, "generate", "--prompt", "a red star", "--num-images", "1", "--steps", "2", "--out", out, "--overwrite"
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0_0.png", "grid.png"] and no_partials(tmp_path)


def _erasekit(*args: str) -> list[str]:
    return [sys.executable, "-c", "from erasekit.cli import main; main()", *args]


def _kill_during_the_final_write(argv: list[str], folder: Path, sig: int) -> bool:
    """Start the command, stop it the moment its temporary output appears, deliver ``sig``; False when the run
    finished before its temporary folder could be caught."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None:
        if not no_partials(folder):
            proc.send_signal(signal.SIGSTOP)
            caught = not no_partials(folder)
            proc.send_signal(sig)
            proc.send_signal(signal.SIGCONT)
            proc.wait(timeout=120)
            return caught
    return False


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ("generate", "--prompt", "a red star", "--num-images", "16", "--steps", "2"),
        ("erase", "--method", "uce", "--target", "star", "--anchor", ""),
    ],
)
def test_sigterm_or_sigkill_during_the_final_write_leaves_no_stale_folder_after_a_rerun(tmp_path, command):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        folder = tmp_path / sig.name
        folder.mkdir()
        out = folder / "out"
        for _ in range(5):  # the write is short: try until the signal lands inside it
            if _kill_during_the_final_write(_erasekit(*command, "--out", str(out)), folder, sig):
                break
            assert out.is_dir()  # finished before the signal: complete, then try again
            subprocess.run(["rm", "-r", str(out)], check=True)
        else:
            pytest.fail("the temporary output was never caught")
        # nothing half written: no output, or (the signal came while the finished folder was moved in, with signals
        # held off) the complete one
        assert not out.exists() or {"grid.png", "manifest.json"} & {p.name for p in out.iterdir()}
        if sig == signal.SIGTERM:
            assert no_partials(folder)  # unwound: the temporary folder is removed at once
        rerun = subprocess.run(_erasekit(*command, "--out", str(out), "--overwrite"), capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert out.is_dir() and no_partials(folder)  # the rerun cleaned what the kill left
        assert [p.name for p in folder.iterdir()] == ["out"], os.listdir(folder)


@pytest.mark.slow  # the shipped model: ~15 s
def test_an_attack_that_failed_to_run_exits_1_and_says_so_in_attack_json(capsys, tmp_path):
    import json

    out = tmp_path / "attack"
    budget = ("--budget", "lr=1e30", "--budget", "prompts=1", "--budget", "steps=2")
    code, _, err = run_cli(capsys, "attack", "--attack", "soft-prompt", "--task", "instance", *budget, "--out", out)
    record = json.loads((out / "attack.json").read_text())
    assert code == 1 and "failed to run" in err
    assert record["status"] == "failed" and record["asr"] is None and "non-finite" in record["reason"]
