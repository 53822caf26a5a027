"""Dataset loading for QAT: digits (and digits32), MNIST, Fashion-MNIST and CIFAR-10 as raw uint8 arrays.

Contract:

* ``load_dataset(name, data_dir, verify=...)`` returns a :class:`Dataset` whose splits
  hold images ``(N, C, H, W)`` uint8 (raw pixel values, ``0..pixel_max``) and labels
  ``(N,)`` int64 in ``0..num_classes-1``. Normalisation is the caller's job.
* Arrays are cached in memory (never on disk) and are **read-only**, because every
  caller of the same dataset shares them; copy before modifying in place.
* Every problem (missing, truncated, corrupt or tampered file, unknown name) raises
  :class:`host.errors.DatasetError` with one line naming the file, what is wrong
  and what to do. No ``OSError``/``EOFError``/``zlib.error``/pickle error escapes.

Only numpy and scikit-learn are imported here: no torch.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.errors import ConfigError, DatasetError

DATASETS: tuple[str, ...] = ("digits", "digits32", "mnist", "fashion-mnist", "cifar10")
BUNDLED: tuple[str, ...] = ("digits", "digits32")  # need no data dir


def check_data_option(name: str, data_dir: str | Path | None, prefix: str = "") -> None:
    """Validate ``--data``/``--data-dir`` before anything runs: ConfigError (exit 2, message
    after ``prefix``) for an unknown dataset name or a non-bundled one without a data dir.
    Whether the files are there is `load_dataset`'s check (DatasetError, exit 3)."""
    if name not in DATASETS:
        raise ConfigError(f"{prefix}unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    if name not in BUNDLED and data_dir is None:
        raise ConfigError(f"{prefix}--data {name} needs --data-dir DIR holding its files")

NUM_CLASSES = 10
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_IDX_SIDE = 28
# split -> (images file, labels file, official image count); names without ".gz".
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
# torchvision's folder under data_dir (data_dir/<folder>/raw).
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

# Official MD5 of each file, keyed by its file name (".gz" or decompressed).
# Fashion-MNIST publishes no MD5 for its decompressed files.
_IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR_SHAPE = (3, 32, 32)
# The globals a CIFAR-10 batch pickle may name: numpy array reconstruction only.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
_NO_VERIFY = "pass verify=False (CLI: --no-verify-checksums) to accept your own copy"


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``images`` (N, C, H, W) uint8 raw pixels, ``labels`` (N,) int64.

    A model's own data (``load_own_data``) holds (N, *input shape) integers of any integer dtype
    (int8 for bipolar inputs)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        """Reject arrays that break the contract (wrong rank, dtype or length)."""
        if self.images.ndim < 2 or self.images.dtype.kind not in "iu":
            raise DatasetError(f"images must be (N, C, H, W) uint8, got {self.images.shape} {self.images.dtype}")
        if self.labels.shape != (len(self.images),) or self.labels.dtype != np.int64:
            raise DatasetError(f"labels must be ({len(self.images)},) int64, got {self.labels.shape} {self.labels.dtype}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: train and test splits, pixel range ``0..pixel_max`` and class count."""

    name: str
    train: Split
    test: Split
    pixel_max: int
    num_classes: int
    labelled: bool = True  # False: random inputs with placeholder labels (accuracy unknown)
    kept_pixels: tuple[int, ...] | None = None  # pixel-pruned: images are (1, 1, K), these pixels of the original

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one image."""
        return tuple(int(d) for d in self.train.images.shape[1:])  # type: ignore[return-value]

    def gather(self, kept: tuple[int, ...] | None) -> "Dataset":
        """The dataset as a pixel-pruned model takes it: images (N, 1, 1, K) of the flattened original's
        pixels ``kept`` (indices into this dataset's original images); ``None``: itself."""
        if kept is None or tuple(kept) == self.kept_pixels:
            return self
        if self.kept_pixels is not None:
            raise DatasetError("gather the kept pixels from the original dataset, not an already pruned one")
        from host.packing import gather_pixels

        def split(s: Split) -> Split:
            return Split(gather_pixels(s.images, kept), s.labels)

        return Dataset(self.name, split(self.train), split(self.test), self.pixel_max, self.num_classes,
                       kept_pixels=tuple(int(k) for k in kept))


# ----------------------------------------------------------------------------- public API


def load_dataset(name: str, data_dir: str | Path | None = None, *, verify: bool = True) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`).

    ``data_dir`` is ignored for "digits" (bundled with scikit-learn) and required for
    the others (see :func:`dataset_dir_hint`). With ``verify`` every file's MD5 is
    checked against the official one (Fashion-MNIST decompressed files, which have no
    published MD5, are checked for their official image count instead).
    Raises :class:`DatasetError` on any problem. Results are cached in memory.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}': known datasets are {', '.join(DATASETS)}")
    if name == "digits":
        return _load_digits()
    if name == "digits32":
        return _load_digits32()
    if data_dir is None:
        raise DatasetError(f"dataset '{name}' needs --data-dir (data_dir): {dataset_dir_hint(name)}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data dir '{root}' for dataset '{name}' is not a directory: {dataset_dir_hint(name)}")
    return _load_cached(name, str(root.resolve()), bool(verify))


def dataset_dir_hint(name: str) -> str:
    """One line saying which files dataset ``name`` needs and where under DIR they are looked for."""
    if name in BUNDLED:
        return f"{name} is made from the digits bundled with scikit-learn and needs no data dir"
    if name == "cifar10":
        files = ", ".join((*_CIFAR_TRAIN, _CIFAR_TEST))
        return f"put the CIFAR-10 python batches ({files}) in DIR/{_CIFAR_FOLDER} or DIR"
    if name in _TORCHVISION_FOLDER:
        files = ", ".join(f"{f}.gz" for pair in _IDX_FILES.values() for f in pair[:2])
        places = ", ".join(("DIR", f"DIR/{name}", f"DIR/{_TORCHVISION_FOLDER[name]}/raw"))
        return f"put {files} (or the same files gunzipped) in one of {places}"
    return f"unknown dataset '{name}': known datasets are {', '.join(DATASETS)}"


# ----------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (0..16), split 75/25 stratified with random_state=0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.25, random_state=0, stratify=labels)
    return Dataset("digits", _split(x_tr, y_tr), _split(x_te, y_te), pixel_max=16, num_classes=NUM_CLASSES)


@functools.lru_cache(maxsize=1)
def _load_digits32() -> Dataset:
    """The same digits and split, CIFAR-shaped: each pixel a 4x4 block (32x32), grey in all 3 channels.

    Not CIFAR-10, and named so: it lets CNV (32x32 RGB in) run offline on real images.
    """
    digits = _load_digits()

    def grow(split: Split) -> Split:
        return _split(split.images.repeat(4, axis=2).repeat(4, axis=3).repeat(3, axis=1), split.labels)

    return Dataset("digits32", grow(digits.train), grow(digits.test), pixel_max=digits.pixel_max,
                   num_classes=NUM_CLASSES)


# ----------------------------------------------------------------------------- shared helpers


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str, verify: bool) -> Dataset:
    """Load a file-based dataset from the resolved directory ``root`` (cached per name/root/verify)."""
    if name == "cifar10":
        return _load_cifar10(Path(root), verify)
    train = _load_idx_split(name, Path(root), "train", verify)
    test = _load_idx_split(name, Path(root), "test", verify)
    return Dataset(name, train, test, pixel_max=255, num_classes=NUM_CLASSES)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    """A Split over C-contiguous, read-only copies-or-views of ``images`` and ``labels``."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return Split(images, labels)


def _one_line(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on a single line (messages must stay one line)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _read_file(path: Path) -> bytes:
    """All bytes of ``path``; an OS error becomes a DatasetError naming the file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read '{path}': {exc.strerror or exc}; check the file and its permissions") from exc


def _check_md5(path: Path, data: bytes, expected: str) -> None:
    """Raise DatasetError unless md5(``data``) (the bytes of ``path``) equals ``expected``."""
    actual = hashlib.md5(data).hexdigest()
    if actual != expected:
        raise DatasetError(
            f"checksum mismatch: md5 of '{path}' is {actual}, which differs from the official {expected}; "
            f"re-download the file, or {_NO_VERIFY}"
        )


def _check_labels(path: Path, labels: np.ndarray) -> None:
    """Raise DatasetError if any label of ``path`` lies outside 0..NUM_CLASSES-1."""
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DatasetError(f"corrupt labels in '{path}': found label {int(labels.max())}, expected 0..{NUM_CLASSES - 1}; re-download the file")


def _find_file(filename: str, dirs: list[Path]) -> Path:
    """The first of ``dir/filename.gz`` or ``dir/filename`` that exists, over ``dirs`` in order."""
    tried = []
    for d in dirs:
        for candidate in (d / f"{filename}.gz", d / filename):
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    raise DatasetError(f"missing file '{filename}.gz' (or '{filename}'): looked for {', '.join(tried)}; download it there")


# ----------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def _idx_dirs(name: str, root: Path) -> list[Path]:
    """Where the IDX files of ``name`` are looked for, in order: root, root/<name>, torchvision's raw dir."""
    return [root, root / name, root / _TORCHVISION_FOLDER[name] / "raw"]


def _load_idx_split(name: str, root: Path, split: str, verify: bool) -> Split:
    """Load one split (``"train"``/``"test"``) of an IDX dataset and check images match labels."""
    images_name, labels_name, official_count = _IDX_FILES[split]
    dirs = _idx_dirs(name, root)
    images_path, labels_path = _find_file(images_name, dirs), _find_file(labels_name, dirs)
    images = _read_idx(name, images_path, _IDX_IMAGES_MAGIC, verify, official_count)
    labels = _read_idx(name, labels_path, _IDX_LABELS_MAGIC, verify, official_count)
    if len(images) != len(labels):
        raise DatasetError(
            f"count mismatch: '{images_path}' has {len(images)} images but '{labels_path}' has {len(labels)} labels; "
            "use the images and labels files of the same split and release"
        )
    if images.shape[1:] != (_IDX_SIDE, _IDX_SIDE):
        raise DatasetError(f"'{images_path}' holds {images.shape[1]}x{images.shape[2]} images, expected {_IDX_SIDE}x{_IDX_SIDE} for {name}")
    _check_labels(labels_path, labels)
    return _split(images[:, None, :, :], labels)


def _read_idx(name: str, path: Path, magic: int, verify: bool, official_count: int) -> np.ndarray:
    """Read, verify (if asked), decompress and parse one IDX file into a uint8 array."""
    raw = _read_file(path)
    expected_md5 = _IDX_MD5[name].get(path.name)
    if verify and expected_md5:
        _check_md5(path, raw, expected_md5)
    data = _gunzip(path, raw) if path.suffix == ".gz" else raw
    array = _parse_idx(path, data, magic)
    if verify and not expected_md5 and len(array) != official_count:
        raise DatasetError(f"'{path}' holds {len(array)} items, the official file holds {official_count}; {_NO_VERIFY}")
    return array


def _gunzip(path: Path, raw: bytes) -> bytes:
    """Decompress the gzip bytes ``raw`` read from ``path``; truncation or corruption -> DatasetError."""
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise DatasetError(f"truncated gzip file '{path}' ({len(raw)} bytes): the download was cut short; download it again") from exc
    except (OSError, zlib.error) as exc:
        raise DatasetError(f"corrupt gzip file '{path}': {_one_line(exc)}; download it again") from exc


def _parse_idx(path: Path, data: bytes, magic: int) -> np.ndarray:
    """Parse IDX bytes: (N, rows, cols) for images (magic 2051), (N,) for labels (magic 2049).

    Checks the big-endian magic number and that the data length matches the header exactly.
    """
    ndim = 3 if magic == _IDX_IMAGES_MAGIC else 1
    header_size = 4 * (1 + ndim)
    if len(data) < header_size:
        raise DatasetError(f"truncated IDX file '{path}': {len(data)} bytes, shorter than its {header_size}-byte header; download it again")
    found, *dims = struct.unpack(f">{1 + ndim}I", data[:header_size])
    if found != magic:
        kind = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
        raise DatasetError(f"bad magic number {found} in '{path}': expected {magic} for an IDX {kind} file; check the file is the right one")
    expected = header_size + math.prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes in"
        raise DatasetError(f"{what} IDX file '{path}': header says {expected} bytes, file has {len(data)}; download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


# ----------------------------------------------------------------------------- CIFAR-10


def _load_cifar10(root: Path, verify: bool) -> Dataset:
    """CIFAR-10 from its python batches: data_batch_1..5 -> train, test_batch -> test."""
    dirs = [root / _CIFAR_FOLDER, root]
    batches = [_read_cifar_batch(_find_cifar_file(b, dirs), verify) for b in (*_CIFAR_TRAIN, _CIFAR_TEST)]
    train_images = np.concatenate([b[0] for b in batches[:-1]])
    train_labels = np.concatenate([b[1] for b in batches[:-1]])
    train = _split(train_images, train_labels)
    test = _split(*batches[-1])
    return Dataset("cifar10", train, test, pixel_max=255, num_classes=NUM_CLASSES)


def _find_cifar_file(filename: str, dirs: list[Path]) -> Path:
    """The first ``dir/filename`` that exists over ``dirs``; DatasetError naming every place tried."""
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    tried = ", ".join(str(d / filename) for d in dirs)
    raise DatasetError(f"missing CIFAR-10 batch '{filename}': looked for {tried}; extract cifar-10-python.tar.gz there")


def _read_cifar_batch(path: Path, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch as ((N, 3, 32, 32) uint8, (N,) int64), md5-checked first if ``verify``."""
    raw = _read_file(path)
    if verify:
        _check_md5(path, raw, _CIFAR_MD5[path.name])
    batch = _unpickle(path, raw)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"corrupt CIFAR-10 batch '{path}': b'data' is not an (N, 3072) uint8 array; extract the batch again")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DatasetError(f"count mismatch in CIFAR-10 batch '{path}': {len(data)} images but b'labels' is not a list of {len(data)}; extract the batch again")
    labels_array = _cifar_labels(path, labels)
    return data.reshape(-1, *_CIFAR_SHAPE), labels_array


def _cifar_labels(path: Path, labels: list) -> np.ndarray:
    """The batch's label list as int64, checked to lie in 0..9."""
    try:
        array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DatasetError(f"corrupt CIFAR-10 batch '{path}': labels are not integers ({_one_line(exc)}); extract the batch again") from exc
    if array.size and int(array.min()) < 0:
        raise DatasetError(f"corrupt labels in '{path}': found label {int(array.min())}, expected 0..{NUM_CLASSES - 1}; extract the batch again")
    _check_labels(path, array)
    return array


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that only builds numpy arrays: a CIFAR batch needs nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(path: Path, raw: bytes) -> dict:
    """Unpickle a CIFAR-10 batch (encoding='bytes') into its dict; any failure -> DatasetError."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # pickle raises many types on bad input: UnpicklingError, EOFError, ValueError, ...
        raise DatasetError(f"corrupt CIFAR-10 batch '{path}': cannot unpickle it ({_one_line(exc)}); extract the batch again") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"corrupt CIFAR-10 batch '{path}': expected a pickled dict, got {type(batch).__name__}; extract the batch again")
    return batch


# ----------------------------------------------------------------------------- a model's own data

OWN_DATA_LAYOUT = ("an .npz with x_test and y_test (and optionally x_train and y_train), or an .npy/.csv "
                   "table: one example per row, its label in the last column (a test split)")


def load_own_data(path: str | Path, input_shape: tuple[int, ...], lo: int, hi: int, datatype: str,
                  bipolar: bool = False) -> Dataset:
    """A model's own labelled data, checked against the model input.

    ``input_shape``: the model's per-example input shape (no batch axis); arrays may hold it as
    is or flattened. Values must be integers in ``lo..hi`` of the input ``datatype`` (BIPOLAR:
    -1 or +1 only). Labels: non-negative integers. Layout: :data:`OWN_DATA_LAYOUT`.
    Every problem raises DatasetError naming the file, the array and what is wrong.
    """
    path = Path(path)
    arrays = _read_own_arrays(path)
    splits = {}
    for split in ("train", "test"):
        if f"x_{split}" not in arrays:
            splits[split] = Split(np.zeros((0, *input_shape), np.int64), np.zeros(0, np.int64))
            continue
        x = _own_inputs(path, f"x_{split}", arrays[f"x_{split}"], input_shape, lo, hi, datatype, bipolar)
        y = _own_labels(path, f"y_{split}", arrays.get(f"y_{split}"), len(x))
        splits[split] = _split_as(x, y)
    if not len(splits["test"]):
        raise DatasetError(f"'{path}': x_test holds no examples; give at least one")
    labels = np.concatenate([splits["train"].labels, splits["test"].labels])
    return Dataset(path.name, splits["train"], splits["test"], pixel_max=int(hi),
                   num_classes=max(2, int(labels.max()) + 1))


def _read_own_arrays(path: Path) -> dict[str, np.ndarray]:
    """{'x_test': ..., 'y_test': ..., ...} from an .npz, or from an .npy/.csv table (label last)."""
    if not path.is_file():
        raise DatasetError(f"data file '{path}' not found; give {OWN_DATA_LAYOUT}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            if "x_test" not in arrays or "y_test" not in arrays:
                raise DatasetError(f"'{path}' holds arrays {sorted(arrays)} but needs x_test and y_test "
                                   "(and optionally x_train, y_train)")
            if ("x_train" in arrays) != ("y_train" in arrays):
                raise DatasetError(f"'{path}': x_train and y_train go together; give both or neither")
            return arrays
        if suffix == ".npy":
            table = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            table = _read_csv(path)
        else:
            raise DatasetError(f"data file '{path}' is not .npz, .npy or .csv; give {OWN_DATA_LAYOUT}")
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read data file '{path}': {_one_line(exc)}") from exc
    if table.ndim != 2 or table.shape[1] < 2:
        raise DatasetError(f"'{path}' holds a table of shape {table.shape}; expected (examples, features + 1) "
                           "with the label in the last column")
    return {"x_test": table[:, :-1], "y_test": table[:, -1]}


def _read_csv(path: Path) -> np.ndarray:
    """A numeric CSV table; a first line that is not numeric is taken as a header and skipped."""
    text = path.read_text().splitlines()
    first = text[0].split(",") if text else []
    try:
        [float(v) for v in first]
        skip = 0
    except ValueError:
        skip = 1
    return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)


def _own_inputs(path: Path, key: str, x: np.ndarray, shape: tuple[int, ...], lo: int, hi: int,
                datatype: str, bipolar: bool) -> np.ndarray:
    """``x`` as (N, *shape) int64, after shape, integrality and range checks."""
    want = math.prod(shape)
    if x.ndim < 1 or x.dtype.kind not in "biuf":
        raise DatasetError(f"'{path}' array {key} is {x.dtype} {x.shape}; expected numbers of shape (N, "
                           f"{', '.join(map(str, shape))})")
    if x.shape[1:] != shape and (x.ndim < 2 or math.prod(x.shape[1:]) != want):
        raise DatasetError(f"'{path}' array {key} has shape {x.shape}; the model takes (N, "
                           f"{', '.join(map(str, shape))}) ({want} values per example)")
    values = x.astype(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < lo) | (values > hi)
    if bipolar:
        bad |= values == 0
    if bad.any():
        at = tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape))
        allowed = "-1 or +1" if bipolar else f"integers {lo}..{hi}"
        raise DatasetError(f"'{path}' array {key} holds {x[at]} at {at}; the model's {datatype} input takes "
                           f"{allowed}" + ("; map 0 to -1" if bipolar and values[at] == 0 else ""))
    return values.astype(np.int64).reshape(len(x), *shape)


def _own_labels(path: Path, key: str, y: np.ndarray | None, n: int) -> np.ndarray:
    if y is None:
        raise DatasetError(f"'{path}' has no {key}; labels go beside their inputs")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,) or y.dtype.kind not in "biuf" or (y.size and (y.min() < 0 or np.any(y != np.round(y)))):
        raise DatasetError(f"'{path}' array {key} is {y.dtype} {y.shape}; expected ({n},) non-negative integer "
                           "labels, one per example")
    return y.astype(np.int64)


def _split_as(x: np.ndarray, y: np.ndarray) -> Split:
    """A read-only Split over ``x`` in the smallest integer dtype that holds it."""
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    kind = next(k for k in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64")
                if np.iinfo(k).min <= lo and hi <= np.iinfo(k).max)
    x, y = np.ascontiguousarray(x, dtype=kind), np.ascontiguousarray(y, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return Split(x, y)


def random_inputs(input_shape: tuple[int, ...], values: np.ndarray, n_random: int = 128, most_constant: int = 1024,
                  seed: int = 0) -> Dataset:
    """Unlabelled inputs over every value an input datatype allows (``values``, ascending).

    First one constant row per value (every value of a datatype of up to 10 bits, so every
    tie an input quantiser could round; ``most_constant`` evenly spread values beyond), then
    two rows alternating the smallest and largest value (edges side by side), then
    ``n_random`` uniform random rows. Labels are placeholders (``labelled=False``): accuracy
    on them means nothing.
    """
    rng = np.random.default_rng(seed)
    per = math.prod(input_shape)
    picked = values if len(values) <= most_constant else \
        values[np.linspace(0, len(values) - 1, most_constant).round().astype(int)]
    constant = np.repeat(picked[:, None], per, axis=1)
    edges = np.where(np.arange(per) % 2 == np.arange(2)[:, None], values[0], values[-1])
    rest = values[rng.integers(0, len(values), size=(n_random, per))]
    x = np.concatenate([constant, edges, rest]).reshape(-1, *input_shape)
    test = _split_as(x, np.zeros(len(x), np.int64))
    empty = Split(np.zeros((0, *input_shape), test.images.dtype), np.zeros(0, np.int64))
    return Dataset("random", empty, test, pixel_max=int(values[-1]), num_classes=1, labelled=False)
