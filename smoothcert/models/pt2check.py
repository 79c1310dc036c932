"""What a .pt2 may hold for torch.export.load to read it without running code or allocating without bound.

`check_archive` runs before torch sees the file (smoothcert.models.pt2zip opens it first, so the entries checked are
the ones torch's reader returns). The entries must be exactly those torch.export.load reads for a program saved
by torch.export.save (torch/export/pt2_archive/_package.py: load_pt2 reads every entry under models/ as a
program, its sample inputs, the weights and constants configs and the entries they name, extra/ as text, and
loads data/aotinductor/ as compiled code), with names from torch's own constants; any other entry, a pickled
weight or constant, or a constant that is not a tensor is refused. The program's JSON is checked for what torch
would run: sympy.sympify (Python's eval) of symbolic shapes, module imports named by pytree contexts, guard code
it compiles, node targets it calls. Symbolic shapes must be plain shape arithmetic (see `safe_expression`), so
evaluating one costs little. `--trust-model` lifts these checks; it does not lift the size bounds of pt2zip or
`check_tensor_sizes` (a weight may not declare more elements than its entry holds: torch would allocate them).
smoothcert.models.pt2guard guards the load itself.
"""
from __future__ import annotations

import ast
import json
import re

from . import pt2zip

_TARGET = re.compile(r"torch\.ops\.(aten|prims|higher_order)\.\w+(\.\w+)?|torch\.sym_\w+|math\.\w+|_operator\."
                     r"(getitem|add|sub|mul|truediv|floordiv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|and_|or_|xor|"
                     r"not_|invert|lshift|rshift)")
_UNSAFE_TARGETS = ("from_file",)                                  # aten ops that read files
_SPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict",
               "collections.namedtuple", "torch.fx.immutable_collections.immutable_list",
               "torch.fx.immutable_collections.immutable_dict"}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]{1,100}")                 # weight_0, tensor_3: no folder, no suffix

# Symbolic shapes as torch.export writes them (sympy's srepr: Mul(Integer(2), Symbol('s77', positive=True,
# integer=True)); older torch: 2*s77). Shape symbols are torch's (s0, u3, zf1: torch/utils/_sympy/symbol.py);
# numbers have at most 20 digits and no exponent; a power's exponent is a literal of at most 64 and its base holds
# no power, so no value grows past a few thousand digits; MAX_EXPRESSION characters, MAX_DEPTH nested calls.
MAX_EXPRESSION, MAX_DEPTH, MAX_EXPONENT = 2000, 40, 64
_SYMBOL = re.compile(r"[a-z]{1,3}\d{1,6}")
_NUMBER = re.compile(r"-?\d{1,20}(\.\d{1,20})?")
_EXPR_CHARS = re.compile(r"[A-Za-z0-9_()'., *+\-/%<>=!]*")
_POWERS = {"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"}
_FUNCTIONS = {"Add", "Mul", "Mod", "PythonMod", "FloorDiv", "CeilDiv", "CleanDiv", "IntTrueDiv", "FloatTrueDiv",
              "TruncToInt", "TruncToFloat", "RoundToInt", "CeilToInt", "FloorToInt", "ToFloat", "Identity", "Max",
              "Min", "Abs", "ceiling", "floor", "sqrt", "ModularIndexing", "Where", "IsNonOverlappingAndDenseIndicator",
              "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan",
              "LessThan", "GreaterThan", "And", "Or", "Not", "IntInfinity", "NegativeIntInfinity"}
_NAMES = {"oo", "zoo", "nan", "true", "false", "int_oo"}
_ASSUMPTIONS = {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "infinite",
                "zero", "nonzero", "even", "odd", "rational", "commutative"}
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd, ast.Not, ast.And,
              ast.Or, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


class Refused(Exception):
    """An archive needs more than tensors and a graph of torch operators: loading it could run code."""


def check_archive(data: bytes, trust: bool) -> None:
    """Raise pt2zip.Unreadable or pt2zip.TooLarge (SmoothcertError, whatever `trust`) or, unless `trust`, Refused."""
    archive = pt2zip.Archive(data)
    configs = _payload_configs(archive, trust)
    check_tensor_sizes(archive, configs)
    if not trust:
        _check_members(archive, configs)
        for name, raw in archive.text.items():
            if not name.startswith(_constants().EXTRA_DIR):     # extra files are only read as text
                check_program_json(name, raw)


def _constants():
    """torch's own names for the entries of a .pt2 (torch.export.pt2_archive.constants, torch >= 2.6)."""
    try:
        from torch.export.pt2_archive import constants
        return constants
    except ImportError:
        raise Refused("this torch has no torch.export.pt2_archive, whose layout smoothcert checks") from None


