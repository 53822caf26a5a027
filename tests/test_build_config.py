"""BuildConfig round-trips through JSON; `flows build --config FILE` builds what a run recorded."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import BuildConfig, TrainOptions, load_build_config
from flows.errors import ConfigError, ModelError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained TFC-W1A1 checkpoint on the bundled digits (weights as initialised)."""
    import torch

    from qat.data import load_dataset
    from qat.models import build_model, parse_model_name
    from qat.train import Checkpoint, DatasetInfo, TrainConfig

    ds = load_dataset("digits")
    spec = parse_model_name("tfc-w1a1")
    torch.manual_seed(0)
    model = build_model(spec, ds.image_shape, ds.num_classes, ds.pixel_max)
    path = tmp_path_factory.mktemp("ckpt") / "tfc.pt"
    Checkpoint(spec, DatasetInfo.of(ds), TrainConfig(epochs=1), model.state_dict(), {"untrained": True}).save(path)
    return path


def configs(checkpoint: Path) -> list[BuildConfig]:
    return [BuildConfig(),
            BuildConfig(model="tfc-w2a2", board="pynq-z1", target_fps=2.5e5, out=Path("/tmp/x"), to_step="estimate",
                        allow_overflow=True, verify_checksums=False, train=TrainOptions(epochs=3, lr=0.01, seed=7)),
            BuildConfig(checkpoint=checkpoint, data="digits", steps=("train", "export")),
            BuildConfig(model="cnv-w1a1")]


def test_a_config_round_trips_through_json(checkpoint):
    for cfg in configs(checkpoint):
        again = BuildConfig.from_dict(json.loads(cfg.to_json()))
        assert again == cfg, cfg
        assert again.to_json() == cfg.to_json()


@pytest.mark.parametrize("raw, words", [
    ({"boards": "pynq-z2"}, "unknown field 'boards'; fields: board, model"),
    ({"board": 3}, "field 'board' must be str, got 3"),
    ({"allow_overflow": "yes"}, "field 'allow_overflow' must be bool"),
    ({"target_fps": "fast"}, "field 'target_fps' must be float | None"),
    ({"train": {"epochs": 2.5}}, "train: field 'epochs' must be int"),
    ({"train": {"epoch": 2}}, "train: unknown field 'epoch'"),
    ({"steps": "train"}, "field 'steps' must be tuple"),
    ({"target_fps": -1.0}, "--target-fps must be positive"),  # the options' own checks
    ({"checkpoint": "/nonexistent.pt"}, "--checkpoint /nonexistent.pt not found"),
    ([1, 2], "must be a JSON object of fields, got list"),
], ids=["unknown", "str", "bool", "float", "nested-int", "nested-unknown", "steps", "range", "file", "list"])
def test_a_bad_config_names_the_field(raw, words):
    """Exit 2 (ConfigError) for a bad field; a missing model file is exit 4 (ModelError), as for the option."""
    with pytest.raises(ModelError if "checkpoint" in raw else ConfigError, match=words.replace("(", r"\(").replace("|", r"\|")):
        BuildConfig.from_dict(raw, "cfg")


def test_the_record_of_a_run_builds_the_same_config_and_leaves_out_one_invocations_from_and_to(tmp_path, checkpoint):
    from flows.build import load_config, run_build

    cfg = BuildConfig(checkpoint=checkpoint, out=tmp_path / "run", from_step="train", to_step="train")
    run_build(cfg)
    record = tmp_path / "run" / "config.json"
    assert load_build_config(record) == cfg.record() == BuildConfig(checkpoint=checkpoint, out=tmp_path / "run")
    assert load_config(tmp_path / "run") == cfg.record()
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(json.loads(record.read_text())["config"]))
    assert load_build_config(bare) == cfg.record()


def test_a_given_checkpoint_is_read_once(tmp_path, checkpoint, monkeypatch):
    """The preflight, the pixels the build feeds and step train share one load of --checkpoint."""
    import qat.train
    from flows.build import run_build

    reads = []
    real = qat.train.load_checkpoint
    monkeypatch.setattr(qat.train, "load_checkpoint", lambda path: reads.append(Path(path)) or real(path))
    reports = run_build(BuildConfig(checkpoint=checkpoint, out=tmp_path / "run", to_step="train"))
    assert reports["train"]["source"] == f"--checkpoint {checkpoint}"
    assert reads == [checkpoint]
    assert (tmp_path / "run" / "train" / "checkpoint.pt").read_bytes() == checkpoint.read_bytes()


def flows_build(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "build", *map(str, args)], capture_output=True,
                          text=True)


def test_cli_config_takes_out_from_to_and_refuses_other_options(tmp_path, checkpoint):
    config = tmp_path / "config.json"
    config.write_text(BuildConfig(checkpoint=checkpoint, out=tmp_path / "first").to_json())
    r = flows_build("--config", config, "--model", "tfc-w2a2", "--epochs", "3")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: --config {config} holds the whole build; --model, --epochs cannot be added to it: edit the file "
        "(only --out, --from and --to go with --config)")
    r = flows_build("--config", config, "--out", tmp_path / "second", "--to", "train")
    assert r.returncode == 0, r.stderr
    assert load_build_config(tmp_path / "second" / "config.json") == BuildConfig(checkpoint=checkpoint,
                                                                                 out=tmp_path / "second")
    assert not (tmp_path / "first").exists()
    config.write_text("{not json")
    r = flows_build("--config", config)
    assert r.returncode == 2 and "is not JSON" in r.stderr


def test_cli_add_step_inserts_a_step_of_ones_own(tmp_path, checkpoint):
    src = tmp_path / "src"
    src.mkdir()
    (src / "mypasses_cli.py").write_text(
        'def step_note(build, out):\n    """Write a note."""\n    (out / "note.txt").write_text("hi")\n'
        '    return {"note": "hi"}\n')
    import os

    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "flows.cli", "build", "--checkpoint", str(checkpoint), "--out", str(run),
                        "--add-step", "train=mypasses_cli:step_note", "--to", "note"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert "note" in r.stderr and (run / "note" / "note.txt").read_text() == "hi"
    steps = load_build_config(run / "config.json").steps
    assert steps[:3] == ("train", "mypasses_cli:step_note", "export")
