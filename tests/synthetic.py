"""A small CIFAR-shaped dataset for tests (CIFAR-10's files are not on every machine).

Ten classes, each a fixed random 4x4 colour pattern upsampled to 32x32, plus noise:
learnable in one epoch, so a build's accuracy figures mean something.
"""
from __future__ import annotations

import numpy as np

from qat.data import Dataset, Split


def _split(rng, templates: np.ndarray, n: int) -> Split:
    labels = np.arange(n, dtype=np.int64) % len(templates)
    rng.shuffle(labels)
    images = templates[labels] + rng.normal(0, 40, size=(n, *templates.shape[1:]))
    images = np.clip(images, 0, 255).astype(np.uint8)
    images.flags.writeable = False
    labels.flags.writeable = False
    return Split(images, labels)


def synthetic_cifar(n_train: int = 256, n_test: int = 64, seed: int = 0, name: str = "cifar10") -> Dataset:
    """(N, 3, 32, 32) uint8 images in 0..255, labels 0..9, named like the dataset it stands in for."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(10, 3, 4, 4)).astype(np.float64)
    templates = coarse.repeat(8, axis=2).repeat(8, axis=3)  # (10, 3, 32, 32)
    return Dataset(name, _split(rng, templates, n_train), _split(rng, templates, n_test), pixel_max=255, num_classes=10)


def write_cifar_batches(ds: Dataset, directory) -> None:
    """Write ``ds`` as CIFAR-10's python batches (train split over data_batch_1..5, test_batch)
    under ``directory/cifar-10-batches-py``, for ``--data cifar10 --data-dir directory --no-verify-checksums``."""
    import pickle
    from pathlib import Path

    folder = Path(directory) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = ds.train.images.reshape(len(ds.train), -1), ds.train.labels
    parts = np.array_split(np.arange(len(images)), 5)
    batches = {f"data_batch_{i + 1}": idx for i, idx in enumerate(parts)}
    for name, idx in batches.items():
        blob = {b"data": np.ascontiguousarray(images[idx]), b"labels": [int(v) for v in labels[idx]]}
        (folder / name).write_bytes(pickle.dumps(blob))
    test = {b"data": np.ascontiguousarray(ds.test.images.reshape(len(ds.test), -1)),
            b"labels": [int(v) for v in ds.test.labels]}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
