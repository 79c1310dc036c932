"""Issue 13, third round: what a red-team harness still found (notes/redteam13.py). Each hostile input gives one
line on stderr and exit 2 (or the promised result), within bounded memory, running no code and changing no file.
Hostile files are built small; memory is bounded by refusing before allocating, checked under an address-space
cap where a subprocess is needed."""
import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import torch

from conftest import certify_args, one_line_error, rows, tiny_cnn, without_time
from smoothcert import SmoothcertError
from smoothcert.cli import main
from smoothcert.analysis import load_results
from smoothcert.data import load_data
from smoothcert.files.columns import CERTIFY_COLUMNS, encode_counts
from smoothcert.files import ResultsWriter
from smoothcert.files.rows import MAX_LINE, parse_counts, parse_scores, read_table
from smoothcert.models import load_model, save_model
from smoothcert.models.pt2zip import JSON_BYTES_PER_CONTAINER, TEXT_CAP
from smoothcert.models.loading import MAX_STATIC_BATCH
from smoothcert.models.architectures import MAX_CLASSES, build

HERE = __file__.rsplit("/", 1)[0]


def run_cli(args, cwd, prelude="", timeout=120, memory_mb=None):
    """Run `smoothcert` (main(args)) in a subprocess after `prelude`; with `memory_mb`, under that address-space
    cap (RLIMIT_AS), so an input that makes it allocate past the cap fails. Returns the CompletedProcess."""
    limit = ""
    if memory_mb:
        limit = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory_mb << 20}, {memory_mb << 20}))\n")
    code = (f"import sys\nsys.path[:0] = {[f'{HERE}/..', HERE]!r}\n{prelude}\nfrom smoothcert.cli import main\n"
            f"{limit}sys.exit(main({[str(a) for a in args]!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def one_line(done) -> str:
    """The one stderr line of a refused command (exit 2, nothing else on stderr)."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("smoothcert "), done.stderr
    return lines[0]


# -- 1. Ray: an address that accepts and never answers ---------------------------------------------------------------
@pytest.mark.slow
def test_a_ray_address_that_never_answers_prints_only_our_line(tmp_path, model_pt2, npz_data):
    """Ray's C++ core logs 'Failed to connect to GCS ... within 5 seconds' to stderr for every try: with a deadline
    past 5 s, the error was one line among Ray's."""
    pytest.importorskip("ray")
    prelude = ("import socket\nserver = socket.socket()\nserver.bind(('127.0.0.1', 0))\nserver.listen(4)\n"
               "import smoothcert.distributed.cluster as cluster\ncluster.CONNECT_TIMEOUT = 7.0\n")
    args = certify_args(model_pt2, npz_data, tmp_path / "r.tsv", "--ray", "ADDRESS")
    code_args = repr(args).replace("'ADDRESS'", "f'127.0.0.1:{server.getsockname()[1]}'")
    code = (f"import sys\nsys.path[:0] = {[f'{HERE}/..', HERE]!r}\n{prelude}from smoothcert.cli import main\n"
            f"sys.exit(main({code_args}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "no Ray cluster answered at 127.0.0.1:" in one_line(done)
    assert not (tmp_path / "r.tsv").exists()


# -- 2. TorchScript files run code on load (__setstate__) and when run -----------------------------------------------
def test_a_torchscript_file_is_refused_without_trust_and_runs_nothing(tmp_path, npz_data, capsys):
    ts = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(tiny_cnn(), torch.zeros(2, 1, 4, 4)), str(ts))
    out = tmp_path / "r.tsv"
    line = one_line_error(capsys, main(certify_args(ts, npz_data, out)))
    assert "is a TorchScript file" in line and "--trust-model" in line and "save_model" in line and ".pt2" in line
    assert not out.exists()
    with pytest.raises(SmoothcertError, match="TorchScript"):
        load_model(str(ts))
    assert isinstance(load_model(str(ts), trust=True), torch.nn.Module)


def test_a_torchscript_file_whose_load_would_write_a_file_is_refused_before_loading(tmp_path, monkeypatch):
    """Refused before torch.jit.load is called at all (it unpickles the file's constants, running __setstate__)."""
    ts = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny_cnn()), str(ts))
    monkeypatch.chdir(tmp_path)
    called = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: called.append(a))
    with pytest.raises(SmoothcertError, match="TorchScript"):
        load_model(str(ts))
    assert not called


