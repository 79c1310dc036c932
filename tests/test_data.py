"""Tests for smoothcert.data: every loader on small data built in tmp_path, and every error path."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from smoothcert.data import CIFAR10_CLASSES, Dataset, load_data, select
from smoothcert.errors import SmoothcertError


# ---------------------------------------------------------------- digits

def test_digits_shapes_ranges_and_split_sizes():
    train, test = load_data("digits", "train"), load_data("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.x.shape == (1347, 1, 8, 8) and test.x.shape == (450, 1, 8, 8)
    for ds in (train, test):
        assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64 and ds.y.shape == (len(ds),)
        assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
        assert ds.classes == tuple(str(i) for i in range(10))
        assert set(ds.y.tolist()) == set(range(10))
    assert test.name == "digits:test" and train.name == "digits:train"
    assert load_data("digits").name == "digits:test"  # default split


def _image_set(ds):
    """The set of a data set's images, as bytes of their original 0..16 integer pixels."""
    return {row.tobytes() for row in (ds.x.numpy() * 16).astype(np.uint8).reshape(len(ds), -1)}


def test_digits_is_deterministic_sorted_and_disjoint():
    a, b = load_data("digits"), load_data("digits")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    digits = load_digits()
    test, train = load_data("digits", "test"), load_data("digits", "train")
    assert torch.equal(test.x * 16, (test.x * 16).round())  # pixels * 16 are the original integers
    # the sklearn split is reproduced exactly, in sorted original order
    tr, te = train_test_split(np.arange(len(digits.target)), test_size=0.25, random_state=0,
                              stratify=digits.target)
    te, tr = np.sort(te), np.sort(tr)
    assert np.array_equal(test.x.numpy()[:, 0] * 16, digits.images[te])
    assert np.array_equal(test.y.numpy(), digits.target[te])
    assert np.array_equal(train.x.numpy()[:, 0] * 16, digits.images[tr])
    assert set(tr.tolist()).isdisjoint(te.tolist()) and len(tr) + len(te) == len(digits.target)
    # all 1797 digit images are distinct, so train and test must not share an image
    train_images, test_images = _image_set(train), _image_set(test)
    assert len(train_images) == 1347 and len(test_images) == 450 and train_images.isdisjoint(test_images)


# ---------------------------------------------------------------- npz

def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 3, 3)).astype(np.float64) * 100  # no rescaling expected
    y = np.array([0, 2, 1, 2, 0, 1], dtype=np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_data(f"npz:{tmp_path / 'd.npz'}", split="train")  # split is ignored
    assert isinstance(ds, Dataset) and len(ds) == 6
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert np.allclose(ds.x.numpy(), x.astype(np.float32)) and ds.y.tolist() == y.tolist()
    assert ds.classes == () and ds.num_classes == 3      # unnamed: nothing built per label
    np.savez(tmp_path / "c.npz", x=np.arange(8, dtype=np.uint8).reshape(4, 2), y=np.array([0, 0, 1, 1]),
             classes=np.array(["cat", "dog", "eel"]))
    ds = load_data(f"npz:{tmp_path / 'c.npz'}")
    assert ds.classes == ("cat", "dog", "eel") and ds.x.shape == (4, 2) and float(ds.x[3, 1]) == 7.0


@pytest.mark.parametrize("arrays, match", [
    ({"y": np.zeros(3, int)}, r"no array 'x'"),
    ({"x": np.zeros((3, 2))}, r"no array 'y'"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(4, int)}, r"differ in length"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(3)}, r"integer"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, -1, 1])}, r"negative"),
    ({"x": np.zeros((3, 2)), "y": np.zeros((3, 1), int)}, r"shape \(N,\)"),
    ({"x": np.zeros(3), "y": np.zeros(3, int)}, r"at least 2 dimensions"),
    ({"x": np.array([["a"], ["b"]]), "y": np.zeros(2, int)}, r"float or integer"),
    ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, r"no examples"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2]), "classes": np.array(["a", "b"])}, r"label 2"),
])
def test_npz_bad_contents(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SmoothcertError, match=match) as info:
        load_data(f"npz:{tmp_path / 'bad.npz'}")
    assert "bad.npz" in str(info.value)


def test_npz_object_array_is_refused(tmp_path):
    obj = np.empty(3, dtype=object)
    obj[:] = [1, "two", None]
    np.savez(tmp_path / "o.npz", x=np.zeros((3, 2)), y=obj)
    with pytest.raises(SmoothcertError, match=r"object array.*allow_pickle=False"):
        load_data(f"npz:{tmp_path / 'o.npz'}")


