"""host.results.markdown_table, the one Markdown table writer: runs in the board env
(numpy 1.21, Python 3.10) and the main venv."""

import pytest

from host.results import markdown_table


def test_markdown_table_lines():
    assert markdown_table(["a", "b"], [[1, "x|y"], ["", 2.5]]) == [
        "| a | b |", "|---|---|", "| 1 | x/y |", "|  | 2.5 |"]


def test_markdown_table_align_writes_one_rule_per_column():
    assert markdown_table(["name", "ms", "mid"], [], align="lrc")[1] == "|---|---:|:---:|"
    assert markdown_table(["name", "ms"], [], align=None)[1] == "|---|---|"


@pytest.mark.parametrize("align", ["lr", "lrrr", "lxr"])
def test_markdown_table_refuses_a_wrong_align(align):
    with pytest.raises(ValueError, match="one of l, r, c per column"):
        markdown_table(["a", "b", "c"], [], align=align)
