"""The project's fuzz suite, small: networks built by bench/fuzz.py's generator, each through the
flow's verify step, and compared with the Brevitas module and the numpy executor.

The targeted specs construct each class of issue 11: a 1-bit-input, 1-bit-weight (XNOR) layer with
a 6-bit output; a binary input quantiser and a bipolar hidden activation feeding multi-bit weights;
a LeNet-style conv -> act -> maxpool -> flatten -> linear head; a tie-heavy MLP without BatchNorm.
Two random seeds from the generator complete it. bench/fuzz.py runs hundreds.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import fuzz  # noqa: E402
from fuzz import NetSpec  # noqa: E402

TARGETED = {
    "xnor-int6-out": NetSpec(9001, "mlp", (24, 13), (1, 2, 2), (6, 2), in_bits=1, batchnorm=True),
    "binary-input-multibit-weights": NetSpec(9002, "mlp", (17,), (2, 3), (3,), in_bits=1, batchnorm=False),
    "bipolar-hidden-into-3bit-weights": NetSpec(9003, "mlp", (10, 7), (4, 3, 2), (1, 2), in_bits=4, batchnorm=True),
    "bipolar-hidden-into-last-layer": NetSpec(9006, "mlp", (10,), (3, 4), (1,), in_bits=4, batchnorm=True),
    "batchnorm-before-maxpool": NetSpec(9007, "cnn", (4,), (3, 2), (3,), in_bits=4, batchnorm=True, convs=1,
                                        act_before_pool=False),
    "lenet-head-maxpool-flatten-linear": NetSpec(9004, "cnn", (4,), (3, 2), (2,), in_bits=4, batchnorm=False, convs=1),
}


@pytest.fixture(scope="module")
def digits():
    from qat.data import load_dataset

    return load_dataset("digits")


def check(result: dict) -> None:
    assert result["status"] == "passed", result.get("error") or result.get("verify_summary")
    assert result["model_differs"] == result["executor_differs"] == 0
    assert result["excused_ties"] == 0 and result["ties_resolved_otherwise"] == 0


@pytest.mark.parametrize("name", TARGETED, ids=list(TARGETED))
def test_targeted_network_is_bit_exact(name, digits, tmp_path):
    check(fuzz.run_one(TARGETED[name], tmp_path, digits))


def test_tie_heavy_network_resolves_every_tie_as_the_model(digits, tmp_path):
    """No BatchNorm, power-of-two scales: the hidden quantiser sees acc / 2^k, so ties are certain."""
    spec = NetSpec(9005, "mlp", (31, 10), (2, 2, 3), (3, 2), in_bits=3, batchnorm=False)
    result = fuzz.run_one(spec, tmp_path, digits)
    check(result)
    assert result["images_on_tie"] > 50 and result["tie_values"] > 100
    assert result["ties_resolved_as_hardware"] == result["tie_values"]


@pytest.mark.parametrize("seed", [1, 5])
def test_random_network_is_bit_exact(seed, digits, tmp_path):
    check(fuzz.run_one(fuzz.random_spec(seed), tmp_path, digits))


def test_generator_is_seeded():
    assert fuzz.random_spec(7) == fuzz.random_spec(7)
    assert len({fuzz.random_spec(s) for s in range(30)}) == 30
    assert {fuzz.random_spec(s).kind for s in range(6)} == {"mlp", "cnn"}
