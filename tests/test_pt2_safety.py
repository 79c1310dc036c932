"""A .pt2 from someone else (issues 6 and 13): loading it runs no code and allocates nothing past stated bounds,
whatever the archive holds and however its zip is bent; every .pt2 that train and torch.export write still loads.
Each hostile file is small and made here from a real one."""
import importlib
import importlib.util
import io
import json
import os
import re
import resource
import struct
import sys
import time
import zipfile
import zlib

import pytest
import torch
from torch import nn

from conftest import WithConstant, certify_args, one_line_error, tiny_cnn
from smoothcert import SmoothcertError
from smoothcert.cli import main
from smoothcert.models import load_model, save_model

FAST = 10            # seconds: every refusal here takes well under one; the attacks took 45 s or never ended


def refused(capsys, npz_data, bad, *extra):
    """Certify with `bad` as the model: one line, exit 2, soon, nothing written, and little memory taken."""
    out = bad.parent / "r.tsv"
    peak, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    line = one_line_error(capsys, main(certify_args(bad, npz_data, out, *extra)))
    assert time.perf_counter() - start < FAST and not out.exists()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 300_000, "it allocated 300 MB or more"
    return line


# -- pickles and programs that would run code -----------------------------------------------------------------
class Payload:
    """Unpickling it creates `path`: the proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rewrite(src, dst, edit):
    """Copy a zip archive, passing every (name, bytes) through edit(name, data) -> bytes; edit may add entries."""
    extra = {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename), extra))
        for name, data in extra.items():
            zout.writestr(name, data)


def _crafted(tmp_path, kind):
    """A real .pt2 of a small CNN, with one entry replaced by a pickle whose unpickling creates a file."""
    good, bad, marker = tmp_path / "good.pt2", tmp_path / f"evil_{kind}.pt2", tmp_path / f"PWNED_{kind}"
    save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))
    payload = _pickled(Payload(marker))

    def edit(name, data, extra):
        prefix = name.split("/")[0]
        if kind == "inputs" and name.endswith("data/sample_inputs/model.pt"):
            return payload
        if kind in ("weights", "constants") and name.endswith(f"model_{kind}_config.json"):
            config = json.loads(data)
            entry = "weight_evil" if kind == "weights" else "tensor_evil"
            if kind == "weights":
                first = next(iter(config["config"]))
                config["config"][first].update(use_pickle=True, path_name=entry)
            else:
                config["config"]["lifted_evil"] = {"path_name": entry, "is_param": False, "use_pickle": True,
                                                   "tensor_meta": None}
            extra[f"{prefix}/data/{kind}/{entry}"] = payload
            return json.dumps(config).encode()
        if kind == "opaque" and name.endswith("model_constants_config.json"):
            config = json.loads(data)
            config["config"]["opaque_evil"] = {"path_name": "opaque_obj_evil", "is_param": False, "use_pickle": True,
                                               "tensor_meta": None}
            import pickle
            extra[f"{prefix}/data/constants/opaque_obj_evil"] = pickle.dumps(Payload(marker))
            return json.dumps(config).encode()
        return data

    _rewrite(good, bad, edit)
    return bad, marker


@pytest.mark.parametrize("kind", ["inputs", "weights", "constants", "opaque"])
def test_a_crafted_pt2_is_refused_and_runs_no_code(tmp_path, npz_data, capsys, kind):
    bad, marker = _crafted(tmp_path, kind)
    out = tmp_path / "r.tsv"
    line = one_line_error(capsys, main(certify_args(bad, npz_data, out)))
    assert not marker.exists(), "unpickling the archive ran code"
    assert "--trust-model" in line and "could run code" in line and not out.exists()


EVIL_MODULE = "import pathlib\npathlib.Path({marker!r}).write_text('imported')\nclass X:\n    a = 1\n"


def _crafted_program(tmp_path, kind):
    """A real .pt2 whose program JSON makes torch.export.load (or the loaded module) run code without any pickle:
    a symbolic shape that sympify evaluates, a pytree context that imports a module, guard code that is compiled,
    or a node that calls a function outside torch's operators."""
    good, bad, marker = tmp_path / "good.pt2", tmp_path / f"evil_{kind}.pt2", tmp_path / f"PWNED_{kind}"
    save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))
    (tmp_path / "evilmod.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    write = f"__import__('pathlib').Path({str(marker)!r}).write_text('eval')"

    def edit(name, data, extra):
        if not name.endswith("models/model.json"):
            return data
        text = data.decode()
        if kind == "sympify":
            symbol = re.search(r"Symbol\('s\d+', positive=True, integer=True\)", text).group()
            return text.replace(symbol, f"({write}, {symbol})[1]").encode()
        program = json.loads(text)
        if kind == "enum":
            call = program["graph_module"]["module_call_graph"][0]["signature"]
            spec = json.loads(call["in_spec"])
            spec[1]["children_spec"][1]["context"] = json.dumps(["x"])
            spec[1]["children_spec"][1]["children_spec"] = [
                {"type": "builtins.tuple", "context": json.dumps({"__enum__": True, "fqn": "evilmod:X", "name": "a"}),
                 "children_spec": []}]
            call["in_spec"] = json.dumps(spec)
        elif kind == "guards":
            program["guards_code"] = [f"{write} is None"]
        elif kind == "target":
            node = program["graph_module"]["graph"]["nodes"][0]
            node["target"] = "torch.serialization.save"
        return json.dumps(program).encode()

    _rewrite(good, bad, edit)
    return bad, marker


@pytest.mark.parametrize("kind", ["sympify", "enum", "guards", "target"])
def test_a_pt2_whose_program_would_run_code_is_refused_and_runs_none(tmp_path, npz_data, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)                  # where evilmod.py lies, as a factory's folder would be
    monkeypatch.syspath_prepend(str(tmp_path))
    bad, marker = _crafted_program(tmp_path, kind)
    out = tmp_path / "r.tsv"
    line = one_line_error(capsys, main(certify_args(bad, npz_data, out)))
    assert not marker.exists(), "loading the program ran code"
    assert "--trust-model" in line and "could run code" in line and not out.exists()


def test_a_module_import_during_a_pt2_load_is_refused_behind_the_json_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    bad, marker = _crafted_program(tmp_path, "enum")
    monkeypatch.setattr("smoothcert.models.pt2check.check_program_json", lambda name, raw: None)   # the first line down
    with pytest.raises(SmoothcertError, match="imports the module 'evilmod'"):
        load_model(str(bad))
    assert not marker.exists()


def test_trust_model_lets_a_pickled_archive_load(tmp_path):
    """With --trust-model torch's own loader runs unrestricted: the payload runs, which is what trust means."""
    bad, marker = _crafted(tmp_path, "inputs")
    with pytest.raises(Exception):
        load_model(str(bad), trust=True)       # torch then rejects the int the payload returned...
    assert marker.exists()                     # ...but only after running it


class Reshaping(nn.Module):
    """Three dynamic dimensions and shapes computed from them (b*h*w, 2*b, w % 3 + 1, h // 2). Exports whose
    shapes need guard code (slicing by h // 2, say) are still refused without --trust-model: torch compiles it."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

    def forward(self, x):
        b = x.shape[0]
        y = torch.cat([self.pool(self.conv(x)).reshape(b, -1)] * 2)[:b]
        return self.head(y) * (x.shape[3] % 3 + 1) + x.reshape(b, -1).mean() + x.shape[2] // 2


@pytest.mark.parametrize("make", ["train", "dynamic", "fixed", "constant", "resnet", "symbolic"])
def test_every_pt2_that_train_and_torch_export_write_still_loads(tmp_path, make):
    path = tmp_path / "m.pt2"
    if make == "train":
        assert main(["train", "--arch", "digits-cnn", "--data", "digits", "--sigma", "0.25", "--epochs", "1",
                     "--out", str(path)]) == 0
        x = torch.rand(5, 1, 8, 8)
    else:
        model = {"constant": WithConstant, "resnet": lambda: load_model("cifar-resnet20", _weights(tmp_path)),
                 "symbolic": Reshaping}.get(make, tiny_cnn)().eval()
        x = {"resnet": torch.rand(5, 3, 32, 32), "symbolic": torch.rand(5, 1, 8, 10)}.get(make, torch.rand(5, 1, 4, 4))
        dims = {0: torch.export.Dim("batch")} if make != "fixed" else None
        if make == "symbolic":
            dims.update({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO})
        program = torch.export.export(model, (x[:2] if make == "fixed" else x,),
                                      dynamic_shapes=(dims,) if dims else None)
        torch.export.save(program, str(path))
    loaded = load_model(str(path))
    assert loaded(x).shape[0] == 5
    if make not in ("train", "fixed"):
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    if make == "symbolic":
        other = torch.rand(3, 1, 12, 9)                            # every dynamic dimension changed
        assert torch.allclose(loaded(other), model(other), atol=1e-6)
        exprs = set(re.findall(r'"expr_str": "([^"]*)"', _program_text(path)))
        assert any("FloorDiv" in e for e in exprs) and any("Mod" in e for e in exprs) and len(exprs) >= 6


def _program_text(path) -> str:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("models/model.json"))).decode()


def _weights(tmp_path):
    path = tmp_path / "w.pt"
    torch.manual_seed(0)
    from smoothcert.models import build
    torch.save(build("cifar-resnet20").state_dict(), path)
    return str(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", os.urandom(2000)])
def test_a_broken_pt2_gives_one_line_and_no_torch_traceback(tmp_path, npz_data, capsys, content):
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(content)
    line = one_line_error(capsys, main(certify_args(bad, npz_data, tmp_path / "r.tsv")))
    assert "broken.pt2" in line


def test_a_truncated_real_pt2_gives_one_line(tmp_path, model_pt2, npz_data, capsys):
    bad = tmp_path / "cut.pt2"
    bad.write_bytes(model_pt2.read_bytes()[:3000])
    one_line_error(capsys, main(certify_args(bad, npz_data, tmp_path / "r.tsv")))


# -- item 1: the entries torch reads, all of them, read as torch reads them -------------------------------------
def _rename(src, dst, old, new):
    """Copy an archive with entry `old` (a suffix of its name) named `new` instead."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            name = info.filename[:-len(old)] + new if info.filename.endswith(old) else info.filename
            zout.writestr(name, zin.read(info.filename))


@pytest.mark.parametrize("name", ["models/model.jsoN", "models/model.JSON", "models/model_json"])
def test_a_program_under_another_suffix_is_checked_all_the_same(tmp_path, npz_data, capsys, name):
    """torch loads every entry under models/ as a program, whatever its suffix (it cuts five characters off)."""
    evil, marker = _crafted_program(tmp_path, "sympify")
    bad = tmp_path / "renamed.pt2"
    _rename(evil, bad, "models/model.json", name)
    line = refused(capsys, npz_data, bad)
    assert not marker.exists(), "the renamed program ran code"
    assert name in line and "--trust-model" in line


@pytest.mark.parametrize("entry, why", [("notes.txt", "not part of a torch.export program"),
                                        ("models/second.json", "load as a program"),
                                        ("data/aotinductor/model/model.so", "compiled code"),
                                        ("data/weights/model.pt", "not part of a torch.export program"),
                                        ("code/x.debug_pkl", "not part of a torch.export program")])
def test_an_entry_torch_export_does_not_write_is_refused(tmp_path, npz_data, capsys, entry, why):
    good, bad = tmp_path / "good.pt2", tmp_path / "extra.pt2"
    save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))
    _with_entry(good, bad, entry, _pickled(torch.zeros(2)) if entry.endswith(".pt") else b"{}")
    line = refused(capsys, npz_data, bad)
    assert entry in line and why in line and "--trust-model" in line


