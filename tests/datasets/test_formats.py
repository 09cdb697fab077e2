"""Every built-in dataset's on-disk format, proven without the real data: small synthetic files written in the exact
format (IDX, gzipped and not; CIFAR's pickled batches; SVHN's MATLAB files) in torchvision's layout, read by ablate
and by torchvision's own dataset class — the two must give identical arrays. Then each kind of damage is one error
naming the file."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision.datasets as tv

from ablate import datasets
from ablate.errors import AblateError

TRAIN, TEST = 30, 10  # 30: five CIFAR batches of 6
RNG = np.random.default_rng(0)


def _idx(array: np.ndarray) -> bytes:
    """The IDX format: two zero bytes, 0x08 (unsigned bytes), the number of dimensions, each dimension big-endian."""
    return bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def _write_idx(folder: Path, files: tuple[str, ...], classes: int, first_label: int = 0) -> dict[str, np.ndarray]:
    """Both forms torchvision leaves: the .gz it downloads (ablate reads it first) and the file it extracts (its own
    class reads that) — so the comparison also proves the gzipped and plain readings agree."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for (role, file), n in zip(zip(datasets.ROLES, files), (TRAIN, TRAIN, TEST, TEST)):
        if role.endswith("images"):
            array = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        else:
            array = RNG.integers(first_label, first_label + classes, n).astype(np.uint8)
        (folder / file).write_bytes(_idx(array))
        (folder / f"{file}.gz").write_bytes(gzip.compress(_idx(array)))
        arrays[role] = array
    return arrays


def _small(swap_dataset, name: str) -> None:
    """The registered dataset with the synthetic sizes, so that read_arrays and check_data accept the small files."""
    swap_dataset(dataclasses.replace(datasets.get(name), train_size=TRAIN, test_size=TEST))


def _ours(swap_dataset, name: str, root: Path) -> dict[str, np.ndarray]:
    _small(swap_dataset, name)
    datasets.check_data(name, root)  # shapes, sizes and label range as a run checks them
    return datasets.read_arrays(name, root)


@pytest.mark.parametrize(
    "name, torchvision_class", [("mnist", tv.MNIST), ("fashion-mnist", tv.FashionMNIST), ("kmnist", tv.KMNIST)]
)
def test_the_mnist_family_reads_as_torchvision_reads_it(tmp_path, monkeypatch, swap_dataset, name, torchvision_class):
    _write_idx(tmp_path / torchvision_class.__name__ / "raw", datasets.get("mnist").files, classes=10)
    ours = _ours(swap_dataset, name, tmp_path)
    for train in (True, False):
        theirs = torchvision_class(str(tmp_path), train=train, download=False)
        split = "train" if train else "test"
        np.testing.assert_array_equal(ours[f"{split}_images"][:, 0], theirs.data.numpy())
        np.testing.assert_array_equal(ours[f"{split}_labels"], theirs.targets.numpy())
    assert datasets.get(name).class_names == tuple(torchvision_class.classes) or name == "mnist"  # MNIST: '0' … '9'


@pytest.mark.parametrize("split", ["balanced", "letters", "digits"])
def test_emnist_reads_as_torchvision_reads_it_turned_upright(tmp_path, monkeypatch, swap_dataset, split):
    """EMNIST's files hold each image transposed; torchvision returns them so, ablate upright: ours are theirs
    transposed. Letters are numbered 1…26 in the files (torchvision keeps an 'N/A' class 0): ours count from 0."""
    classes = len(tv.EMNIST.classes_split_dict[split]) - (split == "letters")
    _write_idx(
        tmp_path / "EMNIST" / "raw", datasets.get(f"emnist-{split}").files, classes, first_label=int(split == "letters")
    )
    ours = _ours(swap_dataset, f"emnist-{split}", tmp_path)
    shift = 1 if split == "letters" else 0
    for train in (True, False):
        theirs = tv.EMNIST(str(tmp_path), split=split, train=train, download=False)
        part = "train" if train else "test"
        np.testing.assert_array_equal(ours[f"{part}_images"][:, 0], theirs.data.numpy().transpose(0, 2, 1))
        np.testing.assert_array_equal(ours[f"{part}_labels"], theirs.targets.numpy() - shift)
    names = tv.EMNIST.classes_split_dict[split][shift:]
    assert datasets.get(f"emnist-{split}").class_names == tuple(names)


def _py2_str(text: bytes) -> bytes:
    """A Python 2 str as cPickle writes it: SHORT_BINSTRING, or BINSTRING from 256 bytes."""
    return (b"U" + bytes([len(text)]) if len(text) < 256 else b"T" + struct.pack("<i", len(text))) + text


def _py2_int(k: int) -> bytes:
    return b"J" + struct.pack("<i", k)  # BININT