def test_npz_corrupt_missing_and_npy(tmp_path):
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(SmoothcertError, match=r"junk\.npz is not a valid \.npz"):
        load_data(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(SmoothcertError, match=r"not found.*nope\.npz"):
        load_data(f"npz:{tmp_path / 'nope.npz'}")
    np.save(tmp_path / "single.npy", np.zeros((2, 2)))
    with pytest.raises(SmoothcertError, match=r"single array"):
        load_data(f"npz:{tmp_path / 'single.npy'}")


# ---------------------------------------------------------------- cifar10

def _write_cifar(root, train_rows=7, n_train=5, test_rows=5, meta=True):
    """Fake CIFAR-10 batches; pixel value of (row r, channel c, y, x) is (r + 3c + 5y + 7x) mod 256."""
    root.mkdir(parents=True, exist_ok=True)

    def batch(n, offset):
        r, c, yy, xx = np.meshgrid(np.arange(n) + offset, np.arange(3), np.arange(32), np.arange(32), indexing="ij")
        data = ((r + 3 * c + 5 * yy + 7 * xx) % 256).astype(np.uint8).reshape(n, 3072)
        return {b"batch_label": b"x", b"data": data, b"labels": [(i + offset) % 10 for i in range(n)]}

    for i in range(1, n_train + 1):
        with open(root / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(train_rows, 100 * i), f)
    with open(root / "test_batch", "wb") as f:
        pickle.dump(batch(test_rows, 0), f)
    if meta:
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, f)


def test_cifar10_pixel_layout_and_splits(tmp_path):
    _write_cifar(tmp_path / "c")
    test = load_data(f"cifar10:{tmp_path / 'c'}")
    assert test.x.shape == (5, 3, 32, 32) and test.x.dtype == torch.float32 and test.y.dtype == torch.int64
    assert test.y.tolist() == [0, 1, 2, 3, 4] and test.classes == tuple(f"c{i}" for i in range(10))
    # (row 4, green, y=2, x=9): 4 + 3 + 10 + 63 = 80; (row 1, blue, y=31, x=31): 1 + 6 + 155 + 217 = 379 % 256
    assert test.x[4, 1, 2, 9].item() == pytest.approx(80 / 255)
    assert test.x[1, 2, 31, 31].item() == pytest.approx((379 % 256) / 255)
    assert 0.0 <= test.x.min() and test.x.max() <= 1.0
    train = load_data(f"cifar10:{tmp_path / 'c'}", "train")
    assert len(train) == 35 and train.x.shape == (35, 3, 32, 32)
    # row 7 is the first row of data_batch_2 (offset 200): red, y=0, x=1 -> (200 + 7) / 255
    assert train.x[7, 0, 0, 1].item() == pytest.approx(207 / 255)
    assert train.y[:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]


def test_cifar10_nested_layout_and_default_names(tmp_path):
    _write_cifar(tmp_path / "root" / "cifar-10-batches-py", meta=False)
    ds = load_data(f"cifar10:{tmp_path / 'root'}")
    assert len(ds) == 5 and ds.classes == CIFAR10_CLASSES and ds.classes[0] == "airplane"
    assert ds.x[4, 1, 2, 9].item() == pytest.approx(80 / 255)