def test_a_file_that_is_neither_pt2_nor_torchscript_says_what_a_state_dict_needs(tmp_path, capsys, npz_data):
    weights = tmp_path / "w.pt"
    torch.save(tiny_cnn().state_dict(), weights)
    line = one_line_error(capsys, main(certify_args(weights, npz_data, tmp_path / "r.tsv")))
    assert "neither a torch.export program" in line and "--weights" in line


# -- 3. cifar10:DIR batches are pickles: only what a batch holds is unpickled ----------------------------------------
class _Payload:
    def __reduce__(self):
        return (open, ("PWNED", "w"))


def _cifar_batch(n=3):
    return {b"batch_label": b"testing batch 1 of 1", b"labels": list(range(n)),
            b"data": (np.arange(n * 3072) % 256).astype(np.uint8).reshape(n, 3072),
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_real_format_cifar_batch_loads_through_the_restricted_unpickler(tmp_path, protocol):
    """What a batch holds, as pickletools shows it: dict, list, bytes, int, and an array through numpy's
    _reconstruct (protocols 2-4; 2 also _codecs.encode for bytes) or _frombuffer (5), ndarray and dtype."""
    (tmp_path / "c").mkdir()
    with open(tmp_path / "c" / "test_batch", "wb") as f:
        pickle.dump(_cifar_batch(), f, protocol=protocol)
    ops = {arg for op, arg, _ in pickletools.genops((tmp_path / "c" / "test_batch").read_bytes())
           if op.name == "GLOBAL"}
    assert protocol != 2 or ops == {"numpy._core.multiarray _reconstruct", "numpy ndarray", "numpy dtype",
                                    "_codecs encode"}
    ds = load_data(f"cifar10:{tmp_path / 'c'}")
    assert ds.y.tolist() == [0, 1, 2] and ds.x[0, 0, 0, 5].item() == pytest.approx(5 / 255)


def test_a_python2_cifar_batch_names_numpy_core_and_loads(tmp_path):
    """The official files were written by Python 2's cPickle: numpy.core.multiarray._reconstruct, BINSTRINGs."""
    raw = pickle.dumps(_cifar_batch(), protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "test_batch").write_bytes(raw)
    assert load_data(f"cifar10:{tmp_path / 'c'}").y.tolist() == [0, 1, 2]


@pytest.mark.parametrize("payload", [_Payload(), {b"data": np.array([_Payload()], dtype=object)}])
def test_a_cifar_batch_that_names_anything_else_is_refused_and_runs_nothing(tmp_path, monkeypatch, payload):
    (tmp_path / "c").mkdir()
    batch = {**_cifar_batch(), b"labels": payload}
    (tmp_path / "c" / "test_batch").write_bytes(pickle.dumps(batch))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SmoothcertError, match=r"test_batch is refused: it names (builtins|io)\.open"):
        load_data(f"cifar10:{tmp_path / 'c'}")
    assert not (tmp_path / "PWNED").exists()


