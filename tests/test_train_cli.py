"""`flows train` and `flows eval`: checkpoints with config and metrics, resume after an interruption."""
import subprocess
import sys

import pytest
import torch

from flows.errors import ConfigError
from qat.data import load_dataset
from qat.models import parse_model_name
from qat.train import TrainConfig, last_path, load_checkpoint, train, train_to_file

SPEC = parse_model_name("tfc-w1a1")
FAST = TrainConfig(epochs=3, batch_size=256, lr=0.05, seed=1)


class Interrupted(Exception):
    pass


def interrupt_after(n: int):
    def on_epoch(epoch, metrics):
        if epoch == n:
            raise Interrupted
    return on_epoch


def flows_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    ds = load_dataset("digits")
    whole = train(SPEC, ds, FAST, progress=False)
    out = tmp_path / "tfc.pt"
    with pytest.raises(Interrupted):
        train_to_file(SPEC, ds, FAST, out, progress=False, on_epoch=interrupt_after(1))
    assert not out.exists() and last_path(out).is_file()
    saved = load_checkpoint(last_path(out))
    assert saved.resume["epoch"] == 1 and saved.metrics["epochs_done"] == 1
    assert {"optimizer", "scheduler", "rng"} <= set(saved.resume)
    with pytest.raises(ConfigError, match="pass --resume"):
        train_to_file(SPEC, ds, FAST, out, progress=False)
    resumed = train_to_file(SPEC, ds, FAST, out, progress=False, resume=True)
    assert not last_path(out).exists()  # complete: the resumable state is gone
    for key, value in whole.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key
    assert resumed.metrics["test_accuracy"] == whole.metrics["test_accuracy"]
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2, 3]
    with pytest.raises(ConfigError, match="exists"):
        train_to_file(SPEC, ds, FAST, out, progress=False)


def test_resume_refuses_other_options(tmp_path):
    ds = load_dataset("digits")
    out = tmp_path / "tfc.pt"
    with pytest.raises(Interrupted):
        train_to_file(SPEC, ds, FAST, out, progress=False, on_epoch=interrupt_after(1))
    other = TrainConfig(epochs=4, batch_size=256, lr=0.05, seed=1)
    with pytest.raises(ConfigError, match="differs in epochs"):
        train_to_file(SPEC, ds, other, out, progress=False, resume=True)
    with pytest.raises(ConfigError, match="differs in act_bits"):
        train_to_file(parse_model_name("tfc-w1a2"), ds, FAST, out, progress=False, resume=True)


def test_train_then_eval_from_the_command_line(tmp_path):
    cfg = tmp_path / "mixed.yaml"
    cfg.write_text("arch: tfc\nweight_bits: [4, 2, 2, 4]\nact_bits: 2\nin_bits: 4\n")
    out = tmp_path / "ckpt" / "mixed.pt"
    done = flows_cli("train", "--model-config", cfg, "--epochs", "2", "--batch-size", "256", "--out", out,
                     "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "tfc-custom on digits: test accuracy" in done.stdout and out.is_file()
    ckpt = load_checkpoint(out)
    assert ckpt.spec.weight_bits == (4, 2, 2, 4) and ckpt.train.epochs == 2 and ckpt.data.name == "digits"
    assert len(ckpt.metrics["history"]) == 2 and ckpt.resume is None
    shown = flows_cli("eval", out)
    assert shown.returncode == 0, shown.stderr
    assert f"accuracy {100 * ckpt.metrics['test_accuracy']:.2f}%" in shown.stdout
    again = flows_cli("train", "--model-config", cfg, "--epochs", "2", "--out", out)
    assert again.returncode == 2 and "exists" in again.stderr


@pytest.mark.parametrize("args, code, words", [
    (["train", "--model", "cnv-w1a1", "--data", "digits"], 2, "cnv needs images of at least 32x32"),
    (["train", "--device", "cuda:7"], 5, "--device"),
    (["train", "--resume", "--out", "{tmp}/x.pt"], 2, "nothing to resume"),
    (["train", "--data", "mnist"], 2, "needs --data-dir"),
    (["train", "--model", "xfc-w1a1"], 2, "unknown model"),
    (["eval", "{tmp}/none.pt"], 4, "not found"),
], ids=["cnv-on-digits", "no-gpu", "nothing-to-resume", "no-data-dir", "unknown-model", "no-checkpoint"])
def test_train_and_eval_errors(tmp_path, args, code, words):
    if not torch.cuda.is_available() or "cuda" not in args[-1]:
        done = flows_cli(*[a.format(tmp=tmp_path) for a in args], cwd=tmp_path)
        assert done.returncode == code, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr


def test_compact_checkpoint_computes_the_same(tmp_path):
    ds = load_dataset("digits")
    ckpt = train(parse_model_name("tfc-w2a2"), ds, FAST, progress=False)
    full, compact = tmp_path / "full.pt", tmp_path / "compact.pt"
    ckpt.save(full)
    ckpt.save(compact, compact=True)
    assert compact.stat().st_size < full.stat().st_size / 2
    x = torch.from_numpy(ds.test.images.astype("float32"))
    assert torch.equal(load_checkpoint(full).model()(x), load_checkpoint(compact).model()(x))


def test_random_shift_moves_each_image_by_at_most_shift_and_fills_zeros():
    import torch

    from qat.train import random_shift

    torch.manual_seed(0)
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0  # one lit pixel per image
    y = random_shift(x, 2)
    assert y.shape == x.shape and torch.equal(y.sum(dim=(1, 2, 3)), torch.ones(64))  # moved, never cut
    rows, cols = (y[:, 0] == 1).nonzero()[:, 1], (y[:, 0] == 1).nonzero()[:, 2]
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len({(int(r), int(c)) for r, c in zip(rows, cols)}) > 10  # offsets differ image by image
    assert torch.equal(random_shift(x, 0), x)
    with pytest.raises(ConfigError, match="shift"):
        TrainConfig(shift=-1)
