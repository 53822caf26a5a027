"""The step registry and the runner, on small steps of the test's own (no FINN build)."""
import sys
import textwrap

import pytest

from flows.errors import ConfigError
from flows.pipeline import Step, insert_step, register_step, registered, resolve, resolve_all, run_steps
from flows.steps import DEFAULT_STEPS


def test_the_default_build_is_the_built_in_steps_in_order_each_with_its_docstring():
    assert DEFAULT_STEPS == ["train", "export", "cleanup", "convert", "streamline", "hw_layers", "partition",
                             "specialize", "fold", "estimate", "verify", "bitfile", "package"]
    steps = registered()
    for name in DEFAULT_STEPS:
        assert steps[name].fn.__name__ == f"step_{name}" and steps[name].doc


def test_a_name_taken_by_another_function_is_refused():
    def step_fold(build, out):
        return {}

    with pytest.raises(ConfigError, match="step name 'fold' is taken by flows.steps:step_fold"):
        register_step(step_fold)
    with pytest.raises(ConfigError, match="lower-case identifier"):
        register_step(step_fold, name="deploy")  # a run directory's own folder


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    """An importable module of the user's, outside the tree, with one step function."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mysteps_for_test.py").write_text(textwrap.dedent('''
        def step_count_nodes(build, out):
            """Count the nodes of the folded design."""
            (out / "count.txt").write_text("3")
            return {"nodes": 3}
        '''))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield "mysteps_for_test"
    sys.modules.pop("mysteps_for_test", None)


def test_a_step_of_ones_own_is_imported_by_module_and_function_and_inserted_after_a_named_step(own_module):
    entry = f"{own_module}:step_count_nodes"
    steps = insert_step(DEFAULT_STEPS, entry, after="fold")
    assert steps[steps.index("fold") + 1] == entry and steps[steps.index(entry) + 1] == "estimate"
    step = resolve(entry)
    assert step.name == "count_nodes" and step.doc == "Count the nodes of the folded design."
    assert resolve("count_nodes") is step  # registered under its name on first use


def test_unknown_and_unimportable_steps_say_what_is_known(own_module):
    with pytest.raises(ConfigError, match="unknown step 'prune'; steps: train, export"):
        resolve("prune")
    with pytest.raises(ConfigError, match="step nosuchmodule_x:f: cannot import it"):
        resolve("nosuchmodule_x:f")
    with pytest.raises(ConfigError, match="cannot import it \\(AttributeError"):
        resolve(f"{own_module}:missing")
    with pytest.raises(ConfigError, match="no such step"):
        insert_step(DEFAULT_STEPS, f"{own_module}:step_count_nodes", after="prune")
    with pytest.raises(ConfigError, match="fold is listed more than once"):
        resolve_all(["fold", "estimate", "fold"])


def test_a_registered_step_runs_in_its_own_folder(tmp_path, own_module):
    step = resolve(f"{own_module}:step_count_nodes")
    build = type("B", (), {"run_dir": tmp_path / "run"})()
    reports = run_steps(build, [step], [step])
    assert reports["count_nodes"]["nodes"] == 3
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["count_nodes"]


def test_step_objects_are_what_the_runner_takes(tmp_path):
    def first(build, out):
        """First."""
        return {"ok": 1}

    steps = [Step("first", first)]
    assert run_steps(type("B", (), {"run_dir": tmp_path})(), steps, steps)["first"]["ok"] == 1


BELOW_THE_BUILD = ["flows/steps.py", "flows/pipeline.py", "flows/report.py", "flows/package.py", "flows/preflight.py",
                   "flows/verify.py", "flows/vendor.py", "flows/config.py", "flows/execute.py", "flows/transforms.py",
                   "flows/executor_export.py"]


@pytest.mark.parametrize("path", BELOW_THE_BUILD + ["hw", "qat", "host", "boards"])
def test_what_the_build_imports_does_not_import_the_build_back(path):
    """flows.build -> steps -> package -> report must not close a circle (not even inside a function)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = [root / path] if path.endswith(".py") else sorted((root / path).rglob("*.py"))
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n == "flows.build" or n.startswith("flows.build.") for n in names), file
            if isinstance(node, ast.ImportFrom) and node.module == "flows":
                assert "build" not in [a.name for a in node.names], file


def test_steps_write_under_their_names_so_an_inserted_step_moves_no_folder(tmp_path, own_module):
    """A run of train..fold, then the same run with a step of one's own inserted after fold,
    resumed from it: the earlier folders are where they were, and are not rerun."""
    from flows.pipeline import step_dir

    def make(name):
        def fn(build, out):
            (out / "made.txt").write_text(name)
            return {}
        return Step(name, fn)

    before = [make("train"), make("fold"), make("estimate")]
    build = type("B", (), {"run_dir": tmp_path / "run"})()
    run_steps(build, before, before)
    made = {p.name: (p / "made.txt").stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    after = before[:2] + [resolve(f"{own_module}:step_count_nodes")] + before[2:]
    run_steps(build, after, after[2:])
    assert step_dir(tmp_path / "run", "fold") == tmp_path / "run" / "fold"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["count_nodes", "estimate", "fold", "train"]
    assert all((tmp_path / "run" / n / "made.txt").stat().st_mtime_ns == made[n] for n in ("train", "fold"))


def test_a_run_with_numbered_step_folders_is_refused_and_left_as_it_is(tmp_path):
    from flows.build import run_build
    from flows.config import BuildConfig

    run = tmp_path / "run"
    for name in ("00_train", "08_fold", "09_estimate"):
        (run / name).mkdir(parents=True)
    (run / "00_train" / "checkpoint.pt").write_bytes(b"weights")
    (run / "config.json").write_text('{"identity": {}, "config": {}}')
    with pytest.raises(ConfigError, match="numbered by position .*00_train, 08_fold, 09_estimate.*another --out "
                                          r"\(--checkpoint .*00_train/checkpoint.pt keeps its training\)"):
        run_build(BuildConfig(out=run, from_step="fold"))
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == ["00_train", "08_fold", "09_estimate",
                                                                         "config.json"]
    assert (run / "00_train" / "checkpoint.pt").read_bytes() == b"weights"
    assert (run / "config.json").read_text() == '{"identity": {}, "config": {}}'