def _headers(data: bytes, name: str) -> tuple[int, int]:
    """Offsets of entry `name`'s local header and of its central-directory header."""
    local, at = zipfile.ZipFile(io.BytesIO(data)).getinfo(name).header_offset, data.rindex(b"PK\x05\x06")
    at = struct.unpack("<I", data[at + 16:at + 20])[0]
    while data[at:at + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", data[at + 28:at + 34])
        if data[at + 46:at + 46 + n] == name.encode():
            return local, at
        at += 46 + n + m + k
    raise KeyError(name)


def _patched(data: bytes, name: str, **fields) -> bytes:
    """Set header fields of entry `name` in both its headers: flags, method, crc, size (inflated), and
    local_name (its local header's name only) or body (bytes written over its data)."""
    out, (local, central) = bytearray(data), _headers(data, name)
    offsets = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "crc": (14, 16, "<I"), "size": (22, 24, "<I")}
    for field, value in fields.items():
        if field in offsets:
            lo, co, fmt = offsets[field]
            struct.pack_into(fmt, out, local + lo, value)
            struct.pack_into(fmt, out, central + co, value)
    n, m = struct.unpack("<HH", data[local + 26:local + 30])
    if "local_name" in fields:
        out[local + 30:local + 30 + n] = fields["local_name"].encode()
    if "body" in fields:
        out[local + 30 + n + m:local + 30 + n + m + len(fields["body"])] = fields["body"]
    return bytes(out)


