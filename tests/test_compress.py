"""flows compress: structured pruning, fewer bits, input-pixel pruning, distillation, config, runner, bad input.

On the bundled digits (8x8 images). The flow tests build the compressed checkpoint through
verification (every stage bit-exact on the whole test split).
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from brevitas.nn import QuantLinear

from flows.errors import ConfigError
from qat.compress.base import technique_from_dict
from qat.compress.config import CompressConfig, load_config, load_techniques
from qat.compress.distill import distill_loss, load_teacher, teacher_kind
from qat.compress.pixels import PrunePixels, informative_pixels
from qat.compress.structured import AgpMasker, StructuredPrune, agp_share, layer_scores, lowest, prunable, remove
from qat.data import load_dataset
from qat.models import build_model, parse_model_name
from qat.train import Checkpoint, DatasetInfo, TrainConfig, predict, train

load_techniques()
QUICK = TrainConfig(epochs=2, batch_size=128, lr=0.05, seed=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def base(digits, tmp_path_factory):
    """A tfc-w2a2 trained briefly on digits, saved."""
    ckpt = train(parse_model_name("tfc-w2a2"), digits, QUICK, progress=False)
    path = tmp_path_factory.mktemp("base") / "tfc.pt"
    ckpt.save(path)
    return path


def _flows(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=900)


# -- structured pruning --------------------------------------------------------------------


@pytest.mark.parametrize("ratio, widths", [(0.5, (32, 32, 32)), (0.75, (16, 16, 16)), (0.9, (8, 8, 8)),
                                           ((0.0, 0.5, 0.8), (64, 32, 8))])
def test_kept_widths_are_multiples_of_eight(ratio, widths):
    assert StructuredPrune(ratio=ratio).kept_widths(parse_model_name("tfc-w2a2")) == widths


def test_lenet_widths_follow_the_rule():
    assert StructuredPrune(ratio=(0.787, 0.68)).kept_widths(parse_model_name("lenet-w8a8")) == (64, 32)


def test_agp_schedule_is_zhu_and_gupta_cubic():
    # share of the final pruning: 1 - (1 - t/T)^3 at jumps of T/jumps, T = 0.75 of the steps
    assert agp_share(0, 1000) == 0.0
    assert agp_share(375, 1000, jumps=10) == pytest.approx(1 - 0.5 ** 3)
    assert agp_share(749, 1000, jumps=10) == pytest.approx(1 - 0.1 ** 3)  # the last jump before T
    assert agp_share(750, 1000) == agp_share(1000, 1000) == 1.0
    shares = [agp_share(s, 1000) for s in range(0, 1001, 5)]
    assert shares == sorted(shares) and len(set(shares)) == 11  # 10 jumps, monotone
    masker = AgpMasker((64, 64, 64), (16, 32, 64), "l2", 10, 1000)
    assert masker.counts(0) == [0, 0, 0] and masker.counts(1000) == [48, 32, 0]


def test_pruning_removes_rows_bn_and_next_columns_exactly(digits, base):
    """Masked (AGP) and physically removed models compute the same logits; matrices shrink."""
    from qat.train import load_checkpoint

    ckpt = load_checkpoint(base)
    model = ckpt.model()
    masker = AgpMasker(ckpt.spec.layer_widths, (32, 24, 40), "l1", 10, 100)
    masker(model, 100)
    masked = predict(model, digits.test.images)
    spec, state = remove(model, ckpt.spec, ckpt.data.image_shape, masker.masks(model))
    assert spec.widths == (32, 24, 40)
    small = build_model(spec, ckpt.data.image_shape, 10, digits.pixel_max)
    small.load_state_dict(state)
    assert [tuple(m.weight.shape) for m in small.modules() if isinstance(m, QuantLinear)] == \
        [(32, 64), (24, 32), (40, 24), (10, 40)]
    assert small.features[3].running_mean.shape == (32,)
    np.testing.assert_array_equal(predict(small.eval(), digits.test.images), masked)


def test_cnv_channels_and_first_linear_shrink():
    spec = parse_model_name("cnv-w1a1")
    model = build_model(spec, (3, 32, 32), 10, 255).eval()
    kept = StructuredPrune(ratio=0.5).kept_widths(spec)
    removed = [lowest(layer_scores(l, "l2"), w - k) for l, w, k in zip(prunable(model), spec.layer_widths, kept)]
    new, state = remove(model, spec, (3, 32, 32), removed)
    assert new.widths == (32, 32, 64, 64, 128, 128, 256, 256)
    assert state["linear_features.0.weight"].shape == (256, 128)


def test_pruned_checkpoint_builds_and_verifies_bit_exactly(base, tmp_path):
    """flows compress --prune, then flows build --checkpoint compressed.pt through verification."""
    out = tmp_path / "c"
    r = _flows("compress", "--checkpoint", base, "--prune", "0.5", "--prune-schedule", "agp", "--epochs", "1",
               "--candidate", "none", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    from qat.train import load_checkpoint

    assert load_checkpoint(out / "compressed.pt").spec.widths == (32, 32, 32)
    r = _flows("build", "--checkpoint", out / "compressed.pt", "--to", "verify", "--out", tmp_path / "b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    verify = json.loads((tmp_path / "b" / "verify" / "verify.json").read_text())
    assert verify["passed"]
    mvau = json.loads((tmp_path / "b" / "estimate" / "estimates.json").read_text())["layers"]
    assert [l["folding"] for l in mvau if l["op_type"].startswith("MVAU")]  # matrix units of the smaller model


# -- input pixels ----------------------------------------------------------------------


def test_informative_pixels_drop_constant_ones():
    images = np.zeros((50, 1, 3, 3), np.uint8)
    images[:, 0, 1, 1] = np.arange(50)  # the only varying pixel: index 4
    images[::2, 0, 0, 2] = 5  # index 2 varies less
    assert informative_pixels(images, 2) == (2, 4) and informative_pixels(images, 1) == (4,)


@pytest.mark.slow
def test_pixel_pruned_model_through_flow_packing_and_executor(base, tmp_path, digits):
    """The build feeds every stage the gathered pixels and verifies; the package's executor, on pixels the
    host gathers from whole images, gives the PyTorch model's predictions."""
    out = tmp_path / "c"
    r = _flows("compress", "--checkpoint", base, "--technique", '{"name": "prune_pixels", "keep": 40}',
               "--epochs", "1", "--candidate", "full", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    deploy = out / "candidate" / "build" / "deploy"
    meta = json.loads((deploy / "deploy.json").read_text())
    assert len(meta["kept_pixels"]) == 40
    from host import executor
    from host.packing import gather_pixels
    from qat.train import load_checkpoint

    ckpt = load_checkpoint(out / "compressed.pt")
    gathered = gather_pixels(digits.test.images, meta["kept_pixels"])
    design = executor.load(deploy / "executor")
    torch_preds = predict(ckpt.model(), gathered).argmax(1)
    labels = design.run(gathered.reshape(len(gathered), *design.input_shape))
    np.testing.assert_array_equal(np.asarray(labels).reshape(-1), torch_preds)
    report = json.loads((out / "candidate" / "candidate.json").read_text())
    # tfc-w2a2 quantises its input to 2 bits, so the candidate quantises on the host: 40 pixels x 2 bits
    assert report["fpga"]["input_quant"] == "host" and report["fpga"]["in_bytes"] == 10
    assert report["fpga"]["verified"]["passed"]


def test_pixel_pruning_keeps_first_layer_columns(digits, base, tmp_path):
    from qat.compress.base import CompressContext
    from qat.train import TrainHooks, load_checkpoint

    ckpt = load_checkpoint(base)
    ctx = CompressContext(digits, TrainConfig(epochs=1), TrainHooks(), tmp_path, progress=False, base_ds=digits)
    pruned = PrunePixels(keep=32).apply(ckpt, ctx)
    assert pruned.data.image_shape == (1, 1, 32) and len(pruned.data.kept_pixels) == 32
    assert pruned.state_dict["features.2.weight"].shape == (64, 32)
    assert pruned.model()(torch.zeros(3, 1, 1, 32)).shape == (3, 10)


def test_bits_plan_the_spec_they_fine_tune():
    bits = technique_from_dict({"name": "bits", "weight_bits": 4, "act_bits": 4, "in_bits": 4})
    assert bits.planned_spec(parse_model_name("lenet-w8a8")) == parse_model_name("lenet-w4a4")
    assert technique_from_dict({"name": "input_bits", "bits": 1}).planned_spec(
        parse_model_name("tfc-w2a2")).in_bits == 1


# -- distillation ----------------------------------------------------------------------


def test_distillation_loss_is_hintons():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert float(distill_loss(t, t, y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)  # student = teacher
    assert float(distill_loss(s, t, y, 4.0, 0.0)) == pytest.approx(float(torch.nn.functional.cross_entropy(s, y)))
    p, logq = torch.softmax(t / 3, 1), torch.log_softmax(s / 3, 1)
    kl = float((p * (p.log() - logq)).sum(1).mean())
    assert float(distill_loss(s, t, y, 3.0, 1.0)) == pytest.approx(9 * kl, rel=1e-5)  # T^2 scaling


def _plain_teacher(tmp_path, kind, pixels=64, classes=10):
    """A plain PyTorch model over raw pixels (not a qnn-flows model), saved as TorchScript or ONNX."""
    import warnings

    torch.manual_seed(0)
    side = int(pixels ** 0.5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(pixels, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, classes)).eval()
    path = tmp_path / f"teacher_{pixels}_{classes}.{'onnx' if kind == 'onnx' else 'ts'}"
    if kind == "onnx":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 1, side, side),), str(path), dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "n"}})
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(model), str(path))
    return model, path


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_plain_teacher_files_score_like_the_model_they_hold(digits, tmp_path, kind):
    model, path = _plain_teacher(tmp_path, kind)
    assert teacher_kind(path) == kind
    teacher = load_teacher(path, DatasetInfo.of(digits))
    x = torch.from_numpy(digits.test.images[:16].astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(teacher(x), model(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
@pytest.mark.parametrize("pixels, classes, message", [(784, 10, "images"), (64, 5, "the student has 10 classes")])
def test_plain_teacher_that_does_not_match_is_refused(digits, tmp_path, kind, pixels, classes, message):
    _, path = _plain_teacher(tmp_path, kind, pixels, classes)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_teacher(path, DatasetInfo.of(digits))
    assert "option 'teacher'" in str(err.value)


def test_distillation_from_an_onnx_teacher_runs(base, tmp_path):
    from qat.compress import compress

    _, path = _plain_teacher(tmp_path, "onnx")
    result = compress({"out": str(tmp_path / "c"), "checkpoint": str(base), "epochs": 1, "candidate": "none",
                       "techniques": [{"name": "distill", "teacher": str(path)}]}, progress=False)
    assert result.steps[0]["name"] == "distill" and 0 < result.steps[0]["test_accuracy"] <= 1


# -- config and runner -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trips(tmp_path, suffix):
    cfg = CompressConfig(out="build/c1", model="lenet-w4a4", data="mnist", data_dir="/data", epochs=3, techniques=(
        technique_from_dict({"name": "distill", "teacher": "t.pt", "temperature": 3.0}),
        technique_from_dict({"name": "prune", "ratio": [0.5, 0.75], "schedule": "agp"}),
        technique_from_dict({"name": "prune_pixels", "keep": 600}),
        technique_from_dict({"name": "input_bits", "bits": 2}),
        technique_from_dict({"name": "bits", "weight_bits": [4, 4, 8], "act_bits": 4})))
    path = tmp_path / f"c{suffix}"
    cfg.save(path)
    assert load_config(path) == cfg
    assert load_config(path).techniques[1].ratio == (0.5, 0.75)


def test_resumed_run_reuses_finished_steps(base, tmp_path):
    from qat.compress import compress

    cfg = {"out": str(tmp_path / "c"), "checkpoint": str(base), "epochs": 1, "candidate": "none",
           "techniques": [{"name": "prune", "ratio": 0.5}]}
    first = compress(cfg, progress=False)
    stamp = os.stat(first.path).st_mtime_ns
    again = compress(cfg, progress=False)
    assert again.steps[0]["reused"] and os.stat(again.path).st_mtime_ns == stamp


# -- bad input: one line naming the option, exit 2, nothing written ---------------------


def _teacher(tmp_path, shape, classes):
    spec = parse_model_name("tfc-w2a2")
    model = build_model(spec, shape, classes, 16)
    path = tmp_path / f"teacher_{classes}.pt"
    Checkpoint(spec, DatasetInfo("other", shape, classes, 16), TrainConfig(), model.state_dict(), {}).save(path)
    return path


@pytest.mark.parametrize("technique, message", [
    ({"name": "prune", "ratio": 1.0}, "'ratio' must be in [0, 1)"),
    ({"name": "prune", "ratio": -0.1}, "'ratio' must be in [0, 1)"),
    ({"name": "prune", "ratio": [0.5, 0.5]}, "'ratio' needs one ratio for all layers or 3"),
    ({"name": "prune", "ratio": 0.995, "multiple": 1}, "no neuron"),
    ({"name": "input_bits", "bits": 9}, "in_bits"),
    ({"name": "prune_pixels", "keep": 0}, "keep 1 to 64"),
    ({"name": "prune", "ratio": 0.5, "steps": 0}, "'steps' and 'multiple' must be >= 1"),
    ({"name": "nope"}, "unknown technique 'nope'"),
])
def test_bad_options_are_refused_naming_the_option_before_any_work(base, tmp_path, technique, message):
    from qat.compress import compress

    out = tmp_path / "c"
    cfg = {"out": str(out), "checkpoint": str(base), "candidate": "none",
           "techniques": [{"name": "prune", "ratio": 0.25}, technique]}  # the second is bad: nothing runs
    with pytest.raises(ConfigError, match=re.escape(message)):
        compress(cfg, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("shape, classes, message", [((1, 28, 28), 10, "takes (1, 28, 28) images"),
                                                     ((1, 8, 8), 5, "has 5 classes")])
def test_teacher_that_does_not_match_is_refused(base, tmp_path, shape, classes, message):
    from qat.compress import compress

    cfg = {"out": str(tmp_path / "c"), "checkpoint": str(base), "candidate": "none",
           "techniques": [{"name": "distill", "teacher": str(_teacher(tmp_path, shape, classes))}]}
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        compress(cfg, progress=False)
    assert "option 'teacher'" in str(err.value) and not (tmp_path / "c").exists()


def test_bad_option_on_the_command_line_exits_2_in_one_line(base, tmp_path):
    out = tmp_path / "c"
    r = _flows("compress", "--checkpoint", base, "--prune", "1.0", "--out", out, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "prune: option 'ratio' must be in [0, 1)" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_changed_options_do_not_overwrite_a_finished_step(base, tmp_path):
    out = tmp_path / "c"
    args = ["--checkpoint", base, "--epochs", "1", "--candidate", "none", "--out", out]
    assert _flows("compress", *args, "--prune", "0.5", cwd=tmp_path).returncode == 0
    before = (out / "01_prune" / "checkpoint.pt").read_bytes()
    r = _flows("compress", *args, "--prune", "0.25", cwd=tmp_path)
    assert r.returncode == 2 and "01_prune holds prune" in r.stderr
    assert (out / "01_prune" / "checkpoint.pt").read_bytes() == before


def test_command_line_options_make_the_techniques_in_order():
    from qat.compress.cli import techniques_from_options

    o = {"distill": "t.pt", "prune": "0.5,0.75,0.5", "prune_schedule": "agp", "input_bits": 2,
         "technique": ['{"name": "prune_pixels", "keep": 600}']}
    assert techniques_from_options(o) == [
        {"name": "distill", "teacher": "t.pt", "fine_tune": False},
        {"name": "prune", "ratio": [0.5, 0.75, 0.5], "schedule": "agp"},
        {"name": "prune_pixels", "keep": 600}, {"name": "input_bits", "bits": 2}]
    alone = {**o, "prune": None, "input_bits": None, "technique": None}
    assert techniques_from_options(alone) == [{"name": "distill", "teacher": "t.pt", "fine_tune": True}]
