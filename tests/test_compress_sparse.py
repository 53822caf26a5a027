"""Unstructured magnitude pruning: schedule, masks kept through fine-tuning, refusals."""
from pathlib import Path

import pytest
import torch

from flows.errors import ConfigError
from qat.compress.base import CompressContext, technique_from_dict
from qat.compress.unstructured import UnstructuredPrune, cubic_sparsity, magnitude_mask
from qat.compress.weights import weight_layers
from qat.data import load_dataset
from qat.models import parse_model_name
from qat.train import DatasetInfo, TrainConfig, TrainHooks, train

DIGITS = DatasetInfo("digits", (1, 8, 8), 10, 16)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def dense(digits):
    torch.manual_seed(0)
    return train(parse_model_name("tfc-w2a2"), digits, TrainConfig(epochs=1, batch_size=64, seed=1), progress=False)


def test_cubic_schedule_rises_to_the_target():
    values = [cubic_sparsity(0.8, j, 4) for j in range(1, 5)]
    assert values == sorted(values) and values[-1] == pytest.approx(0.8)
    assert values[0] == pytest.approx(0.8 * (1 - 0.75 ** 3))


def test_magnitude_mask_keeps_the_largest_and_earlier_prunes():
    w = torch.tensor([[0.5, -0.1, 0.9, 0.05], [-0.7, 0.2, 0.01, -0.3]])
    first = magnitude_mask(w, torch.ones_like(w, dtype=torch.bool), 0.25)  # 2 of 8 pruned: 0.01 and 0.05
    assert first.tolist() == [[True, True, True, False], [True, True, False, True]]
    w2 = w.clone()
    w2[0, 3] = 5.0  # a pruned weight that grew back must stay pruned
    second = magnitude_mask(w2, first, 0.5)
    assert not second[0, 3] and int((~second).sum()) == 4


def test_masks_survive_fine_tuning_and_reach_the_target(digits, dense, tmp_path: Path):
    prune = UnstructuredPrune(sparsity=[0.0, 0.8, 0.5, 0.3], events=4, ramp=0.5)
    ctx = CompressContext(digits, TrainConfig(epochs=2, batch_size=64, lr=0.01), TrainHooks(), tmp_path, progress=False)
    pruned = prune.apply(dense, ctx)
    weights = [m.weight for _, m in weight_layers(pruned.model())]
    for w, target in zip(weights, (0.0, 0.8, 0.5, 0.3)):
        assert int((w == 0).sum()) == int(target * w.numel())
    # the masks are kept: a second fine-tune from the pruned weights (sparsity reached) keeps every zero
    zeros = [w == 0 for w in weights]
    again = UnstructuredPrune(sparsity=[0.0, 0.8, 0.5, 0.3], events=1, ramp=0.0).apply(pruned, ctx)
    for z, (_, m) in zip(zeros, weight_layers(again.model())):
        assert bool((m.weight[z] == 0).all())
        assert bool((m.quant_weight().value[z] == 0).all())  # a pruned float weight quantises to exactly 0
    report = prune.report(again)
    assert report["layers"][1]["zero_weights"] == int(0.8 * 4096) and "none" in report["fpga_effect"]


def test_from_dict_and_one_value_for_all():
    t = technique_from_dict({"name": "unstructured", "sparsity": [0.1, 0.2, 0.3, 0.4]})
    assert t.sparsity == (0.1, 0.2, 0.3, 0.4) and t.fpga_effect == "none"
    assert UnstructuredPrune(sparsity=0.5).targets(parse_model_name("tfc-w2a2")) == (0.5,) * 4


@pytest.mark.parametrize("options, words", [
    ({"sparsity": 1.0}, "'sparsity' must be in \\[0, 1\\)"),
    ({"sparsity": -0.1}, "'sparsity' must be in \\[0, 1\\)"),
    ({"sparsity": [0.5, 0.5]}, "'sparsity' has 2 entries, but the model has 4"),
    ({"events": 0}, "'events' must be a positive integer"),
    ({"ramp": 1.5}, "'ramp' must be in \\[0, 1\\]"),
])
def test_bad_options_name_the_option(options, words):
    with pytest.raises(ConfigError, match=words):
        UnstructuredPrune(**options).check(parse_model_name("tfc-w2a2"), DIGITS)


def test_sparsity_on_binary_weights_is_refused():
    spec = parse_model_name("tfc-w1a1")
    with pytest.raises(ConfigError, match="'sparsity' is 0.5 for layer 0, which has 1-bit"):
        UnstructuredPrune(sparsity=0.5).check(spec, DIGITS)
    UnstructuredPrune(sparsity=0.0).check(spec, DIGITS)  # nothing pruned: allowed
