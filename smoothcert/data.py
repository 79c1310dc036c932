"""Data sets to certify on: built-in scikit-learn digits, .npz files, CIFAR-10 python batches, image folders.

Every loader returns pixels as float32 tensors (N, *input_shape) and labels as int64 (N,). Images are scaled
to [0, 1]; .npz arrays are taken as given. Nothing is ever downloaded. Bad input raises SmoothcertError.
"""
from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import SmoothcertError, check, check_count, first_line

SPECS = "digits, npz:PATH, cifar10:DIR, folder:DIR"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NPZ_INFLATION, NPZ_SLACK = 100, 64 << 20   # an .npz's arrays may hold at most 100 times its size plus 64 MiB
MAX_IMAGE_SIDE = 4096                      # folder: images of at most 4096 x 4096 pixels (201 MB as float32 RGB)
EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}  # 8 bits a channel
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Dataset:
    """Inputs x (float32, (N, *input_shape)), labels y (int64, (N,)), class names (empty when the data names
    none: an .npz without `classes`), a display name, and the input grid when the loader knows it: every value is
    k / grid for an integer k (digits 16, CIFAR-10 and 8-bit image folders 255; None for .npz data, whose grid
    must be declared for float-sound sampling)."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str
    grid: int | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        """The number of classes: the class names', or 1 + the largest label when there are none."""
        return len(self.classes) if self.classes else int(self.y.max()) + 1


def load_data(spec: str, split: str = "test") -> Dataset:
    """Load the data set named by `spec` (digits, npz:PATH, cifar10:DIR, folder:DIR); split is train or test."""
    check(split in ("train", "test"), f"split must be 'train' or 'test', got {split!r}")
    check(isinstance(spec, str), f"data set spec must be a string ({SPECS}), got {spec!r}")
    kind, colon, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "digits":
        check(not colon, f"the digits data set takes no argument, got {spec!r}")
        return _digits(split)
    loaders = {"npz": _npz, "cifar10": _cifar10, "folder": _folder}
    check(kind in loaders, f"unknown data set {spec!r}; accepted forms: {SPECS}")
    check(arg.strip() != "", f"data set {spec!r} needs a path, as in {kind}:{'PATH' if kind == 'npz' else 'DIR'}")
    return loaders[kind](Path(arg).expanduser(), split)


def _dataset(x: np.ndarray, y: np.ndarray, classes, name: str, grid: int | None = None) -> Dataset:
    return Dataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)), tuple(classes), name, grid)