def _py2_array(array: np.ndarray) -> bytes:
    """A uint8 ndarray as numpy under Python 2 pickled it: numpy.core.multiarray._reconstruct (the module path numpy 2
    renamed), then the state (version, shape, dtype, Fortran order, the bytes as a str)."""
    dtype = (
        b"cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + _py2_int(0)
        + _py2_int(1)
        + b"\x87R("
        + _py2_int(3)
        + _py2_str(b"|")
        + b"NNN"
        + _py2_int(-1)
        + _py2_int(-1)
        + _py2_int(0)
        + b"tb"
    )
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + _py2_int(0)
        + b"\x85"
        + _py2_str(b"b")
        + b"\x87R("
        + _py2_int(1)
        + shape
        + dtype
        + b"\x89"
        + _py2_str(array.tobytes())
        + b"tb"
    )


def _py2_pickle(entry: dict) -> bytes:
    """What the CIFAR files are: a dict pickled by Python 2's cPickle (protocol 2), written opcode by opcode since
    Python 3 pickles byte strings and arrays differently; lists hold ints or strs."""

    def value(v) -> bytes:
        if isinstance(v, np.ndarray):
            return _py2_array(v)
        if isinstance(v, str):
            return _py2_str(v.encode())
        return b"](" + b"".join(_py2_int(x) if isinstance(x, int) else _py2_str(x.encode()) for x in v) + b"e"

    return b"\x80\x02}(" + b"".join(_py2_str(k.encode()) + value(v) for k, v in entry.items()) + b"u."


def _write_cifar(
    folder: Path,
    train_files: tuple[str, ...],
    test_file: str,
    label_key: str,
    classes: int,
    meta: tuple[str, str, tuple[str, ...]],
    python2: bool = True,
) -> None:
    """Pickled dicts as the originals hold them: `data` N × 3072 uint8 (channel-major rows), labels a list — pickled
    by Python 2 as the published files are, or by Python 3 as a re-saved copy would be."""
    dumps = _py2_pickle if python2 else lambda entry: pickle.dumps(entry, protocol=2)
    folder.mkdir(parents=True)
    for name in (*train_files, test_file):
        n = TRAIN // len(train_files) if name != test_file else TEST
        batch = {
            "batch_label": name,
            "data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: RNG.integers(0, classes, n).tolist(),
            "filenames": [f"{k}.png" for k in range(n)],
        }
        (folder / name).write_bytes(dumps(batch))
    file, key, names = meta
    (folder / file).write_bytes(dumps({key: list(names)}))


@pytest.mark.parametrize(
    "name, torchvision_class, folder, train_files, test_file, label_key, meta",
    [
        (
            "cifar10",
            tv.CIFAR10,
            "cifar-10-batches-py",
            tuple(f"data_batch_{k}" for k in range(1, 6)),
            "test_batch",
            "labels",
            ("batches.meta", "label_names"),
        ),
        ("cifar100", tv.CIFAR100, "cifar-100-python", ("train",), "test", "fine_labels", ("meta", "fine_label_names")),
    ],
)
@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickles", "python3-pickles"])
def test_cifar_reads_as_torchvision_reads_it(
    tmp_path,
    monkeypatch,
    swap_dataset,
    name,
    torchvision_class,
    folder,
    train_files,
    test_file,
    label_key,
    meta,
    python2,
):
    dataset = datasets.get(name)
    _write_cifar(
        tmp_path / folder, train_files, test_file, label_key, dataset.classes, (*meta, dataset.class_names), python2
    )
    monkeypatch.setattr(torchvision_class, "_check_integrity", lambda self: True)  # md5s of the real files
    monkeypatch.setattr(tv.cifar, "check_integrity", lambda *args: True)
    ours = _ours(swap_dataset, name, tmp_path)
    for train in (True, False):
        theirs = torchvision_class(str(tmp_path), train=train, download=False)
        split = "train" if train else "test"
        np.testing.assert_array_equal(ours[f"{split}_images"], theirs.data.transpose(0, 3, 1, 2))  # theirs: N H W C
        np.testing.assert_array_equal(ours[f"{split}_labels"], np.array(theirs.targets))
        assert tuple(theirs.classes) == dataset.class_names