def _payload_configs(archive: pt2zip.Archive, trust: bool) -> dict[str, dict]:
    """The weights and constants configs, by the folder their entries lie in: {"data/weights/": {fqn: entry}}."""
    try:
        c = _constants()
    except Refused:
        if trust:
            return {}
        raise
    configs = {}
    for folder, fmt in ((c.WEIGHTS_DIR, c.WEIGHTS_CONFIG_FILENAME_FORMAT),
                        (c.CONSTANTS_DIR, c.CONSTANTS_CONFIG_FILENAME_FORMAT)):
        name = fmt.format("model")
        try:
            config = json.loads(archive.text[name])["config"] if name in archive.text else {}
            if not (isinstance(config, dict) and all(isinstance(v, dict) for v in config.values())):
                raise ValueError
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
            if trust:
                continue                              # torch says what is wrong
            raise Refused(f"an unreadable JSON entry {name}") from None
        configs[folder] = config
    return configs


def check_tensor_sizes(archive: pt2zip.Archive, configs: dict[str, dict]) -> None:
    """A weight or constant may not reach past its entry: torch would allocate what it declares (torch.zeros when
    the entry is empty), or point a tensor outside its storage."""
    for folder, config in configs.items():
        for fqn, entry in config.items():
            meta, size = entry.get("tensor_meta"), archive.sizes.get(f"{folder}{entry.get('path_name')}")
            if entry.get("use_pickle") or not isinstance(meta, dict) or size is None:
                continue
            try:
                shape = [d["as_int"] for d in meta["sizes"]]
                strides = [d["as_int"] for d in meta["strides"]]
                offset = meta["storage_offset"]["as_int"]
            except (KeyError, TypeError):
                continue                              # not plain integers: torch refuses them itself
            values = [*shape, *strides, offset]
            if not all(type(v) is int and v >= 0 for v in values) or len(shape) != len(strides):
                raise pt2zip.TooLarge(f"its tensor {str(fqn)[:80]} declares an impossible shape")
            count = 0 if 0 in shape else offset + 1 + sum((n - 1) * s for n, s in zip(shape, strides))
            width = _element_size(meta.get("dtype"))
            if count * width > size:
                raise pt2zip.TooLarge(f"its tensor {str(fqn)[:80]} declares {count:,} elements of {width} bytes, "
                                      f"more than the {size:,} bytes its entry holds")


def _element_size(code) -> int:
    """Bytes per element of a serialized dtype (torch's serde enum); 1, the least, if this torch cannot say."""
    try:
        from torch._export.serde.schema import ScalarType
        from torch._export.serde.serialize import deserialize_scalar_type
        return max(1, deserialize_scalar_type(ScalarType(code)).itemsize)
    except Exception:
        return 1


def _check_members(archive: pt2zip.Archive, configs: dict[str, dict]) -> None:
    """Exactly the entries torch.export.load reads for one program named "model", and nothing else."""
    c = _constants()
    known = {c.ARCHIVE_FORMAT_PATH, c.ARCHIVE_VERSION_PATH, ".data/version", "version", ".data/serialization_id",
             "byteorder", c.MODELS_FILENAME_FORMAT.format("model"), c.SAMPLE_INPUTS_FILENAME_FORMAT.format("model"),
             c.WEIGHTS_CONFIG_FILENAME_FORMAT.format("model"), c.CONSTANTS_CONFIG_FILENAME_FORMAT.format("model")}
    for folder, config in configs.items():
        for fqn, entry in config.items():
            path = entry.get("path_name")
            what = "weight" if folder == c.WEIGHTS_DIR else "constant"
            if entry.get("use_pickle"):
                raise Refused(f"a pickled {what} {str(fqn)[:80]}")
            if not (isinstance(path, str) and _PLAIN_NAME.fullmatch(path)):
                raise Refused(f"a {what} stored as {str(path)[:80]!r}")
            if what == "constant" and not path.startswith(c.TENSOR_CONSTANT_FILENAME_PREFIX):
                raise Refused(f"a constant {str(fqn)[:80]} that is not a tensor (torch would unpickle it)")
            known.add(folder + path)
    for name in archive.sizes:
        if name in known or name.startswith(c.EXTRA_DIR):
            continue
        why = ("torch would load as a program" if name.startswith(c.MODELS_DIR) else
               "holds compiled code torch would load" if name.startswith(c.AOTINDUCTOR_DIR) else
               "is not part of a torch.export program")
        raise Refused(f"an entry {name[:80]} that {why}")


