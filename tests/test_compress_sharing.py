"""Weight sharing: k-means on the quantiser grid, centroid fine-tuning with the assignment fixed, refusals."""
from pathlib import Path

import numpy as np
import pytest

from flows.errors import ConfigError
from qat.compress.base import CompressContext
from qat.compress.sharing import WeightSharing, cluster_layer, kmeans_1d, snap_to_grid
from qat.compress.weights import IntWeights, int_weights, weight_layers
from qat.data import load_dataset
from qat.models import parse_model_name
from qat.train import DatasetInfo, TrainConfig, TrainHooks, accuracy, train

DIGITS = DatasetInfo("digits", (1, 8, 8), 10, 16)


def test_kmeans_linear_init_finds_two_clusters():
    centroids, labels = kmeans_1d(np.array([0.0, 0.1, 10.0, 10.1]), 2)
    assert centroids == pytest.approx([0.05, 10.05]) and labels.tolist() == [0, 0, 1, 1]


def test_centroids_land_on_the_grid_and_merge():
    distinct, labels = snap_to_grid(np.array([-2.6, 0.9, 1.2, 6.8]), np.array([0, 1, 2, 3, 2]), np.arange(-7, 8))
    assert distinct.tolist() == [-3, 1, 7] and labels.tolist() == [0, 1, 1, 2, 1]


def test_layer_clusters_nonzeros_into_2_to_the_bits_grid_values():
    rng = np.random.default_rng(0)
    ints = rng.integers(-7, 8, size=(16, 12))
    q = IntWeights("fc", ints, 1 / 7, 4)
    s = cluster_layer(q, 2)
    values = s.centroids.numpy() * 7
    assert len(values) <= 4 and np.allclose(values, np.round(values)) and np.abs(values).max() <= 7
    assert s.positions.tolist() == np.flatnonzero(ints).tolist()  # zeros are not clustered


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_fine_tuned_centroids_keep_the_assignment_and_the_zeros(digits, tmp_path: Path):
    dense = train(parse_model_name("tfc-w4a4"), digits, TrainConfig(epochs=1, batch_size=64, seed=2), progress=False)
    share = WeightSharing(bits=[2, 3, 3, 2])
    before = {name: s for name, s in share.cluster(dense).items()}
    ctx = CompressContext(digits, TrainConfig(epochs=1, batch_size=64, lr=0.01), TrainHooks(), tmp_path, progress=False)
    shared = share.apply(dense, ctx)
    model = shared.model()
    for (name, m), bits in zip(weight_layers(model), (2, 3, 3, 2)):
        q = int_weights(name, m)
        assert np.allclose(m.weight.detach().numpy(), q.ints * q.scale)  # weights sit exactly on the grid
        s = before[name]
        flat = q.ints.reshape(-1)
        kept = np.zeros(flat.size, bool)
        kept[s.positions.numpy()] = True
        assert (flat[~kept] == 0).all()  # what was zero stays zero
        for label in range(len(s.centroids)):  # one value per cluster: the assignment held
            assert len(np.unique(flat[s.positions.numpy()[s.labels.numpy() == label]])) == 1
        assert len(np.unique(flat[flat != 0])) <= 2 ** bits
    assert accuracy(model, digits.test.images, digits.test.labels) == pytest.approx(shared.metrics["test_accuracy"])
    assert all("finn_effect" in row for row in share.report(shared)["layers"])


def test_kmeans_bits_above_the_weight_bits_is_refused():
    with pytest.raises(ConfigError, match="option 'bits' is 3 for layer 0, above its 2 weight bits"):
        WeightSharing(bits=3).check(parse_model_name("tfc-w2a2"), DIGITS)
    with pytest.raises(ConfigError, match="'bits' has 3 entries"):
        WeightSharing(bits=[2, 2, 2]).check(parse_model_name("tfc-w2a2"), DIGITS)
    WeightSharing(bits=2).check(parse_model_name("tfc-w2a2"), DIGITS)