def _write_svhn(folder: Path) -> None:
    """MATLAB files as the originals: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    folder.mkdir(parents=True)
    for file, n, compressed in (("train_32x32.mat", TRAIN, True), ("test_32x32.mat", TEST, False)):  # both kinds
        labels = RNG.integers(1, 11, (n, 1)).astype(np.uint8)
        labels[0] = 10
        scipy.io.savemat(
            str(folder / file),
            {"X": RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": labels},
            do_compression=compressed,
        )


def test_svhn_reads_as_torchvision_reads_it(tmp_path, monkeypatch, swap_dataset):
    _write_svhn(tmp_path / "SVHN")
    monkeypatch.setattr(tv.SVHN, "_check_integrity", lambda self: True)
    ours = _ours(swap_dataset, "svhn", tmp_path)
    for split in ("train", "test"):
        theirs = tv.SVHN(str(tmp_path / "SVHN"), split=split, download=False)
        np.testing.assert_array_equal(ours[f"{split}_images"], theirs.data)
        np.testing.assert_array_equal(ours[f"{split}_labels"], theirs.labels)
    assert ours["train_labels"][0] == 0  # the files' 10


# Damage: one AblateError naming the file and what to do, for every way a download goes wrong.


def _mnist_folder(tmp_path: Path, swap_dataset) -> Path:
    folder = tmp_path / "MNIST" / "raw"
    _write_idx(folder, datasets.get("mnist").files, classes=10)
    for file in datasets.get("mnist").files:
        (folder / file).unlink()  # the gzipped files only, as downloaded
    _small(swap_dataset, "mnist")
    return folder


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda raw: gzip.compress(raw)[:200], "damaged (EOFError"),
        (lambda raw: gzip.compress(b"\x00\x00\x0c\x03" + raw[4:]), "does not start as an IDX file"),  # floats
        (lambda raw: gzip.compress(b"\x1f\x8b" + raw[2:]), "does not start as an IDX file"),  # gzipped twice, say
        (lambda raw: gzip.compress(raw[:-5]), "where its header promises"),
        (lambda raw: b"not gzip at all", "damaged (BadGzipFile"),
    ],
)
def test_a_damaged_idx_file_is_named(tmp_path, monkeypatch, swap_dataset, damage, says):
    folder = _mnist_folder(tmp_path, swap_dataset)
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(damage(gzip.decompress(target.read_bytes())))
    with pytest.raises(AblateError, match=re.escape(says)) as info:
        datasets.check_data("mnist", tmp_path)
    assert str(target.resolve()) in str(info.value) and "download it again" in str(info.value)


def test_labels_out_of_range_and_wrong_counts_are_named(tmp_path, monkeypatch, swap_dataset):
    folder = _mnist_folder(tmp_path, swap_dataset)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.full(TEST, 12, dtype=np.uint8))))
    with pytest.raises(AblateError, match=r"MNIST's test files in .* hold labels outside 0…9"):
        datasets.check_data("mnist", tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(TEST - 1, dtype=np.uint8))))
    with pytest.raises(AblateError, match=r"10 images and 9 labels, not 10 of each"):
        datasets.check_data("mnist", tmp_path)


def test_a_damaged_or_tampered_cifar_batch_is_named_and_never_executed(tmp_path, monkeypatch, swap_dataset):
    folder = tmp_path / "cifar-10-batches-py"
    data = datasets.get("cifar10")
    _write_cifar(
        folder,
        tuple(f"data_batch_{k}" for k in range(1, 6)),
        "test_batch",
        "labels",
        10,
        ("batches.meta", "label_names", data.class_names),
    )
    _small(swap_dataset, "cifar10")
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:300])
    with pytest.raises(AblateError, match=r"data_batch_3 is damaged \((UnpicklingError|EOFError)"):
        datasets.check_data("cifar10", tmp_path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    batch.write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))
    with pytest.raises(AblateError, match=r"data_batch_3 is damaged \(UnpicklingError: it asks to build"):
        datasets.check_data("cifar10", tmp_path)
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "file, damage",
    [
        ("test_32x32.mat", lambda raw: raw[:500]),  # truncated
        ("train_32x32.mat", lambda raw: raw[:-100]),  # a compressed one, truncated
        ("test_32x32.mat", lambda raw: b"<html>503 Service Unavailable</html>"),  # a proxy's page saved as the file
        ("test_32x32.mat", lambda raw: raw.replace(b"\x00X\x00", b"\x00Z\x00", 1)),  # no X: not an SVHN file
    ],
)
def test_a_damaged_svhn_file_is_named(tmp_path, monkeypatch, swap_dataset, file, damage):
    _write_svhn(tmp_path / "SVHN")
    _small(swap_dataset, "svhn")
    target = tmp_path / "SVHN" / file
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(AblateError, match=f"{target.resolve()} is damaged") as info:
        datasets.check_data("svhn", tmp_path)
    assert "download it again" in str(info.value)


@pytest.mark.parametrize(
    "name, listed",
    [
        ("fashion-mnist", "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"),
        ("emnist-letters", "emnist-letters-train-images-idx3-ubyte.gz, emnist-letters-train-labels-idx1-ubyte.gz"),
        ("cifar10", "data_batch_1, data_batch_2"),
        ("cifar100", "files train, test there"),
        ("svhn", "train_32x32.mat, test_32x32.mat"),
    ],
)
def test_missing_files_without_a_network_name_the_files_and_leave_no_folder(
    tmp_path, monkeypatch, swap_dataset, name, listed
):
    def offline(root):
        (Path(root) / datasets.get(name).folder).mkdir(parents=True, exist_ok=True)  # as a download starts
        raise OSError("Temporary failure in name resolution")

    swap_dataset(dataclasses.replace(datasets.get(name), download=offline))
    with pytest.raises(AblateError) as info:
        datasets.check_data(name, tmp_path / "data")
    message = str(info.value)
    assert f"is not in {(tmp_path / 'data' / datasets.get(name).folder).resolve()}" in message
    assert listed in message and "could not be downloaded (OSError" in message
    assert not (tmp_path / "data").exists()