# -- 4. --weights: a zip bomb, a view that repeats one float, a layer of too many classes ---------------------------
def _deflated_bomb(path, megabytes):
    """A torch.save state dict whose storage record is rewritten as `megabytes` MiB of deflated zeros (a file of
    about megabytes KiB); built in 1 MiB chunks."""
    plain = path.with_suffix(".plain")
    torch.save({"8.bias": torch.zeros(4)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                bomb = zipfile.ZipInfo(info.filename)
                bomb.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(bomb, "w", force_zip64=True) as out:
                    for _ in range(megabytes):
                        out.write(bytes(1 << 20))
            else:
                dst.writestr(info, src.read(info))
    return path


def test_a_weights_zip_bomb_is_refused_before_inflating(tmp_path):
    bomb = _deflated_bomb(tmp_path / "w.pt", 64)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(SmoothcertError, match=r"weights .*w\.pt are refused: its entries inflate to 67,"):
        load_model("digits-cnn", str(bomb))


def test_weights_whose_tensor_repeats_one_float_are_refused_before_a_layer_is_built(tmp_path, monkeypatch):
    """A 200,000 x 64 stride-0 view of one float: num_classes read from it built Linear(64, 200,000) (at 2e7
    rows: 5 GB)."""
    weights = tmp_path / "w.pt"
    torch.save({"8.weight": torch.zeros(1).expand(200_000, 64)}, weights)
    assert weights.stat().st_size < 10_000
    built = []
    monkeypatch.setattr("smoothcert.models.loading.build", lambda *a, **k: built.append(k))
    with pytest.raises(SmoothcertError, match=r"tensor 8\.weight declares 12,800,000 elements .* over a storage of 4 "
                                              "bytes"):
        load_model("digits-cnn", str(weights))
    assert not built


def test_a_weights_file_of_more_classes_than_the_cap_is_refused_before_building(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.save({"8.weight": torch.zeros(MAX_CLASSES + 1, 1)}, weights)
    line = one_line_error(capsys, main(["certify", "--model", "digits-cnn", "--weights", str(weights), "--data",
                                        "digits", "--sigma", "0.25", "--max", "1", "--out", str(tmp_path / "r.tsv")]))
    assert "digits-cnn with 100,001 classes" in line and "at most 100,000" in line
    with pytest.raises(SmoothcertError, match="at most 100,000"):
        build("cifar-resnet20", num_classes=10 ** 9)


# -- 5. npz: a zip bomb ------------------------------------------------------------------------------------------------
def test_an_npz_zip_bomb_is_refused_before_np_load(tmp_path, monkeypatch):
    """x inflating to 128 MiB from a file of about 130 KB (the harness's: 1.5 GB from 1.5 MB)."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (32, 1 << 20)})
            for _ in range(128):
                f.write(bytes(1 << 20))
        zf.writestr("y.npy", _npy(np.zeros(32, np.int64)))
    assert path.stat().st_size < 1 << 20
    loaded = []
    monkeypatch.setattr(np, "load", lambda *a, **k: loaded.append(a))
    with pytest.raises(SmoothcertError, match=r"bomb\.npz is refused: its arrays inflate to 134,2.*\(100 times its size "
                                              r"plus 64 MiB"):
        load_data(f"npz:{path}")
    assert not loaded


def test_an_npz_array_header_declaring_more_than_its_member_is_refused(tmp_path, monkeypatch):
    """numpy allocates what the header declares before reading the data."""
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as zf:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10 ** 9, 3)})
        zf.writestr("x.npy", header.getvalue() + bytes(48))
        zf.writestr("y.npy", _npy(np.zeros(4, np.int64)))
    with pytest.raises(SmoothcertError, match=r"array 'x' declares shape \(1000000000, 3\) \(12,000,000,000 bytes\)"):
        load_data(f"npz:{path}")


def test_a_compressed_npz_of_real_data_still_loads(tmp_path):
    x = np.zeros((200, 1, 28, 28), np.float32)
    x[:, :, 10:18, 10:18] = 0.5                              # mostly zeros, as digits are: compresses ~60 times
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=np.arange(200) % 10)
    assert len(load_data(f"npz:{path}")) == 200


def _npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


# -- 6. folder: an image of too many pixels ---------------------------------------------------------------------------
def test_a_folder_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path, monkeypatch):
    """A 9000 x 9000 PNG is ~300 KB and under PIL's bomb limit, but 970 MB as float32 RGB. Here 4097 x 4096."""
    from PIL import Image
    (tmp_path / "d" / "a").mkdir(parents=True)
    Image.new("L", (4097, 4096)).save(tmp_path / "d" / "a" / "big.png")
    decoded = []
    monkeypatch.setattr(Image.Image, "convert", lambda *a, **k: decoded.append(a))
    with pytest.raises(SmoothcertError, match=r"big\.png is 4097x4096 pixels, over the 4096x4096"):
        load_data(f"folder:{tmp_path / 'd'}")
    assert not decoded


# -- 7. a .pt2 exported with a huge fixed batch -----------------------------------------------------------------------
def test_a_program_with_a_fixed_batch_over_the_cap_is_refused(tmp_path, capsys):
    """StaticBatch pads every chunk to the fixed batch: 10,000,000 rows of padding for one input."""
    path = tmp_path / "big_batch.pt2"
    program = torch.export.export(torch.nn.Linear(1, 3), (torch.zeros(MAX_STATIC_BATCH + 1, 1),))
    torch.export.save(program, str(path))
    with pytest.raises(SmoothcertError, match=r"fixed batch size of 65,537, over the 65,536 .*dynamic_shapes"):
        load_model(str(path))
    assert "fixed batch" not in capsys.readouterr().err          # refused, not warned about and then run
    small = tmp_path / "small_batch.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(1, 3), (torch.zeros(4, 1),)), str(small))
    assert load_model(str(small))(torch.zeros(9, 1)).shape == (9, 3)


# -- 9. results files: exact idx, bounded lines, streaming -----------------------------------------------------------
def test_idx_values_equal_as_float64_are_distinct_inputs(tmp_path):
    """2^62 - 1 and 2^62 - 2 round to one float64: analyze called them a duplicate."""
    path = tmp_path / "cohen.tsv"
    big = 2 ** 62
    path.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                    f"{big - 1}\t0\t0\t0.5\t1\t0.1\n{big - 2}\t1\t1\t0.25\t1\t0.1\n")
    results = load_results(path)
    assert results.idx.dtype == np.int64 and results.idx.tolist() == [big - 1, big - 2]
    with pytest.raises(SmoothcertError, match=r"line 3: input idx 4611686018427387903 appears again"):
        path.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                        f"{big - 1}\t0\t0\t0.5\t1\t0.1\n{big - 1}\t1\t1\t0.25\t1\t0.1\n")
        load_results(path)
    path.write_text(f"idx\tlabel\tpredict\tradius\tcorrect\ttime\n{2 ** 63}\t0\t0\t0.5\t1\t0.1\n")
    with pytest.raises(SmoothcertError, match=r"line 2: column 'idx' is beyond a 64-bit integer"):
        load_results(path)


# -- 8. a .pt2 program JSON of millions of tiny containers ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["dicts", "too long"])
def test_a_program_json_that_would_parse_into_gigabytes_is_refused_before_parsing(tmp_path, monkeypatch, kind):
    """11M empty dicts in 32 MiB of text took 1.2 GB to parse (under the old 32 MiB text cap). Here 1M dicts in
    3 MiB: over one container per 8 bytes; and 17 MiB of spaces: over the 16 MiB text cap (stored: a file of
    that size, written once)."""
    good, bad = tmp_path / "good.pt2", tmp_path / "bad.pt2"
    save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))
    body = b"[" + b"{}," * 1_000_000 + b"{}]" if kind == "dicts" else b"{}" + b" " * (17 << 20)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, body if info.filename.endswith("models/model.json") else src.read(info))
    parsed = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(a))
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: parsed.append(a))
    why = r"1,000,002 JSON objects and arrays in 3,000,004 bytes" if kind == "dicts" else r"over the 16 MiB"
    for trust in (False, True):                                  # a size bound: --trust-model does not lift it
        with pytest.raises(SmoothcertError, match=rf"models/model\.json .*{why}"):
            load_model(str(bad), trust=trust)
    assert not parsed


