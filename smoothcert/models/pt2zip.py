"""Opening a .pt2 (zip) archive as torch's own reader will, within stated bounds, before torch reads it.

torch.export.load reads a .pt2 with torch's C++ reader (miniz, through torch._C.PyTorchFileReader), not with
Python's zipfile, and looks names up ignoring case. So that what smoothcert checks is what torch reads, an
archive is taken only where the two cannot disagree, and their listings are compared:
  - the end-of-central-directory record ends the file (no comment), the directory lies right before it (and its
    zip64 record, whose counts must match), so nothing is prepended or appended;
  - names are plain ASCII paths under the one root folder torch strips, no two equal ignoring case;
  - entries are stored or deflated, not encrypted, and each is read back whole (by smoothcert itself, from its
    local header, whose name must match) with its CRC;
  - torch's reader lists the same names, data offsets and sizes (where it tells them: torch 2.11's does not), and
    the text entries smoothcert checks are the bytes torch's reader returns.
Anything else is refused as unreadable, never passed.

Bounds (they hold with --trust-model too: a trusted file can still be a truncated download or a zip bomb):
  - all entries together inflate to at most INFLATION (8) times the file's size plus 1 MiB (torch.export.save
    stores them uncompressed: 1 time), read from the central directory before anything is inflated and verified
    while inflating;
  - an entry torch reads whole as text (under models/ or extra/, or named *.json) holds at most TEXT_CAP (16 MiB;
    ResNet-110's program is 0.8 MB), and one it parses as JSON (all but extra/) at most one object or array per
    JSON_BYTES_PER_CONTAINER (8) bytes plus 4096 (ResNet-110's program: one per 38 bytes; 11M empty dicts in 32 MiB
    took 1.2 GB to parse);
  - a torch.save archive inside it (the sample inputs, *.pt), which torch.load reads with the same reader, must
    pass the same checks with every entry stored, so it cannot inflate either.
Sizes of tensors declared inside the JSON are checked against these entries by smoothcert.models.pt2check.
A state dict file (torch.save, read by torch.load with the same reader) is held to the same total by `bound`.
"""
from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib

import torch

from ..errors import SmoothcertError, first_line

INFLATION = 8
SLACK = 1 << 20
TEXT_CAP = 16 << 20
JSON_BYTES_PER_CONTAINER, JSON_SLACK = 8, 4096
_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_CHUNK = 1 << 20                                  # bytes inflated at a time


class Unreadable(SmoothcertError):
    """The archive is not one that Python's zipfile and torch's reader are sure to read alike."""


class TooLarge(SmoothcertError):
    """An entry, or all of them, would make the loader allocate more than the stated bounds."""


def is_text(name: str) -> bool:
    """An entry torch.export.load reads whole and decodes: a program, a payload config or an extra file."""
    return name.startswith(("models/", "extra/")) or name.lower().endswith(".json")


def _listing(data: bytes) -> tuple[list[zipfile.ZipInfo], int]:
    """Python's zipfile's listing of `data`, checked to sit where and be what the archive's end record says, and
    where its central directory starts."""
    cd_offset, count = _directory(data)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise Unreadable(f"not a zip archive ({first_line(exc)})") from None
    infos = zf.infolist()
    if zf.start_dir != cd_offset or len(infos) != count:
        raise Unreadable("its zip directory is not where and what its end record says (data prepended or hidden)")
    return infos, cd_offset


def bound(data: bytes) -> None:
    """Raise Unreadable unless `data` is a zip archive whose directory torch's reader takes as Python's zipfile does,
    or TooLarge if its entries declare more than INFLATION times its size plus SLACK bytes in all: what torch's
    reader allocates for an entry is its declared size, read here before anything is inflated."""
    infos, _ = _listing(data)
    _cap_total(infos, len(data))
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        root = infos[0].filename.split("/")[0] if infos else ""
        sizes = {i.filename[len(root) + 1:]: i.file_size for i in infos}
        torch_sizes = {name: reader.get_record_size(name) for name in reader.get_all_records()}
    except Exception as exc:
        raise Unreadable(f"torch's reader cannot read it: {first_line(exc)[:200]}") from None
    if torch_sizes != sizes:
        raise Unreadable("torch's reader lists other entries or sizes than Python's zipfile")


