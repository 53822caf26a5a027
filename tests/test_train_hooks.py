"""Per-layer widths in the model spec and the trainer's hooks (loss, optimiser, after-step, init state)."""
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantLinear

from flows.errors import ConfigError
from qat.data import load_dataset
from qat.models import ModelSpec, build_model, default_widths, parse_model_name
from qat.train import TrainConfig, TrainHooks, cross_entropy, load_checkpoint, train

ONE_EPOCH = TrainConfig(epochs=1, batch_size=256, lr=0.05, seed=3)


def test_widths_shape_the_model_and_round_trip():
    spec = ModelSpec.from_dict({"arch": "tfc", "weight_bits": 2, "act_bits": 2, "widths": [48, 64, 16]})
    assert spec.name == "tfc-custom" and spec.layer_widths == (48, 64, 16)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    shapes = [tuple(m.weight.shape) for m in build_model(spec, (1, 8, 8), 10, 16).modules()
              if isinstance(m, QuantLinear)]
    assert shapes == [(48, 64), (64, 48), (16, 64), (10, 16)]


def test_zoo_specs_keep_their_dict_and_name():
    spec = parse_model_name("tfc-w2a2")
    assert "widths" not in spec.to_dict() and spec.layer_widths == default_widths("tfc")
    explicit = ModelSpec.from_dict({**spec.to_dict(), "widths": list(default_widths("tfc"))})
    assert explicit.name == "tfc-w2a2"


def test_cnv_widths_set_channels_and_linear_widths():
    widths = [16, 16, 32, 32, 64, 64, 128, 96]
    spec = ModelSpec.from_dict({"arch": "cnv", "weight_bits": 1, "act_bits": 1, "in_bits": 8, "widths": widths})
    model = build_model(spec, (3, 32, 32), 10, 255)
    outs = [m.weight.shape[0] for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert outs == [*widths, 10]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("widths, why", [([64, 64], "3 positive integers"), ([64, 0, 64], "3 positive integers"),
                                         ("64", "3 positive integers")])
def test_bad_widths_name_the_field(widths, why):
    with pytest.raises(ConfigError, match=f"'widths' needs {why}"):
        ModelSpec.from_dict({"arch": "tfc", "weight_bits": 2, "act_bits": 2, "widths": widths})


def test_hooks_replace_loss_and_see_every_step():
    ds = load_dataset("digits")
    calls, steps = [], []

    def loss(logits, labels, images):
        calls.append(images.shape[0])
        return cross_entropy(logits, labels, images)

    train(parse_model_name("tfc-w1a1"), ds, ONE_EPOCH, progress=False,
          hooks=TrainHooks(loss=loss, after_step=lambda model, step: steps.append(step)))
    batches = -(-len(ds.train.labels) // ONE_EPOCH.batch_size)
    assert sum(calls) == len(ds.train.labels) and steps == list(range(1, batches + 1))


class NoStep(torch.optim.SGD):
    """An optimiser that never changes a weight: what training starts from is what it ends with."""

    def step(self, closure=None):
        return None


def test_init_state_starts_from_given_weights(tmp_path):
    ds = load_dataset("digits")
    spec = parse_model_name("tfc-w2a2")
    first = train(spec, ds, ONE_EPOCH, progress=False)
    frozen = TrainHooks(optimizer=lambda params, lr: NoStep(params, lr=lr))
    again = train(spec, ds, ONE_EPOCH, progress=False, hooks=frozen, init_state=first.state_dict)
    for key, value in first.state_dict.items():
        if "weight" in key and "bn" not in key and value.dim() == 2:
            assert torch.equal(again.state_dict[key], value), key
    again.save(tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt").spec == spec
