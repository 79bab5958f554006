"""Qt binary resource bundles (`.rcc`, as GCompris ships its sounds): the files inside, read without Qt.

Format (Qt's rcc, versions 1-3; all integers big-endian):
    header   "qres", version (4), tree offset (4), data offset (4), names offset (4), [version >= 3: flags (4)]
    tree     nodes of 14 bytes (version 1) or 22 bytes (+ 8-byte modification time); node 0 is the root directory
             name offset (4), flags (2), then a directory: child count (4), first child node (4)
                                               or a file: country (2), language (2), data offset (4)
    names    length in UTF-16 units (2), hash (4), the name in UTF-16-BE
    data     length (4), bytes; flag 0x01: the bytes are zlib data after a 4-byte uncompressed size (qCompress)
Flag 0x04 (zstd) is reported as unsupported rather than guessed at.
"""

from __future__ import annotations

import struct
import zlib

FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04
MAX_DEPTH = 64


class RccError(ValueError):
    """A bundle that is not a readable Qt resource file; the message names the bundle and the problem."""


class _Reader:
    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name
        if data[:4] != b"qres" or len(data) < 20:
            raise RccError(f"{name}: not a Qt resource bundle (no 'qres' header)")
        self.version, self.tree, self.payload, self.names = struct.unpack_from(">IIII", data, 4)
        if self.version not in (1, 2, 3):
            raise RccError(f"{name}: unsupported rcc format version {self.version}")
        self.node_size = 14 if self.version == 1 else 22

    def _unpack(self, fmt: str, offset: int) -> tuple:
        if offset < 0 or offset + struct.calcsize(fmt) > len(self.data):
            raise RccError(f"{self.name}: truncated bundle (offset {offset} is past its {len(self.data)} bytes)")
        return struct.unpack_from(fmt, self.data, offset)

    def node(self, index: int) -> tuple[str, int, int, int]:
        """(name, flags, a, b): a, b = child count, first child (directory) or 0, data offset (file)."""
        offset = self.tree + index * self.node_size
        name_offset, flags = self._unpack(">IH", offset)
        if flags & FLAG_DIRECTORY:
            count, first = self._unpack(">II", offset + 6)
            return self.label(name_offset), flags, count, first
        (data_offset,) = self._unpack(">I", offset + 10)
        return self.label(name_offset), flags, 0, data_offset

    def label(self, name_offset: int) -> str:
        (length,) = self._unpack(">H", self.names + name_offset)
        start = self.names + name_offset + 6
        if start + 2 * length > len(self.data):
            raise RccError(f"{self.name}: truncated name table")
        return self.data[start : start + 2 * length].decode("utf-16-be")

    def content(self, flags: int, data_offset: int, path: str) -> bytes:
        (length,) = self._unpack(">I", self.payload + data_offset)
        start = self.payload + data_offset + 4
        if start + length > len(self.data):
            raise RccError(f"{self.name}: {path}: data runs past the end of the bundle")
        raw = self.data[start : start + length]
        if flags & FLAG_COMPRESSED_ZSTD:
            raise RccError(f"{self.name}: {path} is zstd-compressed, which this reader does not support")
        if not flags & FLAG_COMPRESSED:
            return raw
        try:
            content = zlib.decompress(raw[4:])
        except zlib.error as err:
            raise RccError(f"{self.name}: {path}: corrupt zlib data ({err})") from None
        if len(content) != int.from_bytes(raw[:4], "big"):
            raise RccError(f"{self.name}: {path}: {len(content)} bytes decompressed, header says {raw[:4].hex()}")
        return content


def read_rcc(data: bytes, name: str = "bundle") -> dict[str, bytes]:
    """{path inside the bundle: file bytes}, e.g. "gcompris/src/activities/instruments/resource/banjo.ogg".

    A path present for several locales keeps its first entry (the default locale comes first).
    """
    reader = _Reader(data, name)
    files: dict[str, bytes] = {}
    pending = [(0, "", 0)]
    while pending:
        index, prefix, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise RccError(f"{name}: directory tree deeper than {MAX_DEPTH} (a loop?)")
        label, flags, count, first = reader.node(index)
        path = f"{prefix}/{label}" if prefix else ("" if index == 0 else label)
        if flags & FLAG_DIRECTORY:
            pending += [(first + i, path, depth + 1) for i in reversed(range(count))]
        elif path not in files:
            files[path] = reader.content(flags, first, path)
    return files


def write_rcc(files: dict[str, bytes], compress: set[str] = frozenset(), version: int = 3) -> bytes:
    """A bundle holding `files` (paths with "/"), the ones in `compress` zlib-compressed as Qt does.

    For tests and fixtures: `read_rcc(write_rcc(files))` gives `files` back.
    """
    tree: dict = {}
    for path, content in files.items():
        node = tree
        *folders, leaf = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = content
    names, data, nodes = bytearray(), bytearray(), []

    def name_offset(label: str) -> int:
        offset = len(names)
        encoded = label.encode("utf-16-be")
        names.extend(struct.pack(">HI", len(encoded) // 2, zlib.crc32(encoded)) + encoded)
        return offset

    def data_offset(path: str, content: bytes) -> tuple[int, int]:
        offset = len(data)
        if path in compress:
            content, flags = len(content).to_bytes(4, "big") + zlib.compress(content), FLAG_COMPRESSED
        else:
            flags = 0
        data.extend(struct.pack(">I", len(content)) + content)
        return offset, flags

    extra = b"" if version == 1 else bytes(8)
    nodes.append(None)  # the root, filled in below; children of a directory are consecutive nodes
    queue = [(0, "", "", tree)]
    while queue:
        index, label, path, children = queue.pop(0)
        first = len(nodes)
        nodes.extend([None] * len(children))
        for i, (child, value) in enumerate(sorted(children.items())):
            child_path = f"{path}/{child}" if path else child
            if isinstance(value, dict):
                queue.append((first + i, child, child_path, value))
            else:
                offset, flags = data_offset(child_path, value)
                nodes[first + i] = struct.pack(">IHHHI", name_offset(child), flags, 0, 0, offset) + extra
        nodes[index] = struct.pack(">IHII", name_offset(label), FLAG_DIRECTORY, len(children), first) + extra
    header_size = 20 if version < 3 else 24
    data_start = header_size
    names_start = data_start + len(data)
    tree_start = names_start + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_start, data_start, names_start)
    header += struct.pack(">I", 0) if version >= 3 else b""
    return header + bytes(data) + bytes(names) + b"".join(nodes)