def _with_entry(src, dst, entry, body=b"{}"):
    """Copy an archive with one entry added (under its root folder); the added entry's full name."""
    root = zipfile.ZipFile(src).namelist()[0].split("/")[0]
    _rewrite(src, dst, lambda name, data, extra: extra.update({f"{root}/{entry}": body}) or data)
    return f"{root}/{entry}"


BENT = {"local name": "has a local header that names another", "encrypted": "is encrypted",
        "method": "compressed with method 99", "crc": "fails its CRC check", "duplicate": "two entries named",
        "case": "two entries named", "prepended": "not where and what its end record says",
        "appended": "directory ends the file", "outside the root": "under one folder"}


@pytest.mark.parametrize("kind", list(BENT))
def test_an_entry_that_cannot_be_read_alike_is_refused_and_never_skipped(tmp_path, npz_data, capsys, kind):
    """The archive holds a program that runs code (a sympify payload) and an entry that Python's zipfile cannot
    read, or that torch's reader (miniz: it ignores case, and reads what the end record points to) could read
    otherwise. The check used to stop at the first unreadable entry and pass, and read only names ending .json:
    an evil MODELS/MODEL.JSON before the clean program was what torch loaded."""
    evil, marker = _crafted_program(tmp_path, "sympify")
    good, bad, text = tmp_path / "good.pt2", tmp_path / "bent.pt2", "[1, 2, 3]"
    if kind in ("duplicate", "case", "outside the root"):
        with zipfile.ZipFile(good) as z, zipfile.ZipFile(bad, "w") as out:
            root, program = z.namelist()[0].split("/")[0], _program_text(evil)
            twin = {"duplicate": f"{root}/models/model.json", "case": f"{root}/MODELS/MODEL.JSON",
                    "outside the root": "other/models/model.json"}[kind]
            for info in z.infolist():
                if info.filename.endswith("models/model.json"):
                    out.writestr(twin, program)          # the evil twin first, then the clean program
                out.writestr(info.filename, z.read(info))
        data = bad.read_bytes()
    else:
        name = _with_entry(evil, bad, "extra/notes.json", text.encode())
        data = bad.read_bytes()
        if kind == "local name":
            data = _patched(data, name, local_name=name.replace("notes", "nopes"))
        elif kind in ("encrypted", "method", "crc"):
            data = _patched(data, name, **{"encrypted": {"flags": 1}, "method": {"method": 99},
                                           "crc": {"crc": zlib.crc32(text.encode()) ^ 1}}[kind])
        elif kind == "prepended":
            data = bytes(64) + data
        else:
            data = data + b"PK\x05\x06" + bytes(30)
    bad.write_bytes(data)
    line = refused(capsys, npz_data, bad)
    assert not marker.exists(), "the program ran code"
    assert f"cannot load {bad}" in line and BENT[kind] in line


