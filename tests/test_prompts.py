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
    assert row.group == "all" and row.concept == "shape=star"


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


def test_a_bom_written_by_excel_is_accepted(tmp_path):
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbf" + (HEADER + "a red star,1,0,shape=star,target\n").encode())
    assert load_prompts(tmp_path / "p.csv")[0].prompt == "a red star"


def test_numbers_at_the_edges_of_their_range_load(tmp_path):
    (tmp_path / "p.csv").write_text(HEADER + f"a star, {2**63 - 1} ,-0,shape=star,target\n" + "a ring,+7,7,,preserve\n")
    first, second = load_prompts(tmp_path / "p.csv", require_concepts=False)
    assert (first.evaluation_seed, first.case_number, second.evaluation_seed) == (2**63 - 1, 0, 7)


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64 - 1)])
def test_a_seed_that_torch_would_wrap_round_is_refused(tmp_path, seed):
    # torch.Generator().manual_seed(-1) is manual_seed(2**64 - 1): the file would silently mean another seed
    (tmp_path / "p.csv").write_text(HEADER + f"a star,{seed},0,shape=star,target\n")
    with pytest.raises(UserError, match=r"p.csv:2: column 'evaluation_seed' must be an integer in \[0, 2\*\*63 - 1\]"):
        load_prompts(tmp_path / "p.csv")


def test_a_repeated_case_number_names_both_lines(tmp_path):
    # images are {case_number}_{k}.png: the second row would overwrite the first's while the metrics count both
    rows = "a star,1,4,shape=star,target\n\na ring,2,5,shape=ring,preserve\na heart,3,4,shape=heart,preserve\n"
    (tmp_path / "p.csv").write_text(HEADER + rows)
    with pytest.raises(UserError, match="p.csv:5: case_number 4 is already used on line 2"):
        load_prompts(tmp_path / "p.csv")


def test_line_numbers_are_lines_of_the_file_not_rows(tmp_path):
    rows = '"a star, drawn neatly",1,0,shape=star,target\n\n\na ring,x,1,shape=ring,preserve\n'
    (tmp_path / "p.csv").write_text(HEADER + rows)
    with pytest.raises(UserError, match="p.csv:5: column 'evaluation_seed'"):
        load_prompts(tmp_path / "p.csv")


def test_spaces_after_commas_and_extra_columns_are_read_as_meant(tmp_path):
    header = "prompt, evaluation_seed, case_number, concept, role, evaluation_guidance\n"
    (tmp_path / "p.csv").write_text(header + 'a star, 1, 0, "shape=star", target, 7.5\n')
    (row,) = load_prompts(tmp_path / "p.csv")
    assert (row.prompt, row.evaluation_seed, row.concept, row.role) == ("a star", 1, "shape=star", "target")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (HEADER + '"a red star,1,0,shape=star,target\n', "p.csv:2: malformed CSV"),
        (HEADER + '"a red" star,1,0,shape=star,target\n', "p.csv:2: malformed CSV"),
        (HEADER + '"a red\nstar",1,0,shape=star,target\n', "runs over several lines"),
        ("prompt,role,evaluation_seed,case_number,concept,role\n", "column 'role' appears twice"),
        (HEADER + "a star,1,0,shape=star,target,extra\n", r"wrong number of fields \(6; the header has 5\)"),
        (HEADER + "a\x00star,1,0,shape=star,target\n", "NUL character on line 2"),
        (HEADER + "x" * 20_000 + ",1,0,shape=star,target\n", "20,000 characters long"),
    ],
)
def test_quoting_and_structure_are_never_guessed(tmp_path, content, message):
    (tmp_path / "p.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        load_prompts(tmp_path / "p.csv")


def test_a_folder_is_not_a_prompt_file(tmp_path):
    with pytest.raises(UserError, match="prompt file is a directory, not a file"):
        load_prompts(tmp_path)
