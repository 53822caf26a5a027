"""Low-rank factorisation: SVD exact at full rank, the spec's ranks, refusals, and a factorised build."""
import json
from pathlib import Path

import pytest
import torch
from brevitas.nn import QuantLinear

from flows.errors import ConfigError
from qat.compress.base import CompressContext
from qat.compress.lowrank import LowRank, factorise
from qat.data import load_dataset
from qat.models import ModelSpec, build_model, parse_model_name
from qat.train import DatasetInfo, TrainConfig, TrainHooks, train

DIGITS = DatasetInfo("digits", (1, 8, 8), 10, 16)


@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
def test_factorisation_is_exact_at_full_rank_and_truncates_below(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    a, b = factorise(w, min(shape))
    assert a.shape == (min(shape), shape[1]) and b.shape == (shape[0], min(shape))
    assert torch.allclose(b @ a, w, atol=1e-5)
    a2, b2 = factorise(w, 2)
    assert torch.linalg.matrix_rank(b2 @ a2) == 2


def test_ranks_round_trip_and_build_two_halves():
    spec = ModelSpec.from_dict({"arch": "tfc", "weight_bits": 2, "act_bits": 2, "ranks": [None, 16, None, None]})
    assert ModelSpec.from_dict(spec.to_dict()) == spec and spec.name == "tfc-custom"
    shapes = [tuple(m.weight.shape) for m in build_model(spec, (1, 8, 8), 10, 16).modules()
              if isinstance(m, QuantLinear)]
    assert shapes == [(64, 64), (16, 64), (64, 16), (64, 64), (10, 64)]
    assert "ranks" not in parse_model_name("tfc-w2a2").to_dict()


@pytest.mark.parametrize("ranks, words", [([None, 65, None, None], "'ranks' is 65 for layer 1 \\(64 -> 64\\)"),
                                          ([None, None, None, 11], "'ranks' is 11 for layer 3 \\(64 -> 10\\)"),
                                          ([None, 0, None, None], "'ranks' must hold positive integers"),
                                          ([16, 16], "'ranks' has 2 entries")])
def test_bad_ranks_name_the_option(ranks, words):
    with pytest.raises(ConfigError, match=words):
        LowRank(ranks=ranks).check(parse_model_name("tfc-w2a2"), DIGITS)


def test_bad_ranks_in_a_spec_name_the_field():
    with pytest.raises(ConfigError, match="'ranks' \\(low-rank layers\\) is for MLPs only"):
        ModelSpec.from_dict({"arch": "cnv", "weight_bits": 1, "act_bits": 1, "ranks": [None] * 9})
    spec = ModelSpec.from_dict({"arch": "tfc", "weight_bits": 2, "act_bits": 2, "ranks": [65, None, None, None]})
    with pytest.raises(ConfigError, match="field 'ranks' entry 0 is 65"):
        build_model(spec, (1, 8, 8), 10, 16)


def test_factorised_checkpoint_builds_and_verifies(tmp_path: Path):
    from flows.build import run_build
    from flows.config import BuildConfig

    digits = load_dataset("digits")
    dense = train(parse_model_name("tfc-w2a2"), digits, TrainConfig(epochs=1, batch_size=64, seed=1), progress=False)
    technique = LowRank(ranks=[None, 16, None, None])
    ctx = CompressContext(digits, TrainConfig(epochs=1, batch_size=64, lr=0.01), TrainHooks(), tmp_path, progress=False)
    low = technique.apply(dense, ctx)
    assert technique.report(low)["layers"] == [{"layer": 1, "shape": [64, 64], "rank": 16, "weights_dense": 4096,
                                                "weights_factorised": 2048, "smaller": True}]
    path = tmp_path / "low.pt"
    low.save(path)
    run = tmp_path / "run"
    run_build(BuildConfig(checkpoint=path, out=run, to_step="verify"))
    verify = json.loads((run / "verify" / "report.json").read_text())
    estimate = json.loads((run / "estimate" / "report.json").read_text())
    assert verify["passed"] and verify["images"] == len(digits.test.labels)
    assert sum(layer["op_type"].startswith("MVAU") for layer in estimate["layers"]) == 5