def test_cifar10_errors(tmp_path):
    _write_cifar(tmp_path / "few", n_train=3)
    assert len(load_data(f"cifar10:{tmp_path / 'few'}", "test")) == 5  # test needs only test_batch
    with pytest.raises(SmoothcertError, match=r"missing CIFAR-10 file.*data_batch_4"):
        load_data(f"cifar10:{tmp_path / 'few'}", "train")
    with pytest.raises(SmoothcertError, match=r"not found"):
        load_data(f"cifar10:{tmp_path / 'absent'}")
    _write_cifar(tmp_path / "bad")
    (tmp_path / "bad" / "test_batch").write_bytes(b"\x00garbage")
    with pytest.raises(SmoothcertError, match=r"test_batch is not a readable CIFAR-10 pickle"):
        load_data(f"cifar10:{tmp_path / 'bad'}")
    with open(tmp_path / "bad" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(SmoothcertError, match=r"\(N, 3072\)"):
        load_data(f"cifar10:{tmp_path / 'bad'}")
    with open(tmp_path / "bad" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, f)
    with pytest.raises(SmoothcertError, match=r"2 images but 1 labels"):
        load_data(f"cifar10:{tmp_path / 'bad'}")
    with open(tmp_path / "bad" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(SmoothcertError, match=r"b'labels'"):
        load_data(f"cifar10:{tmp_path / 'bad'}")


# ---------------------------------------------------------------- folder

def _img(path, mode, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_folder_rgb_class_order(tmp_path):
    _img(tmp_path / "zebra" / "a.png", "RGB", (5, 4), (255, 0, 51))
    _img(tmp_path / "apple" / "b.PNG", "RGB", (5, 4), (0, 102, 0))
    _img(tmp_path / "apple" / "c.bmp", "L", (5, 4), 255)  # mixed modes -> everything RGB
    (tmp_path / "apple" / "notes.txt").write_text("ignored")
    ds = load_data(f"folder:{tmp_path}")
    assert ds.classes == ("apple", "zebra") and ds.y.tolist() == [0, 0, 1]
    assert ds.x.shape == (3, 3, 4, 5) and ds.x.dtype == torch.float32  # (N, C, H, W)
    assert ds.x[0, :, 3, 4].tolist() == pytest.approx([0.0, 0.4, 0.0])
    assert ds.x[1].min().item() == 1.0  # the grey image became white RGB
    assert ds.x[2, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])


def test_folder_grayscale_and_train_test_layout(tmp_path):
    _img(tmp_path / "train" / "b" / "1.png", "L", (3, 2), 51)
    _img(tmp_path / "train" / "a" / "1.png", "1", (3, 2), 1)
    _img(tmp_path / "train" / "c" / "1.png", "L", (3, 2), 0)
    _img(tmp_path / "test" / "c" / "1.png", "L", (3, 2), 102)  # classes a, b are absent from test
    train = load_data(f"folder:{tmp_path}", "train")
    assert train.x.shape == (3, 1, 2, 3) and train.classes == ("a", "b", "c")
    assert train.y.tolist() == [0, 1, 2] and train.x[:, 0, 0, 0].tolist() == pytest.approx([1.0, 0.2, 0.0])
    test = load_data(f"folder:{tmp_path}", "test")
    assert test.classes == ("a", "b", "c") and test.y.tolist() == [2]  # same indices as train
    assert test.x[0, 0, 1, 2].item() == pytest.approx(0.4)


def test_folder_errors(tmp_path):
    _img(tmp_path / "mixed" / "a" / "1.png", "RGB", (4, 4), (0, 0, 0))
    _img(tmp_path / "mixed" / "b" / "2.png", "RGB", (4, 5), (0, 0, 0))
    with pytest.raises(SmoothcertError, match=r"sizes differ.*2\.png is 4x5.*1\.png is 4x4"):
        load_data(f"folder:{tmp_path / 'mixed'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmoothcertError, match=r"no class sub-folders"):
        load_data(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.txt").write_text("hi")
    with pytest.raises(SmoothcertError, match=r"holds no images"):
        load_data(f"folder:{tmp_path / 'noimg'}")
    _img(tmp_path / "broken" / "a" / "1.png", "RGB", (4, 4), (0, 0, 0))
    (tmp_path / "broken" / "a" / "2.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(SmoothcertError, match=r"cannot read image .*2\.jpg"):
        load_data(f"folder:{tmp_path / 'broken'}")
    with pytest.raises(SmoothcertError, match=r"not found"):
        load_data(f"folder:{tmp_path / 'absent'}")


# ---------------------------------------------------------------- specs, split, select

@pytest.mark.parametrize("spec, split, match", [
    ("mnist", "test", r"unknown data set.*digits, npz:PATH, cifar10:DIR, folder:DIR"),
    ("npz:", "test", r"needs a path"),
    ("digits:extra", "test", r"no argument"),
    ("digits", "val", r"split must be 'train' or 'test'"),
])
def test_bad_specs(spec, split, match):
    with pytest.raises(SmoothcertError, match=match):
        load_data(spec, split)


def _tiny(n):
    return Dataset(torch.zeros(n, 1), torch.zeros(n, dtype=torch.int64), ("0",), "tiny")


def test_select():
    ds = _tiny(10)
    assert select(ds) == list(range(10))
    assert select(ds, skip=3) == [0, 3, 6, 9]
    assert select(ds, skip=2, max_count=3, start=1) == [1, 3, 5]
    assert select(ds, max_count=100) == list(range(10))
    assert select(ds, indices=[7, 2, np.int64(9)]) == [7, 2, 9]


@pytest.mark.parametrize("kwargs, match", [
    ({"skip": 0}, r"skip"),
    ({"max_count": 0}, r"max_count"),
    ({"start": -1}, r"start"),
    ({"start": 10}, r"start 10 is out of range"),
    ({"indices": [1, 10]}, r"index 10 is out of range"),
    ({"indices": [3, 1, 3]}, r"index 3 is given twice"),
    ({"indices": []}, r"no input indices"),
    ({"indices": [-1]}, r"index -1 is out of range"),
    ({"indices": [1.5]}, r"not an integer"),
])
def test_select_errors(kwargs, match):
    with pytest.raises(SmoothcertError, match=match):
        select(_tiny(10), **kwargs)