def _cap_total(infos: list, size: int) -> None:
    cap = INFLATION * size + SLACK
    total = sum(i.file_size for i in infos)
    if total > cap:
        raise TooLarge(f"its entries inflate to {total:,} bytes, over the {cap:,} allowed for a {size:,}-byte "
                       f"file ({INFLATION} times its size plus 1 MiB)")


class Archive:
    """The entries of a checked archive, by their names as torch's reader sees them (without the root folder)."""

    def __init__(self, data: bytes, nested: bool = False):
        self.sizes, self.text = {}, {}
        infos = _open(data, nested)
        self.root = infos[0].filename.split("/")[0]
        _cap_total(infos, len(data))
        for info in infos:
            name = info.filename[len(self.root) + 1:]
            if is_text(name) and info.file_size > TEXT_CAP:
                raise TooLarge(f"its entry {name} holds {info.file_size:,} bytes of text, over the {TEXT_CAP >> 20} "
                               "MiB torch would read into memory and parse")
            self.sizes[name] = info.file_size
        for info in infos:
            name = info.filename[len(self.root) + 1:]
            body = _read(data, info, keep=is_text(name) or name.endswith(".pt"))
            if name.endswith(".pt") and not nested and body:
                Archive(body, nested=True)                 # torch.load reads it with the same reader
            if is_text(name):
                self.text[name] = body
                containers = body.count(b"{") + body.count(b"[")
                if not name.startswith("extra/") and containers > len(body) // JSON_BYTES_PER_CONTAINER + JSON_SLACK:
                    raise TooLarge(f"its entry {name} holds {containers:,} JSON objects and arrays in {len(body):,} "
                                   f"bytes, more than one per {JSON_BYTES_PER_CONTAINER} bytes (torch's parse of it "
                                   "would take gigabytes)")
        self._same_as_torch(data, infos)

    def _same_as_torch(self, data: bytes, infos: list) -> None:
        """torch's reader must list the entries Python's zipfile read, at the same offsets and sizes, and give the
        same bytes for every text entry (the ones smoothcert checks)."""
        try:
            reader = torch._C.PyTorchFileReader(io.BytesIO(data))
            listed = list(reader.get_all_records())
            names = [i.filename[len(self.root) + 1:] for i in infos]
            if listed != names:
                raise Unreadable("torch's reader lists other entries than Python's zipfile")
            for info, name in zip(infos, names):
                local = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
                offset = info.header_offset + 30 + sum(local)
                if (hasattr(reader, "get_record_size") and reader.get_record_size(name) != info.file_size) or \
                        (hasattr(reader, "get_record_offset") and reader.get_record_offset(name) != offset):
                    raise Unreadable(f"torch's reader finds entry {name} elsewhere than Python's zipfile")
                if name in self.text and bytes(reader.get_record(name)) != self.text[name]:
                    raise Unreadable(f"torch's reader reads entry {name} otherwise than Python's zipfile")
        except Unreadable:
            raise
        except Exception as exc:
            raise Unreadable(f"torch's reader cannot read it: {first_line(exc)[:200]}") from None