def test_real_programs_are_far_within_the_json_bounds(tmp_path):
    """The bounds' margin, measured: ResNet-20's program (ResNet-110's: 0.8 MB, one container per 38 bytes)."""
    path = tmp_path / "r20.pt2"
    save_model(build("cifar-resnet20"), str(path), torch.zeros(2, 3, 32, 32))
    with zipfile.ZipFile(path) as zf:
        program = next(zf.read(n) for n in zf.namelist() if n.endswith("models/model.json"))
    assert len(program) < TEXT_CAP / 50
    assert program.count(b"{") + program.count(b"[") < len(program) / (3 * JSON_BYTES_PER_CONTAINER)
    assert isinstance(load_model(str(path)), torch.nn.Module)


def _results_head(path, rows=12):
    """A certify file's header and `rows` rows of the right number of fields (read_table checks no more)."""
    with open(path, "w") as f:
        f.write("\t".join(CERTIFY_COLUMNS) + "\n")
        for i in range(rows):
            f.write("\t".join(str(i) for _ in CERTIFY_COLUMNS) + "\n")


def _peak_bytes(fn):
    """The most Python memory fn() had allocated at once (tracemalloc), and its SmoothcertError."""
    tracemalloc.start()
    try:
        with pytest.raises(SmoothcertError) as refused:
            fn()
        return tracemalloc.get_traced_memory()[1], str(refused.value)
    finally:
        tracemalloc.stop()


def test_a_refusal_at_line_14_does_not_read_the_rest_of_the_file(tmp_path):
    """48-128 MiB of empty lines peaked at 1.1-2.9 GB (the whole file read, then split). Here 32 MiB."""
    path = tmp_path / "x.tsv"
    _results_head(path)
    with open(path, "ab") as f:
        for _ in range(32):
            f.write(b"\n" * (1 << 20))
    peak, message = _peak_bytes(lambda: read_table(str(path), CERTIFY_COLUMNS))
    assert "x.tsv line 14: 1 fields where the header has" in message
    assert peak < 1 << 20, f"{peak:,} bytes allocated"


