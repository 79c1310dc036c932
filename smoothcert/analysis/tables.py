"""Tables of certified accuracy (text, Markdown, LaTeX with escaping), run names that tell runs apart, and writing an
output file atomically (tables, figures and exports all go through `output_target` and `write_atomic`)."""
from __future__ import annotations

import os
from typing import Sequence

from ..errors import SmoothcertError, check
from .reading import Results, stem

FORMATS = ("text", "markdown", "latex")


def display_names(results: Sequence[Results]) -> list[str]:
    """Each run's name; where names clash, the distinguishing part of the path, then a number, is added."""
    out = [r.name for r in results]
    for name in set(out):
        group = [i for i, r in enumerate(results) if r.name == name]
        if len(group) < 2:
            continue
        parts = [os.path.abspath(results[i].path).split(os.sep)[1:] if results[i].path else [] for i in group]
        parts = [p[:-1] + [stem(p[-1])] if p else p for p in parts]
        shortest = min(len(p) for p in parts)
        head = next((j for j in range(shortest) if len({p[j] for p in parts}) > 1), shortest)
        tail = next((j for j in range(shortest - head) if len({p[-1 - j] for p in parts}) > 1), shortest - head)
        for i, p in zip(group, parts):
            extra = "/".join(p[head:len(p) - tail])
            out[i] = f"{name} ({extra})" if extra else name
    for name in set(out):                                   # the same file twice, or no paths: number them
        group = [i for i, n in enumerate(out) if n == name]
        for k, i in enumerate(group if len(group) > 1 else [], start=1):
            out[i] = f"{name} #{k}"
    return out


def percent(x: float) -> str:
    return f"{x * 100:.1f}"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "σ": r"$\sigma$", "λ": r"$\lambda$", "ℓ": r"$\ell$"}


def _tex(text: str) -> str:
    """Escape LaTeX's special characters; Greek letters and ℓ as math."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def _tex_header(h: str) -> str:
    if h.startswith("r="):
        return f"$r = {h[2:]}$"
    head, at, r = h.partition("@r=")
    return _tex(head) + (f" at $r = {r}$" if at else "")


def render_table(header: list[str], rows: list[list[str]], bold: list[list[bool]], fmt: str) -> list[str]:
    """One table in the format: text (fixed width), markdown or latex (booktabs); bold where marked."""
    if fmt == "text":
        widths = [max(len(row[j]) for row in [header] + rows) for j in range(len(header))]
        line = lambda row: "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                                     for j, (c, w) in enumerate(zip(row, widths)))
        return [line(header), "  ".join("-" * w for w in widths)] + [line(row) for row in rows]
    if fmt == "markdown":
        cell = lambda c, b: f"**{c}**" if b else c.replace("|", r"\|")
        line = lambda cells: "| " + " | ".join(cells) + " |"
        return [line(header), "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"] + [
            line([cell(c, b) for c, b in zip(row, flags)]) for row, flags in zip(rows, bold)]
    line = lambda cells: " & ".join(cells) + r" \\"
    return ([r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule", line(map(_tex_header, header)),
             r"\midrule"]
            + [line([rf"\textbf{{{_tex(c)}}}" if b else _tex(c) for c, b in zip(row, flags)])
               for row, flags in zip(rows, bold)] + [r"\bottomrule", r"\end{tabular}"])


def output_target(path, formats: Sequence[str], what: str) -> tuple[str, str]:
    """Check an output path before anything is written; return (the file to write, its format).

    A directory, or a symlink to one, is refused; a symlink to a file is written through (the link stays); the
    format is the extension's and must be one of `formats`.
    """
    path = os.fspath(path)
    kind = "a symlink to a directory" if os.path.islink(path) else "a directory"
    check(not os.path.isdir(path), f"{path}: is {kind}; give a file name for the {what}")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    check(ext in formats, f"{path}: unknown {what} format {ext!r} (from the extension); use "
                          f"{', '.join('.' + f for f in formats)}")
    target = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(os.path.abspath(target))
    check(os.path.isdir(directory), f"{path}: output directory {directory} does not exist")
    return target, ext


def write_atomic(target: str, write, what: str) -> None:
    """write(tmp) beside the target, then rename over it: never a half-written file."""
    tmp, made = f"{target}.{os.getpid()}.tmp", False
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))    # never a file or link already there
        made = True
        write(tmp)
        os.replace(tmp, target)
    except Exception as e:
        if made and os.path.exists(tmp):                                    # only the file made here
            os.unlink(tmp)
        raise SmoothcertError(f"{target}: cannot write {what} ({e.__class__.__name__}: {e})") from None