def safe_expression(text) -> bool:
    """A symbolic shape whose sympify only builds a small expression: parsed (not evaluated) and checked node by
    node against what torch.export writes."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION or not _EXPR_CHARS.fullmatch(text):
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return _safe(tree.body, text, 0, False)


def _safe(node, text: str, depth: int, in_power: bool) -> bool:
    def go(child, power=in_power):
        return _safe(child, text, depth + 1, power)

    if depth > MAX_DEPTH:
        return False
    if isinstance(node, ast.Constant):
        return type(node.value) is bool or (type(node.value) in (int, float)
                                            and bool(_NUMBER.fullmatch(ast.get_source_segment(text, node) or "")))
    if isinstance(node, ast.Name):
        return node.id in _NAMES or bool(_SYMBOL.fullmatch(node.id))
    if isinstance(node, (ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return not in_power and _exponent(node.right) and go(node.left, True)
        ops = getattr(node, "ops", [getattr(node, "op", None)])
        children = [v for f in ("operand", "left", "right", "values", "comparators") for v in _listed(node, f)]
        return all(isinstance(op, _OPERATORS) for op in ops) and all(go(child) for child in children)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return False
    name, args, keywords = node.func.id, node.args, {k.arg: k.value for k in node.keywords}
    if name == "Symbol":
        return (len(args) == 1 and _text(args[0], _SYMBOL) and set(keywords) <= _ASSUMPTIONS
                and all(isinstance(v, ast.Constant) and type(v.value) is bool for v in keywords.values()))
    if name == "Float":
        precision = keywords.get("precision")
        return (len(args) == 1 and (_text(args[0], _NUMBER) or go(args[0])) and set(keywords) <= {"precision"}
                and (precision is None or (isinstance(precision, ast.Constant) and type(precision.value) is int
                                           and 0 < precision.value <= 128)))
    if keywords:
        return False
    if name in ("Integer", "Rational"):
        return 1 <= len(args) <= 2 and all(_integer(a) is not None for a in args)
    if name in _POWERS:
        return len(args) == 2 and not in_power and _exponent(args[1]) and go(args[0], True)
    return name in _FUNCTIONS and all(go(a) for a in args)


def _listed(node, field: str) -> list:
    value = getattr(node, field, None)
    return value if isinstance(value, list) else [] if value is None else [value]


def _text(node, pattern: re.Pattern) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is str and bool(pattern.fullmatch(node.value))


def _integer(node) -> int | None:
    """An integer literal (Integer(-3), 3, -3) of at most 20 digits, or None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" and \
            len(node.args) == 1 and not node.keywords:
        node = node.args[0]
    sign = -1 if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) else 1
    node = node.operand if sign < 0 else node
    if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 10 ** 20:
        return sign * node.value
    return None


def _exponent(node) -> bool:
    value = _integer(node)
    return value is not None and abs(value) <= MAX_EXPONENT


def _check_spec(spec, where: str) -> None:
    """A pytree spec node (and its children): containers only, no context that imports a module."""
    if isinstance(spec, list):                       # [protocol, node]
        spec = spec[-1] if spec else None
    if not isinstance(spec, dict):
        return
    kind = spec.get("type")
    if kind not in _SPEC_TYPES:
        raise Refused(f"a pytree of type {str(kind)[:80]!r} in {where}")
    if "__enum__" in str(spec.get("context")):
        raise Refused(f"an enum context in {where} (it imports a module)")
    for child in spec.get("children_spec") or []:
        _check_spec(child, where)


def check_program_json(name: str, raw: bytes) -> None:
    """Refuse (with Refused) a JSON entry that makes torch.export.load or the loaded module run code, or whose
    symbolic shapes would cost more than plain shape arithmetic."""
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("target", "as_operator") and isinstance(value, str):
                    if not _TARGET.fullmatch(value) or any(op in value for op in _UNSAFE_TARGETS):
                        raise Refused(f"an operator {value[:80]!r} in {name}")
                elif key == "expr_str" and not safe_expression(value):
                    raise Refused(f"a symbolic shape {str(value)[:80]!r} in {name} that is not plain shape "
                                  "arithmetic (it would be evaluated)")
                elif key == "range_constraints" and isinstance(value, dict):
                    for symbol in value:
                        if not _SYMBOL.fullmatch(symbol):
                            raise Refused(f"a shape symbol named {symbol[:80]!r} in {name}, not one of torch's "
                                          "(s0, u1, ...; torch counts up to an unbacked symbol's number)")
                elif key in ("in_spec", "out_spec") and isinstance(value, str):
                    try:
                        _check_spec(json.loads(value), name)
                    except (json.JSONDecodeError, RecursionError):
                        raise Refused(f"an unreadable pytree spec in {name}") from None
                elif key == "guards_code" and value:
                    raise Refused(f"guard code in {name} (it would be compiled and run)")
                elif key == "treespec_namedtuple_fields":
                    continue
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and "__enum__" in node:
            raise Refused(f"an enum context in {name} (it imports a module)")

    try:
        walk(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise Refused(f"an unreadable JSON entry {name}") from None