def test_a_line_over_the_cap_is_refused_naming_it_without_reading_past_the_cap(tmp_path):
    """One 96-256 MiB line (a counts cell of commas) peaked at 1.7-2.9 GB."""
    path = tmp_path / "x.tsv"
    _results_head(path, rows=2)
    with open(path, "ab") as f:
        for _ in range(MAX_LINE >> 20):
            f.write(b"," * (1 << 20))
        f.write(b",,\n")
    peak, message = _peak_bytes(lambda: read_table(str(path), CERTIFY_COLUMNS))
    assert message.endswith(f"x.tsv line 4 is longer than 16 MiB, which no results row is (dense counts of 100,000 "
                            "classes take under 6 MB); it is not read further")
    assert peak < 2 * MAX_LINE + (4 << 20), f"{peak:,} bytes allocated"


def test_a_counts_cell_of_more_items_than_classes_is_refused_before_splitting_it():
    commas = "," * (4 << 20)
    peak, message = _peak_bytes(lambda: parse_counts(commas, 10, 0, "x.tsv line 2", "counts"))
    assert message == "x.tsv line 2: counts lists more than the row's 10 classes" and peak < 1 << 20
    peak, message = _peak_bytes(lambda: parse_scores(commas, 10, 2, "x.tsv line 2", "scores"))
    assert message == "x.tsv line 2: scores lists more than the row's 10 classes" and peak < 1 << 20
    assert parse_counts("0:3,2:4", 3, 7, "x", "counts")[2] == 4


def test_a_dense_counts_row_of_100000_classes_fits_the_line_cap():
    counts = np.full(100_000, 10 ** 12, dtype=np.int64)      # every class, 13-digit counts: 2 such cells a row
    assert 2 * len(encode_counts(counts)) < MAX_LINE / 2


# -- 10. certify --out a user's file holding a half header -----------------------------------------------------------
def test_a_users_file_holding_idx_without_a_newline_is_refused_unchanged(tmp_path, model_pt2, npz_data, capsys):
    out = tmp_path / "r.tsv"
    out.write_text("idx")
    line = one_line_error(capsys, main(certify_args(model_pt2, npz_data, out, "--max", "2")))
    assert "not a complete results header" in line and out.read_text() == "idx"


@pytest.mark.parametrize("crash_at", ["fsync", "link"])
def test_a_crash_while_creating_the_file_leaves_no_half_header(tmp_path, model_pt2, npz_data, monkeypatch, crash_at):
    """The header is written to a temporary file and linked in place: a crash before the link leaves no results
    file (so refusing a half header never refuses a real resume), and the next run starts afresh."""
    out, full = tmp_path / "r.tsv", tmp_path / "full.tsv"

    def crash(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, crash_at, crash)
        with pytest.raises(KeyboardInterrupt):
            with ResultsWriter(str(out), CERTIFY_COLUMNS, {}) as writer:
                writer.write(dict.fromkeys(CERTIFY_COLUMNS, "0"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "model.pt2"]     # lock and temp file gone
    assert main(certify_args(model_pt2, npz_data, out, "--max", "3")) == 0
    assert main(certify_args(model_pt2, npz_data, full, "--max", "3")) == 0
    assert without_time(out) == without_time(full)


def test_a_file_that_appears_while_a_run_starts_is_not_replaced(tmp_path):
    out = tmp_path / "r.tsv"
    with ResultsWriter(str(out), CERTIFY_COLUMNS, {}) as writer:
        out.write_text("a user's file")
        with pytest.raises(SmoothcertError, match="created by something else"):
            writer.write(dict.fromkeys(CERTIFY_COLUMNS, "0"))
    assert out.read_text() == "a user's file"


def test_an_empty_file_is_taken_as_new(tmp_path, model_pt2, npz_data):
    out = tmp_path / "r.tsv"
    out.write_text("")                                             # mktemp's
    assert main(certify_args(model_pt2, npz_data, out, "--max", "2")) == 0
    assert len(rows(out)) == 2


def test_without_hard_links_the_file_is_still_created_exclusively(tmp_path, monkeypatch):
    out = tmp_path / "r.tsv"

    def no_links(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with ResultsWriter(str(out), CERTIFY_COLUMNS, {}) as writer:
        writer.write(dict.fromkeys(CERTIFY_COLUMNS, "0"))
    assert out.read_text().splitlines() == ["\t".join(CERTIFY_COLUMNS), "\t".join("0" for _ in CERTIFY_COLUMNS)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.tsv"]