# -- item 2: bounded cost -------------------------------------------------------------------------------------
def _with_expression(tmp_path, expr: str, where: str = "expr_str"):
    """A real .pt2 whose first symbolic shape is `expr` (or, for where='range', with a shape symbol `expr`)."""
    good, bad = tmp_path / "good.pt2", tmp_path / "costly.pt2"
    save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))

    def edit(name, data, extra):
        if not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        if where == "range":
            program["range_constraints"][expr] = {"min_val": 0, "max_val": None}
            return json.dumps(program).encode()
        text = json.dumps(program)
        first = re.search(r'"expr_str": ("[^"]*")', text)
        return (text[:first.start(1)] + json.dumps(expr) + text[first.end(1):]).encode()

    _rewrite(good, bad, edit)
    return bad


COSTLY = ["2**2**40", "9**9**9", "1e999999999", "Pow(Integer(2), Integer(1099511627776))",
          "LShift(Integer(1), Integer(10000000000))", "Float('1.5', precision=1000000000)",
          "Integer(" + "9" * 5000 + ")", "Pow(" * 6 + "Integer(99)" + ", Integer(64))" * 6,
          "Add(" * 300 + "Integer(1)" + ")" * 300]


@pytest.mark.parametrize("expr", COSTLY, ids=["tower-2-2-40", "tower-9-9-9", "float-1e999999999", "pow-2-2e40",
                                             "lshift-1e10", "precision-1e9", "integer-5000-digits", "pow-of-pow",
                                             "nested-300"])