def _open(data: bytes, nested: bool) -> list[zipfile.ZipInfo]:
    """Python's zipfile over `data`, with the listing checked to be the one torch's reader (miniz) takes."""
    infos, start_dir = _listing(data)
    if not infos:
        raise Unreadable("the archive is empty")
    root = infos[0].filename.split("/")[0]
    if "/" not in infos[0].filename:
        raise Unreadable(f"its first entry {root[:80]!r} is not in a folder, as torch's reader needs")
    seen = set()
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if len(parts) < 2 or parts[0] != root or any(not _SEGMENT.fullmatch(p) or p in (".", "..") for p in parts):
            raise Unreadable(f"an entry named {name[:80]!r} (names must be plain ASCII paths under one folder, "
                             f"{root!r})")
        if name.lower() in seen:
            raise Unreadable(f"two entries named {name[:80]!r} (torch's reader, which ignores case, would pick "
                             "either)")
        seen.add(name.lower())
        if info.flag_bits & 0x41:
            raise Unreadable(f"its entry {name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or \
                (nested and info.compress_type != zipfile.ZIP_STORED):
            raise Unreadable(f"its entry {name} is compressed with method {info.compress_type}"
                             + (" (entries of a torch.save archive inside it must be stored)" if nested else ""))
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise Unreadable(f"its stored entry {name} declares two sizes")
        if info.header_offset + 30 > start_dir:
            raise Unreadable(f"its entry {name} lies outside the archive")
    return infos


def _directory(data: bytes) -> tuple[int, int]:
    """Where the central directory starts and how many entries it holds, from an end record that is the file's
    last 22 bytes (no comment), and a zip64 end record (torch writes one) right before its locator that agrees
    with it; the directory must end where they begin."""
    if len(data) < 22 or data[-22:-18] != b"PK\x05\x06" or b"PK\x05\x06" in data[-21:]:
        raise Unreadable("not a zip archive whose directory ends the file (a comment, or data after it)")
    disk, cd_disk, here, total, cd_size, cd_offset, comment = struct.unpack("<HHHHIIH", data[-18:])
    end = len(data) - 22
    if disk or cd_disk or here != total or comment:
        raise Unreadable("a zip archive split over disks")
    if data[end - 20:end - 16] == b"PK\x06\x07":
        _, _, offset, _ = struct.unpack("<IIQI", data[end - 20:end])
        record = data[offset:offset + 56]
        if offset + 56 != end - 20 or record[:4] != b"PK\x06\x06":
            raise Unreadable("its zip64 end record is not where its locator says")
        size, _, _, disk, cd_disk, here64, total64, size64, offset64 = struct.unpack("<QHHIIQQQQ", record[4:])
        if size != 44 or disk or cd_disk or here64 != total64 or any(
                small not in (big, mark) for small, big, mark in ((total, total64, 0xFFFF),
                                                                  (cd_size, size64, 0xFFFFFFFF),
                                                                  (cd_offset, offset64, 0xFFFFFFFF))):
            raise Unreadable("its zip64 end record disagrees with its end record")
        total, cd_size, cd_offset, end = total64, size64, offset64, offset
    if cd_offset + cd_size != end:
        raise Unreadable("its zip directory is not where and what its end record says (data prepended or hidden)")
    return cd_offset, total


def _read(data: bytes, info: zipfile.ZipInfo, keep: bool) -> bytes:
    """One entry's bytes (if `keep`) from its local header on, inflated in chunks and never past its declared
    size, with its local header's name and its CRC checked."""
    at = info.header_offset
    name_length, extra_length = struct.unpack("<HH", data[at + 26:at + 30])
    if data[at:at + 4] != b"PK\x03\x04" or data[at + 30:at + 30 + name_length] != info.filename.encode():
        raise Unreadable(f"its entry {info.filename} has a local header that names another")
    start = at + 30 + name_length + extra_length
    raw = memoryview(data)[start:start + info.compress_size]
    if len(raw) != info.compress_size:
        raise Unreadable(f"its entry {info.filename} is cut short")
    if info.compress_type == zipfile.ZIP_STORED:
        body, crc = bytes(raw) if keep else b"", zlib.crc32(raw)
    else:
        chunks, count, crc, inflate = [], 0, 0, zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            for offset in range(0, len(raw), _CHUNK):
                pending = raw[offset:offset + _CHUNK]
                while pending and not inflate.eof:
                    block = inflate.decompress(pending, _CHUNK)
                    pending = inflate.unconsumed_tail
                    count += len(block)
                    if count > info.file_size:
                        raise TooLarge(f"its entry {info.filename} inflates past its declared {info.file_size:,} "
                                       "bytes")
                    crc = zlib.crc32(block, crc)
                    if keep:
                        chunks.append(block)
            block = inflate.flush()                  # what zlib still holds: at most its 32 KiB window
            count, crc = count + len(block), zlib.crc32(block, crc)
            chunks.append(block if keep else b"")
        except zlib.error as exc:
            raise Unreadable(f"its entry {info.filename} cannot be inflated ({first_line(exc)})") from None
        if not inflate.eof or count != info.file_size:
            raise Unreadable(f"its entry {info.filename} inflates to less than its declared size")
        body = b"".join(chunks)
    if crc != info.CRC:
        raise Unreadable(f"its entry {info.filename} fails its CRC check")
    return body
