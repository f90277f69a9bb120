import pytest

from erasekit.errors import UserError
from erasekit.eval.prompts import PromptRow, load_prompts, write_prompts

HEADER = "prompt,evaluation_seed,case_number,concept,role\n"


def test_round_trip(tmp_path):
    rows = [
        PromptRow("a red star", 3, 0, "shape=star;colour=red", "target", "short"),
        PromptRow("a blue ring, drawn neatly", 4, 1, "shape=ring", "preserve"),
    ]
    write_prompts(tmp_path / "p.csv", rows)
    assert load_prompts(tmp_path / "p.csv") == rows


def test_esd_style_file_without_group_column_loads(tmp_path):
    (tmp_path / "p.csv").write_text(HEADER + "a red star,1,0,shape=star,target\n")
    (row,) = load_prompts(tmp_path / "p.csv")
    assert row.group == "all" and row.factors == {"shape": "star"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "missing column"),
        (HEADER, "no prompts"),
        ("prompt,seed\nx,1\n", "missing column"),
        (HEADER + "a star,one,0,shape=star,target\n", "evaluation_seed"),
        (HEADER + ",1,0,shape=star,target\n", "empty prompt"),
        (HEADER + "a star,1,0,shape=star,erase\n", "role"),
        (HEADER + "a star,1,0,shape=blob,target\n", "bad concept"),
        (HEADER + "a star,1,0\n", "wrong number of fields"),
    ],
)
def test_malformed_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        load_prompts(path)
    assert "\n" not in str(info.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_prompts(tmp_path / "nope.csv")
    (tmp_path / "b.csv").write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(UserError):
        load_prompts(tmp_path / "b.csv")