def test_a_symbolic_shape_that_costs_without_bound_is_refused_fast(tmp_path, npz_data, capsys, expr):
    line = refused(capsys, npz_data, _with_expression(tmp_path, expr))
    assert "symbolic shape" in line and "--trust-model" in line


def test_a_shape_symbol_whose_number_torch_counts_up_to_is_refused_fast(tmp_path, npz_data, capsys):
    """torch steps a counter once per unit of an unbacked symbol's number (u999999999999: never ends)."""
    line = refused(capsys, npz_data, _with_expression(tmp_path, "u999999999999", where="range"))
    assert "u999999999999" in line and "--trust-model" in line


def test_the_expression_check_parses_and_never_evaluates():
    from smoothcert.models.pt2check import safe_expression
    assert all(not safe_expression(e) for e in COSTLY)
    for real in ["Symbol('s77', positive=True, integer=True)", "Mul(Integer(2), Symbol('s0', positive=True, "
                 "integer=True))", "Add(FloorDiv(Symbol('s53', positive=True, integer=True), Integer(2)), Integer(1))",
                 "Max(Integer(2), Symbol('s0', positive=True, integer=True))", "Pow(Symbol('s0', integer=True), "
                 "Integer(2))", "Float('0.5', precision=53)", "Rational(1, 2)", "2*s0", "s0 + 1", "s0**2",
                 "Mod(s1, 3)", "StrictLessThan(Symbol('u0', integer=True), Integer(3))", "-int_oo"]:
        assert safe_expression(real), real
    for unsafe in ["__import__('os').system('x') or Symbol('s0')", "s0.__class__", "Symbol('x; import os')",
                   "Integer(2)[0]", "lambda: 1", "s0 if s0 else 1", "Pow(s0, s1)", "factorial(s0)"]:
        assert not safe_expression(unsafe), unsafe


