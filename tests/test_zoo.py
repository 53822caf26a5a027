"""The model zoo: names, per-layer bit widths from a config file, CNV's shapes."""
import json

import pytest
import torch

from flows.errors import ConfigError
from qat.models import ARCHS, PRECISIONS, ModelSpec, build_model, known_models, load_model_config, parse_model_name

MIXED = {"arch": "tfc", "weight_bits": [8, 2, 2, 8], "act_bits": [2, 2, 2], "in_bits": 8}


@pytest.mark.parametrize("name", known_models())
def test_every_zoo_name_parses_and_round_trips(name):
    spec = parse_model_name(name)
    assert spec.name == name
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_zoo_covers_every_architecture_and_precision():
    assert set(ARCHS) == {"tfc", "sfc", "lfc", "lenet", "cnv"}
    assert PRECISIONS == ("w1a1", "w1a2", "w2a2", "w4a4", "w8a8")
    assert len(known_models()) == 25


def test_cnv_has_brevitas_layer_counts_and_8_bit_input():
    spec = parse_model_name("cnv-w2a2")
    assert spec.weight_bits == (2,) * 9 and spec.act_bits == (2,) * 8 and spec.in_bits == 8
    assert parse_model_name("tfc-w2a2").in_bits == 2  # Brevitas' FC quantise their input like the activations


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_model_config_file(tmp_path, suffix):
    path = tmp_path / f"mixed.{suffix}"
    path.write_text(json.dumps(MIXED) if suffix == "json" else
                    "arch: tfc\nweight_bits: [8, 2, 2, 8]\nact_bits: [2, 2, 2]\nin_bits: 8\n")
    spec = load_model_config(path)
    assert spec == ModelSpec("tfc", (8, 2, 2, 8), (2, 2, 2), 8) and spec.name == "tfc-custom"


def test_model_config_shorthand_and_default_input_bits():
    spec = ModelSpec.from_dict({"arch": "cnv", "weight_bits": 1, "act_bits": 2})
    assert spec == parse_model_name("cnv-w1a2") and spec.name == "cnv-w1a2"


@pytest.mark.parametrize("change, words", [
    ({"weight_bit": [1, 1, 1, 1]}, "unknown field(s) weight_bit"),
    ({"arch": "tfx"}, "field 'arch' is 'tfx'"),
    ({"weight_bits": [8, 2, 2]}, "field 'weight_bits' needs 4 bit widths for tfc"),
    ({"act_bits": [2, 9, 2]}, "field 'act_bits' has 9"),
    ({"in_bits": 0}, "field 'in_bits' has 0"),
    ({"act_bits": "2"}, "field 'act_bits' needs 3"),
    ({"weight_bits": [True, 1, 1, 1]}, "field 'weight_bits' has True"),
])
def test_model_config_errors_name_the_field(change, words):
    d = {**MIXED, **change}
    if "weight_bit" in change:
        del d["weight_bits"]
    with pytest.raises(ConfigError) as err:
        ModelSpec.from_dict(d)
    assert words in str(err.value)


def test_model_config_missing_field_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="missing field.*act_bits"):
        ModelSpec.from_dict({"arch": "tfc", "weight_bits": 1})
    with pytest.raises(ConfigError, match="not found"):
        load_model_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("arch: [tfc\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_model_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- tfc\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_model_config(tmp_path / "list.yaml")


def test_mixed_precision_model_uses_each_layers_bits():
    model = build_model(ModelSpec.from_dict(MIXED), (1, 8, 8), 10, 16)
    linears = [m for m in model.modules() if type(m).__name__ == "QuantLinear"]
    assert [int(m.quant_weight().bit_width) for m in linears] == [8, 2, 2, 8]


@pytest.mark.parametrize("name", ["cnv-w1a1", "cnv-w2a2"])
def test_cnv_takes_raw_cifar_pixels(name):
    model = build_model(parse_model_name(name), (3, 32, 32), 10, 255).eval()
    convs = [m for m in model.modules() if type(m).__name__ == "QuantConv2d"]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    assert [m.out_features for m in model.modules() if type(m).__name__ == "QuantLinear"] == [512, 512, 10]
    assert model(torch.randint(0, 256, (2, 3, 32, 32)).float()).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 30, 30)])
def test_cnv_refuses_images_too_small(shape):
    with pytest.raises(ConfigError, match="cnv needs images of at least 32x32"):
        build_model(parse_model_name("cnv-w1a1"), shape, 10, 255)