def _digits(split: str) -> Dataset:
    """scikit-learn's 8x8 digits with a fixed stratified 1347/450 split, each part in original order."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    train, test = train_test_split(np.arange(len(digits.target)), test_size=0.25, random_state=0,
                                   stratify=digits.target)
    idx = np.sort(train if split == "train" else test)
    x = digits.images[idx].reshape(-1, 1, 8, 8) / 16.0
    return _dataset(x, digits.target[idx], (str(i) for i in range(10)), f"digits:{split}", 16)   # pixels 0..16


def _npz(path: Path, split: str) -> Dataset:
    """An .npz with arrays x (N, ...) and y (N,), optionally classes; the split is ignored."""
    check(path.is_file(), f"npz file not found (or not a file): {path}")
    _check_npz_sizes(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise SmoothcertError(f"{path} is not a valid .npz archive ({type(exc).__name__})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SmoothcertError(f"{path} holds a single array, not an .npz archive with arrays x and y")
    with archive:
        for key in ("x", "y"):
            check(key in archive.files, f"{path} has no array {key!r} (found: {', '.join(archive.files) or 'none'})")
        arrays = {}
        for key in [k for k in ("x", "y", "classes") if k in archive.files]:
            try:
                arrays[key] = archive[key]
            except Exception as exc:
                why = ("an object array, which is not loaded (allow_pickle=False); save plain numeric arrays"
                       if "allow_pickle" in str(exc) else f"unreadable ({type(exc).__name__})")
                raise SmoothcertError(f"array {key!r} in {path} is {why}") from exc
    x, y = arrays["x"], arrays["y"]
    check(x.dtype.kind in "fiu", f"x in {path} must be a float or integer array, got dtype {x.dtype}")
    check(x.ndim >= 2, f"x in {path} must have shape (N, ...) with at least 2 dimensions, got {x.shape}")
    check(y.dtype.kind in "iu", f"y in {path} must be an integer array of labels, got dtype {y.dtype}")
    check(y.ndim == 1, f"y in {path} must have shape (N,), got {y.shape}")
    check(len(x) == len(y), f"x and y in {path} differ in length: {len(x)} inputs but {len(y)} labels")
    check(len(y) > 0, f"{path} holds no examples (x and y are empty)")
    _check_float32(x, path)
    check(int(y.min()) >= 0, f"y in {path} has a negative label {int(y.min())}; labels must be >= 0")
    k = int(y.max()) + 1
    if "classes" in arrays:
        names = arrays["classes"]
        check(names.dtype.kind in "US" and names.ndim == 1,
              f"classes in {path} must be a 1-d array of strings, got dtype {names.dtype} shape {names.shape}")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        check(len(classes) >= k, f"y in {path} has label {k - 1} but classes names only {len(classes)} classes")
    else:
        classes = []                       # nothing the size of the largest label is built before it is checked
    return _dataset(x, y, classes, f"npz:{path}")


def _check_npz_sizes(path: Path) -> None:
    """Before np.load inflates anything: the members' declared sizes (the zip directory) within NPZ_INFLATION
    times the file's size plus NPZ_SLACK (a 1.5 MB file inflating to 1.5 GB is refused; savez_compressed of real
    images shrinks them 2-20 times), and no array header declaring more bytes than its member holds (numpy
    allocates what the header declares before reading). Python's zipfile never inflates past a declared size."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            headers = {i.filename: _npy_header(zf, i) for i in infos if i.filename.endswith(".npy")}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, TypeError, NotImplementedError):
        return                                     # not a zip (a single .npy?), or an unreadable one: np.load says
    size, total = path.stat().st_size, sum(i.file_size for i in infos)
    cap = NPZ_INFLATION * size + NPZ_SLACK
    check(total <= cap, f"{path} is refused: its arrays inflate to {total:,} bytes, over the {cap:,} allowed for a "
                        f"{size:,}-byte .npz ({NPZ_INFLATION} times its size plus 64 MiB)")
    for info in infos:
        if info.filename in headers:
            shape, dtype = headers[info.filename]
            declared = math.prod(shape) * dtype.itemsize
            check(declared <= info.file_size, f"{path} is refused: its array {info.filename[:-4][:80]!r} declares "
                                              f"shape {shape} ({declared:,} bytes) in a member of {info.file_size:,}")


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """The shape and dtype an .npy member declares (its header only is read)."""
    with zf.open(info) as f:
        read = (np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(f) == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
    return shape, dtype


def _check_float32(x: np.ndarray, path) -> None:
    """Inputs are loaded as float32: a finite value beyond its range would become inf, so it is named instead."""
    top = np.finfo(np.float32).max
    if x.dtype.kind != "f" or x.dtype.itemsize <= 4 or x.size == 0:
        return
    if max(np.fmax.reduce(x, axis=None), -np.fmin.reduce(x, axis=None)) <= top:
        return                                     # (reductions: no copy of x; rows are searched only when needed)
    for i, row in enumerate(x.reshape(len(x), -1)):
        big = row[np.isfinite(row) & (np.abs(row) > top)]
        if big.size:
            raise SmoothcertError(f"x in {path}: input {i} holds {big[0]:g}, which overflows float32 (inputs are "
                                  "loaded as float32)")


class _NotABatch(pickle.UnpicklingError):
    """A pickle names something a CIFAR-10 batch never holds."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 python batch holds: dicts, lists, bytes and str, numbers, and numpy arrays
    (numpy's _reconstruct or, protocol 5, _frombuffer, with ndarray and dtype; Python 3's protocol 2 writes bytes
    as _codecs.encode(text, 'latin1')). Any other global a pickle names (os.system, say) is refused: unpickling
    never runs other code."""

    def find_class(self, module: str, name: str):
        found = _BATCH_GLOBALS.get((module, name))
        if found is None:
            raise _NotABatch(f"it names {module[:60]}.{name[:60]}, which a CIFAR-10 batch never holds")
        return found


def _latin1(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _NotABatch(f"it encodes bytes as {str(encoding)[:40]}, not latin1")
    return text.encode("latin1")


_RECONSTRUCT, _FROMBUFFER = np.zeros(1).__reduce__()[0], np.zeros(1).__reduce_ex__(5)[0]
_BATCH_GLOBALS = {**{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
                  **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
                  ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1}


def _unpickle(path: Path) -> dict:
    """A CIFAR-10 batch (a pickle, the official format), read with _BatchUnpickler: nothing but its data."""
    check(path.is_file(), f"missing CIFAR-10 file: {path}")
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except _NotABatch as exc:
        raise SmoothcertError(f"{path} is refused: {first_line(exc)} (only plain data and numpy arrays are "
                              "unpickled)") from None
    except Exception as exc:
        raise SmoothcertError(f"{path} is not a readable CIFAR-10 pickle ({type(exc).__name__})") from None
    check(isinstance(obj, dict), f"{path} is not a CIFAR-10 batch (expected a pickled dict)")
    return obj


def _cifar10(root: Path, split: str) -> Dataset:
    """CIFAR-10 python batches: data_batch_1..5 (train) or test_batch (test), optional batches.meta."""
    check(root.is_dir(), f"CIFAR-10 directory not found: {root}")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for name in names:  # report a missing file before reading any
        check((root / name).is_file(), f"missing CIFAR-10 file: {root / name}")
    classes = CIFAR10_CLASSES
    if (root / "batches.meta").is_file():
        meta = _unpickle(root / "batches.meta")
        check(b"label_names" in meta, f"{root / 'batches.meta'} has no b'label_names' entry")
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"])
    xs, ys = [], []
    for name in names:
        path, batch = root / name, _unpickle(root / name)
        check(b"data" in batch and b"labels" in batch, f"{path} lacks the b'data' or b'labels' entry")
        data = batch[b"data"]
        check(isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072,
              f"b'data' in {path} must be a uint8 array of shape (N, 3072), got "
              f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        try:
            labels = np.asarray(batch[b"labels"], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise SmoothcertError(f"b'labels' in {path} is not a list of integers") from exc
        check(len(labels) == len(data), f"{path} has {len(data)} images but {len(labels)} labels")
        check(len(labels) == 0 or 0 <= labels.min() <= labels.max() < len(classes),
              f"{path} has labels outside 0..{len(classes) - 1}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    x = np.concatenate(xs).astype(np.float32) / 255.0
    return _dataset(x, np.concatenate(ys), classes, f"cifar10:{root}:{split}", 255)


def _subdirs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _folder(root: Path, split: str) -> Dataset:
    """One sub-folder per class (sorted names), images of one size; uses DIR/train, DIR/test if both exist."""
    from PIL import Image
    check(root.is_dir(), f"image folder not found: {root}")
    name = f"folder:{root}"
    if (root / "train").is_dir() and (root / "test").is_dir():
        # classes are the union over both splits, so a class index means the same thing in train and test
        classes = sorted(_subdirs(root / "train") | _subdirs(root / "test"))
        root, name = root / split, f"{name}:{split}"
    else:
        classes = sorted(_subdirs(root))
    check(classes, f"no class sub-folders in {root} (expected one sub-folder of images per class)")
    files, labels = [], []
    for label, cls in enumerate(classes):
        if not (root / cls).is_dir():
            continue  # class present only in the other split
        found = sorted(p for p in (root / cls).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        check(found, f"class folder {root / cls} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += found
        labels += [label] * len(found)
    check(files, f"no images in {root}")
    sizes, gray, deep = {}, True, None
    for path in files:  # headers only: sizes and modes, without decoding pixels
        try:
            with Image.open(path) as im:
                sizes[path], gray = im.size, gray and im.mode in ("L", "1")
                deep = deep or (None if im.mode in EIGHT_BIT_MODES else path)
        except Exception as exc:
            raise SmoothcertError(f"cannot read image {path} ({type(exc).__name__})") from exc
        check(sizes[path][0] * sizes[path][1] <= MAX_IMAGE_SIDE ** 2,
              f"image {path} is {sizes[path][0]}x{sizes[path][1]} pixels, over the {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} "
              "that folder: data sets take (it is refused before decoding)")
        check(sizes[path] == sizes[files[0]], f"image sizes differ: {path} is {sizes[path][0]}x{sizes[path][1]} "
              f"but {files[0]} is {sizes[files[0]][0]}x{sizes[files[0]][1]} (width x height); all must match")
    (w, h), mode = sizes[files[0]], "L" if gray else "RGB"
    x = np.empty((len(files), 1 if gray else 3, h, w), dtype=np.float32)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert(mode), dtype=np.float32)
        except Exception as exc:
            raise SmoothcertError(f"cannot decode image {path} ({type(exc).__name__})") from exc
        x[i] = (pixels[None] if gray else pixels.transpose(2, 0, 1)) / 255.0
    # 8-bit images give k/255 exactly; an image of another depth (16-bit, float) is converted by PIL, so its grid is
    # not declared: float-sound sampling then needs --input-grid
    return _dataset(x, np.array(labels), classes, name, None if deep else 255)


def select(ds: Dataset, skip: int = 1, max_count: int | None = None, start: int = 0,
           indices: list[int] | None = None) -> list[int]:
    """Indices to process: `indices` as given (checked), else range(start, len(ds), skip) cut to max_count."""
    n = len(ds)
    if indices is not None:
        indices = list(indices)
        check(len(indices) > 0, "no input indices given")
        for i in indices:
            check(isinstance(i, (int, np.integer)) and not isinstance(i, bool), f"index {i!r} is not an integer")
            check(0 <= i < n, f"index {i} is out of range for {ds.name} with {n} examples (0..{n - 1})")
        seen = set()
        for i in indices:
            check(int(i) not in seen, f"index {int(i)} is given twice")
            seen.add(int(i))
        return [int(i) for i in indices]
    check_count("skip", skip, 1)
    check_count("start", start, 0)
    check(start < n, f"start {start} is out of range for {ds.name} with {n} examples")
    if max_count is not None:
        check_count("max_count", max_count, 1)
    return list(range(start, n, skip))[:max_count]