def _zeros_deflated(mib: int) -> bytes:
    """A raw deflate stream of `mib` MiB of zeros, about 1 KB per MiB, made without holding the zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)) * mib + b"\x03\x00"


def _bomb(tmp_path, target: str, mib: int, declared: int | None = None, body: bytes | None = None):
    """A real .pt2 whose entry `target` (a suffix) is a deflate stream of `mib` MiB of zeros (or `body`) that its
    headers say inflates to `declared` bytes (default: what it does)."""
    good, bad = tmp_path / "good.pt2", tmp_path / "bomb.pt2"
    save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))
    stream = _zeros_deflated(mib) if body is None else body
    names = zipfile.ZipFile(good).namelist()
    name = next(n for n in names if n.endswith(target))
    _rewrite(good, bad, lambda n, data, extra: bytes(len(stream)) if n == name else data)
    bad.write_bytes(_patched(bad.read_bytes(), name, method=8, size=(mib << 20) if declared is None else declared,
                             body=stream))
    return bad


@pytest.mark.parametrize("case", ["json", "weights", "lying", "nested"])
def test_an_archive_that_would_inflate_past_the_bounds_is_refused_before_it_does(tmp_path, npz_data, capsys,
                                                                               monkeypatch, case):
    """A 1.5 MB archive inflating to 1.5 GB of JSON, a 3 MB one inflating to 3 GB of weights, an entry that
    inflates past what its headers declare, and a torch.save archive inside whose entries would inflate."""
    if case == "json":
        bad = _bomb(tmp_path, "models/model.json", 1500)
    elif case == "weights":
        bad = _bomb(tmp_path, "data/weights/weight_0", 3000)
    elif case == "lying":
        bad = _bomb(tmp_path, "data/weights/weight_0", 100, declared=144)
    else:
        good = tmp_path / "good.pt2"
        save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))
        inputs = next(n for n in zipfile.ZipFile(good).namelist() if n.endswith("sample_inputs/model.pt"))
        inner = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(good).read(inputs))) as zin, \
                zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info))
        bad = tmp_path / "bomb.pt2"
        _rewrite(good, bad, lambda n, data, extra: inner.getvalue() if n == inputs else data)
    assert bad.stat().st_size < 4_000_000
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: pytest.fail("torch read the archive"))
    line = refused(capsys, npz_data, bad)
    assert "bomb.pt2" in line
    assert ("--trust-model does not lift" in line) if case != "nested" else ("must be stored" in line)


@pytest.mark.parametrize("declared", [[4_000_000_000], [1_000_000], [2, 2**62]])
def test_a_tensor_that_declares_more_than_its_entry_holds_is_refused(tmp_path, npz_data, capsys, declared):
    """torch allocates what the JSON declares when the entry is empty (torch.zeros: 16 GB here), and would point
    a tensor past its storage otherwise."""
    good, bad = tmp_path / "good.pt2", tmp_path / "huge.pt2"
    save_model(tiny_cnn(), str(good), torch.zeros(1, 1, 4, 4))

    def edit(name, data, extra):
        if name.endswith("data/weights/weight_0"):
            return b"" if declared[0] == 4_000_000_000 else data
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            meta = config["config"]["0.weight"]["tensor_meta"]
            meta["sizes"] = [{"as_int": n} for n in declared]
            meta["strides"] = [{"as_int": s} for s in ([1] if len(declared) == 1 else [1, 1])]
            return json.dumps(config).encode()
        return data

    _rewrite(good, bad, edit)
    for trust in ((), ("--trust-model",)):
        line = refused(capsys, npz_data, bad, *trust)
        assert "0.weight" in line and "more than" in line and "--trust-model does not lift" in line


def test_trust_model_does_not_lift_the_size_bounds(tmp_path):
    bad = _bomb(tmp_path, "data/weights/weight_0", 3000)
    with pytest.raises(SmoothcertError, match="does not lift"):
        load_model(str(bad), trust=True)


# -- item 3: torch's own lazy imports (triton on CUDA builds) -------------------------------------------------
def _fake_triton(folder, marker):
    """A package named triton in `folder` whose backend module, when imported, writes `marker`."""
    (folder / "triton" / "backends" / "fake").mkdir(parents=True)
    for sub in ("triton", "triton/backends", "triton/backends/fake"):
        (folder / sub / "__init__.py").write_text("")
    (folder / "triton" / "backends" / "fake" / "compiler.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n")


@pytest.fixture
def no_triton_after():
    yield
    for name in [n for n in sys.modules if n == "triton" or n.startswith("triton.")]:
        del sys.modules[name]


def test_torch_lazily_importing_triton_while_loading_is_allowed(tmp_path, model_pt2, monkeypatch, no_triton_after):
    """On CUDA builds torch.export.load imports triton, which imports its backends with importlib.import_module
    (seen with torch 2.11 + triton 3.6): that is torch's own code, not the file's, and must not refuse the file."""
    if importlib.util.find_spec("triton") is not None:
        pytest.skip("a real triton is installed: loads on this machine import it for real")
    lib, marker = tmp_path / "site", tmp_path / "backend_loaded"
    _fake_triton(lib, marker)
    monkeypatch.syspath_prepend(str(lib))
    real = torch.export.load

    def load_as_cuda_builds_do(*args, **kwargs):
        import triton  # noqa: F401  (a plain import statement, as torch's)
        importlib.import_module("triton.backends.fake.compiler")   # as triton/backends/__init__.py does
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.export, "load", load_as_cuda_builds_do)
    model = load_model(str(model_pt2))
    assert model(torch.zeros(3, 1, 4, 4)).shape == (3, 3) and marker.exists()


def test_a_triton_in_the_current_folder_is_not_imported_for_a_file(tmp_path, model_pt2, monkeypatch,
                                                                   no_triton_after):
    """A package that torch may import lazily, lying in the current folder (a downloaded model's folder) and
    named by the file rather than imported by torch, is refused."""
    if "triton" in sys.modules:
        pytest.skip("triton is imported already: a name under it is torch's own")
    marker = tmp_path / "backend_loaded"
    _fake_triton(tmp_path, marker)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = torch.export.load

    def load_naming_triton(*args, **kwargs):
        importlib.import_module("triton.backends.fake.compiler")   # as a pytree context naming it would
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.export, "load", load_naming_triton)
    with pytest.raises(SmoothcertError, match="imports the module 'triton.backends.fake.compiler'"):
        load_model(str(model_pt2))
    assert not marker.exists()
