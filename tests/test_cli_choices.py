"""The command line as a user meets it: --version, closed option sets listed in --help and checked
while parsing (one line, exit 2), help that keeps option names whole at 80 columns."""
import os
import subprocess
import sys

import pytest

from flows import choices


def flows_cli(*args, columns: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"COLUMNS": str(columns)} if columns else {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_lists_written_in_choices_equal_their_homes():
    from flows.baselines import TARGETS
    from flows.search.config import SAMPLERS
    from qat.compress.structured import SCHEDULES

    assert choices.SAMPLER.values == SAMPLERS
    assert choices.SCHEDULE.values == SCHEDULES
    assert choices.TARGETS.values == tuple(TARGETS)


def test_version():
    result = flows_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("flows (qnn-flows) "), result


@pytest.mark.parametrize("command", ["build", "train", "eval", "bench", "search", "compress"])
def test_help_at_80_columns_keeps_every_option_name_whole(command):
    import typer.main

    from flows.cli import app

    params = typer.main.get_command(app).commands[command].params
    names = [opt for p in params for opt in p.opts + p.secondary_opts if opt.startswith("--")]
    result = flows_cli(command, "--help", columns=80)
    assert result.returncode == 0, result.stderr
    words = set(result.stdout.replace("[", " ").replace("]", " ").replace(",", " ").split())
    assert not [n for n in names if n not in words], result.stdout
    assert "…" not in result.stdout


def test_build_help_lists_the_closed_sets():
    out = flows_cli("build", "--help", columns=80).stdout
    for value in ("pynq-z2", "FILE.yaml", "lenet", "w2a2", "fashion-mnist", "streamline"):
        assert value in out, value


@pytest.mark.parametrize("args, words", [
    (["train", "--data", "imagenet"], ["--data", "unknown dataset 'imagenet'", "mnist"]),
    (["search", "--sampler", "cmaes"], ["--sampler", "unknown sampler 'cmaes'", "nsga2"]),
    (["search", "--model", "vgg"], ["--model", "unknown architecture 'vgg'", "searchable: tfc, sfc, lfc, lenet, cnv"]),
    (["compress", "--prune-schedule", "cubic"], ["unknown prune schedule 'cubic'", "agp"]),
    (["bench", "run", "--targets", "cpu-brevitas,tpu"], ["--targets", "unknown target 'tpu'", "fpga-sim"]),
    (["build", "--no-such-option"], ["No such option: --no-such-option"]),
], ids=["data", "sampler", "search-model", "schedule", "target", "unknown-option"])
def test_values_outside_a_set_fail_while_parsing_with_one_line(args, words):
    result = flows_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_model_names_of_other_bit_widths_and_board_files_pass_the_parser():
    assert choices.MODEL("tfc-w3a5") == "tfc-w3a5"
    assert choices.BOARD("my/board.yaml") == "my/board.yaml"
    assert choices.SEARCH_MODEL("lfc-w1a1") == "lfc-w1a1"
    assert choices.SEARCH_MODEL("cnv") == "cnv" and choices.SEARCH_MODEL("cnv-w2a2") == "cnv-w2a2"
    with pytest.raises(Exception, match="unknown model 'tfc-w9a1'"):
        choices.MODEL("tfc-w9a1")
