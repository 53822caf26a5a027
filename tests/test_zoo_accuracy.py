"""The committed checkpoints (checkpoints/*.pt) re-evaluated on the MNIST test set.

Each must reproduce, exactly, the test accuracy recorded in it at training time and
quoted in docs/results.md. Needs ``--datasets DIR`` (skips without it).
"""
from pathlib import Path

import pytest

from qat.data import load_dataset
from qat.train import accuracy, load_checkpoint

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = sorted((REPO / "checkpoints").glob("*.pt"))
# Brevitas' published MNIST test accuracy (brevitas_examples/bnn_pynq), for the record
BREVITAS = {"tfc-w1a1": 0.9317, "tfc-w1a2": 0.9479, "tfc-w2a2": 0.9660, "sfc-w1a1": 0.9781,
            "sfc-w1a2": 0.9831, "sfc-w2a2": 0.9866, "lfc-w1a1": 0.9888, "lfc-w1a2": 0.9899}


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[p.stem for p in CHECKPOINTS])
def test_checkpoint_reproduces_its_recorded_accuracy(path, datasets_dir):
    ckpt = load_checkpoint(path)
    ds = load_dataset(ckpt.data.name, datasets_dir)
    measured = accuracy(ckpt.model(), ds.test.images, ds.test.labels)
    assert len(ds.test) == 10000
    assert measured == ckpt.metrics["test_accuracy"]
    assert f"{100 * measured:.2f}%" in (REPO / "docs" / "results.md").read_text()


def test_checkpoints_are_committed():
    assert CHECKPOINTS, "no checkpoints/*.pt"
    for path in CHECKPOINTS:
        ckpt = load_checkpoint(path)
        assert path.stem == f"{ckpt.spec.name}_{ckpt.data.name}" and ckpt.data.name == "mnist"
        assert ckpt.resume is None and path.stat().st_size < 5_000_000
