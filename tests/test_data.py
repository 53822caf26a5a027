"""Tests for qat.data: digits split, IDX and CIFAR-10 parsing, error messages, and the real MNIST files.

Everything the tests write goes under ``tmp_path``. The real-data tests read the folder named by
pytest's ``--datasets DIR`` option (CI: ``../shared/datasets``) and skip when it is not there.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.errors import DatasetError
from qat import data as qdata
from qat.data import DATASETS, Dataset, Split, dataset_dir_hint, load_dataset

REPO = Path(__file__).resolve().parents[1]
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ----------------------------------------------------------------------------- helpers


def write_idx(path: Path, magic: int, array: np.ndarray, *, gz: bool, count: int | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file (gzip-compressed if ``gz``); ``count`` overrides the header count."""
    dims = list(array.shape)
    if count is not None:
        dims[0] = count
    payload = struct.pack(f">{1 + len(dims)}I", magic, *dims) + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_idx_dataset(folder: Path, *, gz: bool = True, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    """Write the four MNIST-style IDX files into ``folder``; return the arrays written, per split."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images_name, labels_name = IDX_NAMES[split]
        write_idx(folder / images_name, 2051, images, gz=gz)
        write_idx(folder / labels_name, 2049, labels, gz=gz)
        written[split] = (images, labels)
    return written


def write_cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Write a CIFAR-10 python batch in the official layout (bytes keys, (N, 3072) uint8, list labels)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(x) for x in rng.integers(0, 10, size=n)]
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return data, labels


def make_cifar_dir(folder: Path, n: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write data_batch_1..5 and test_batch (``n`` images each) into ``folder``."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: write_cifar_batch(folder / name, n, seed) for seed, name in enumerate(names)}


def error_of(name: str, data_dir, **kwargs) -> str:
    """Load and return the DatasetError message, asserting that it is a single line."""
    with pytest.raises(DatasetError) as info:
        load_dataset(name, data_dir, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# ----------------------------------------------------------------------------- module contract


def test_datasets_tuple_and_hint():
    assert DATASETS == ("digits", "digits32", "mnist", "fashion-mnist", "cifar10")
    assert "MNIST/raw" in dataset_dir_hint("mnist") and "train-images-idx3-ubyte.gz" in dataset_dir_hint("mnist")
    assert "FashionMNIST/raw" in dataset_dir_hint("fashion-mnist")
    assert "cifar-10-batches-py" in dataset_dir_hint("cifar10")


def test_importing_qat_data_does_not_import_torch():
    code = "import sys, qat.data; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "qat.data imported torch"


def test_split_rejects_wrong_dtype():
    with pytest.raises(DatasetError, match="uint8"):
        Split(np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match="int64"):
        Split(np.zeros((2, 1, 4, 4), np.uint8), np.zeros(2, np.int32))


def test_unknown_dataset_lists_known_ones():
    message = error_of("imagenet", None)
    assert "imagenet" in message
    assert all(name in message for name in DATASETS)


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_dtype_and_range():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset) and ds.name == "digits"
    assert ds.image_shape == (1, 8, 8) and ds.pixel_max == 16 and ds.num_classes == 10
    for split in (ds.train, ds.test):
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
        assert split.images.min() == 0 and split.images.max() == 16
        assert set(np.unique(split.labels)) == set(range(10))
    assert (len(ds.train), len(ds.test)) == (1347, 450)
    assert ds.train.images.shape == (1347, 1, 8, 8) and ds.test.labels.shape == (450,)


def test_digits_split_is_deterministic_and_stratified():
    first = load_dataset("digits")
    qdata._load_digits.cache_clear()
    second = load_dataset("digits", "/nonexistent/ignored")
    assert first is not second
    assert np.array_equal(first.train.images, second.train.images)
    assert np.array_equal(first.test.labels, second.test.labels)
    # Stratified: every class holds about a quarter of its images in the test split.
    total = np.bincount(first.train.labels, minlength=10) + np.bincount(first.test.labels, minlength=10)
    assert np.all(np.abs(np.bincount(first.test.labels, minlength=10) - total * 0.25) <= 1)


def test_digits32_is_the_same_digits_as_32x32_rgb():
    small, big = load_dataset("digits"), load_dataset("digits32", "/ignored")
    assert big.name == "digits32" and big.image_shape == (3, 32, 32) and big.pixel_max == small.pixel_max
    assert np.array_equal(big.test.labels, small.test.labels) and len(big.train) == len(small.train)
    for channel in range(3):  # each pixel a 4x4 block, in every channel
        assert np.array_equal(big.test.images[:, channel, ::4, ::4], small.test.images[:, 0])
        assert np.array_equal(big.test.images[:, channel, 3::4, 3::4], small.test.images[:, 0])
    assert not big.test.images.flags.writeable


def test_cnv_defaults_to_digits32_and_mlps_to_digits():
    from flows.config import BuildConfig

    assert BuildConfig(model="cnv-w1a1").data == "digits32"
    assert BuildConfig(model="cnv-w1a1").run_name == "cnv-w1a1_pynq-z2_digits32"
    assert BuildConfig(model="tfc-w2a2").data == BuildConfig().data == "digits"
    assert BuildConfig(model="cnv-w1a1", data="cifar10", data_dir=Path("/d")).data == "cifar10"


def test_cached_arrays_are_read_only():
    ds = load_dataset("digits")
    with pytest.raises(ValueError):
        ds.train.images[0, 0, 0, 0] = 1
    assert load_dataset("digits").train.images[0, 0, 0, 0] == ds.train.images[0, 0, 0, 0]


# ----------------------------------------------------------------------------- IDX parsing


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_idx_roundtrip(tmp_path, gz):
    written = make_idx_dataset(tmp_path, gz=gz)
    before = sorted(p.name for p in tmp_path.iterdir())
    ds = load_dataset("mnist", tmp_path, verify=False)
    assert ds.image_shape == (1, 28, 28) and ds.pixel_max == 255
    for split in ("train", "test"):
        images, labels = written[split]
        got = getattr(ds, split)
        assert got.images.shape == (len(images), 1, 28, 28) and got.images.dtype == np.uint8
        assert np.array_equal(got.images[:, 0], images)
        assert np.array_equal(got.labels, labels.astype(np.int64)) and got.labels.dtype == np.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written to disk


@pytest.mark.parametrize(
    "name, subdir",
    [("mnist", "mnist"), ("mnist", "MNIST/raw"), ("fashion-mnist", "fashion-mnist"), ("fashion-mnist", "FashionMNIST/raw")],
)
def test_idx_layouts(tmp_path, name, subdir):
    written = make_idx_dataset(tmp_path / subdir, gz=not subdir.endswith("raw"))  # torchvision keeps them gunzipped
    ds = load_dataset(name, tmp_path, verify=False)
    assert ds.name == name
    assert np.array_equal(ds.test.images[:, 0], written["test"][0])


def test_idx_bad_magic_names_file(tmp_path):
    make_idx_dataset(tmp_path)
    bad = write_idx(tmp_path / "train-images-idx3-ubyte", 2049, np.zeros((6, 28, 28), np.uint8), gz=True)
    message = error_of("mnist", tmp_path, verify=False)
    assert str(bad) in message and "magic" in message and "2051" in message


def test_idx_truncated_gzip_names_file(tmp_path):
    make_idx_dataset(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    message = error_of("mnist", tmp_path, verify=False)
    assert str(path) in message and "truncated" in message


def test_idx_corrupt_gzip_names_file(tmp_path):
    make_idx_dataset(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    message = error_of("mnist", tmp_path, verify=False)
    assert str(path) in message and "corrupt gzip" in message


def test_idx_truncated_payload_names_file(tmp_path):
    make_idx_dataset(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    message = error_of("mnist", tmp_path, verify=False)
    assert str(path) in message and "truncated" in message


def test_idx_count_mismatch_names_both_files(tmp_path):
    make_idx_dataset(tmp_path)
    labels = write_idx(tmp_path / "train-labels-idx1-ubyte", 2049, np.zeros(5, np.uint8), gz=True)
    message = error_of("mnist", tmp_path, verify=False)
    assert "count mismatch" in message and str(labels) in message
    assert "6 images" in message and "5 labels" in message


def test_idx_label_out_of_range(tmp_path):
    make_idx_dataset(tmp_path)
    labels = write_idx(tmp_path / "t10k-labels-idx1-ubyte", 2049, np.array([0, 1, 2, 12], np.uint8), gz=True)
    message = error_of("mnist", tmp_path, verify=False)
    assert str(labels) in message and "12" in message


def test_idx_missing_file_names_every_place(tmp_path):
    make_idx_dataset(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    message = error_of("mnist", tmp_path, verify=False)
    assert "t10k-labels-idx1-ubyte.gz" in message
    for place in (tmp_path, tmp_path / "mnist", tmp_path / "MNIST" / "raw"):
        assert str(place / "t10k-labels-idx1-ubyte.gz") in message
        assert str(place / "t10k-labels-idx1-ubyte") in message


def test_idx_needs_data_dir():
    for name in ("mnist", "fashion-mnist", "cifar10"):
        message = error_of(name, None)
        assert "--data-dir" in message and name in message


def test_data_dir_not_a_directory(tmp_path):
    message = error_of("mnist", tmp_path / "nope")
    assert str(tmp_path / "nope") in message and "not a directory" in message


def test_idx_checksum_mismatch(tmp_path):
    make_idx_dataset(tmp_path)
    message = error_of("mnist", tmp_path, verify=True)
    assert "checksum" in message and "md5" in message and "--no-verify-checksums" in message
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert len(load_dataset("mnist", tmp_path, verify=False).train) == 6


def test_idx_checksum_mismatch_decompressed_mnist(tmp_path):
    make_idx_dataset(tmp_path, gz=False)
    message = error_of("mnist", tmp_path, verify=True)
    assert "checksum" in message and "6bbc9ace898e44ae57da46a324031adb" in message  # official raw train-images md5


def test_fashion_decompressed_verify_checks_official_count(tmp_path):
    # No MD5 is published for decompressed Fashion-MNIST, so verify checks the official counts instead.
    make_idx_dataset(tmp_path / "FashionMNIST" / "raw", gz=False)
    message = error_of("fashion-mnist", tmp_path, verify=True)
    assert "train-images-idx3-ubyte" in message and "60000" in message and "--no-verify-checksums" in message


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("subdir", ["cifar-10-batches-py", "."])
def test_cifar10_roundtrip(tmp_path, subdir):
    written = make_cifar_dir(tmp_path / subdir)
    ds = load_dataset("cifar10", tmp_path, verify=False)
    assert ds.image_shape == (3, 32, 32) and ds.pixel_max == 255 and ds.num_classes == 10
    assert (len(ds.train), len(ds.test)) == (20, 4)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int64
    data3, labels3 = written["data_batch_3"]
    assert np.array_equal(ds.train.images[8:12], data3.reshape(4, 3, 32, 32))
    assert ds.train.labels[8:12].tolist() == labels3
    # Channel-major layout: the first 1024 bytes of a row are the red plane.
    test_data, test_labels = written["test_batch"]
    assert np.array_equal(ds.test.images[1, 0].ravel(), test_data[1, :1024])
    assert ds.test.labels.tolist() == test_labels


def test_cifar10_missing_batch(tmp_path):
    make_cifar_dir(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    message = error_of("cifar10", tmp_path, verify=False)
    assert "data_batch_3" in message
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in message and str(tmp_path / "data_batch_3") in message


def test_cifar10_checksum_mismatch_says_how_to_accept(tmp_path):
    make_cifar_dir(tmp_path)
    message = error_of("cifar10", tmp_path, verify=True)
    own = hashlib.md5((tmp_path / "data_batch_1").read_bytes()).hexdigest()
    assert str(tmp_path / "data_batch_1") in message and own in message
    assert "c99cafc152244af753f735de768cd75f" in message and "official" in message
    assert "verify=False" in message and "--no-verify-checksums" in message


def test_cifar10_truncated_pickle(tmp_path):
    make_cifar_dir(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    message = error_of("cifar10", tmp_path, verify=False)
    assert str(path) in message and "unpickle" in message


def test_cifar10_wrong_layout(tmp_path):
    make_cifar_dir(tmp_path)
    path = tmp_path / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2))
    message = error_of("cifar10", tmp_path, verify=False)
    assert str(path) in message and "3072" in message


class _Exploit:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar10_pickle_cannot_run_code(tmp_path):
    make_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Exploit(str(marker))}, protocol=2))
    message = error_of("cifar10", tmp_path, verify=False)
    assert "data_batch_1" in message and "not allowed" in message
    assert not marker.exists()


# ----------------------------------------------------------------------------- real data (--datasets)


def test_real_mnist(datasets_dir):
    ds = load_dataset("mnist", datasets_dir, verify=True)
    assert (len(ds.train), len(ds.test)) == (60000, 10000)
    assert ds.image_shape == (1, 28, 28) and ds.train.images.dtype == np.uint8
    assert np.bincount(ds.train.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert int(ds.train.images.max()) == 255 and int(ds.train.images.min()) == 0
    assert np.array_equal(np.unique(ds.test.labels), np.arange(10))


def test_real_fashion_mnist(datasets_dir):
    ds = load_dataset("fashion-mnist", datasets_dir, verify=True)
    assert (len(ds.train), len(ds.test)) == (60000, 10000)
    assert np.bincount(ds.train.labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(ds.test.labels, minlength=10).tolist() == [1000] * 10
    # Not the MNIST files under another name.
    mnist = load_dataset("mnist", datasets_dir, verify=True)
    assert not np.array_equal(ds.test.images[:10], mnist.test.images[:10])
