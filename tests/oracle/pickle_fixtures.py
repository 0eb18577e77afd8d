#!/usr/bin/env python3
"""Pickle fixtures made by CPython itself, for bucky-pickle-relay's decoder tests.

Prints one JSON document: {"cases": [{"name", "protocol", "pickle" (hex), "refuse" (bool),
"expect": [["ok", path, ts_bits, value_bits] | ["skip"], ...]}]}.

`expect` is what carbon's MetricPickleReceiver does with each item (carbon/protocols.py):
`(metric, (timestamp, value)) = item`, `float(value)`, `float(timestamp)`, NaN values dropped -- plus
what the plaintext protocol cannot carry (a path that is empty, longer than 4096 bytes, or holds
whitespace/control characters or lone surrogates is skipped). Bits are the IEEE-754 doubles in hex, so
the comparison is exact. `refuse` cases are pickles of things other than lists of tuples of strings and
numbers (objects, globals, dicts, sets, deep nesting): the relay must refuse the whole pickle.

Python 2 senders (STRING/BINSTRING/SHORT_BINSTRING opcodes) are reproduced with a pickler that writes
str the way Python 2 did; CPython's own unpickler must load every fixture the same way.
"""
import datetime
import json
import math
import os
import pickle
import struct
import sys
import time

MAX_PATH = 4096


def bits(x):
    return struct.pack(">d", x).hex()


def expect(item):
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        return ["skip"]
    path, point = item
    if not (isinstance(point, (tuple, list)) and len(point) == 2):
        return ["skip"]
    ts, value = point
    if isinstance(path, bytes):
        try:
            path = path.decode("utf-8")
        except UnicodeDecodeError:
            return ["skip"]
    if not isinstance(path, str):
        return ["skip"]
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return ["skip"]
    if not encoded or len(encoded) > MAX_PATH or any(b <= 0x20 or b == 0x7F for b in encoded):
        return ["skip"]
    try:
        t = float(ts)
        v = float(value)
    except (ValueError, TypeError, OverflowError):
        return ["skip"]
    if v != v or not math.isfinite(t):
        return ["skip"]
    return ["ok", path, bits(t), bits(v)]


class Py2Str(bytes):
    """A Python 2 `str`: pickled with the STRING family of opcodes."""


class Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj):
        raw = bytes(obj)
        if self.proto == 0:
            self.write(pickle.STRING + repr(raw)[1:].encode("ascii") + b"\n")
        elif len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def py2_dumps(obj, protocol):
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


class Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def carbon_batch():
    now = 1700000000
    paths = ["servers.web%02d.cpu.user" % (i % 7) for i in range(60)]
    out = []
    for i, p in enumerate(paths):
        # carbon's cache hands the same path object to several datapoints: memo references.
        out.append((p, (now + 60 * (i // 7), i * 1.25 + 0.1)))
    out.append(("servers.web00.load", (time.time(), 0.3)))
    out.append(("servers.web00.count", (now, 12345)))
    return out


def edge_values():
    vals = [42.0, 0.1, -0.0, 0.0, 1e300, -1e-300, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
            float("inf"), float("-inf"), float("nan"), 1 / 3, 123456789012345.67, 1e16, 1e15, 0.0001, 0.00001,
            2**53 + 1, 2**63 - 1, -(2**63), 2**64 + 1, 2**70, -(2**100), 10**400, True, False, None,
            " 12.5 ", "1_000", "1e3", "-inf", "nan", "abc", "", (1, 2), [3]]
    items = [("edge.v%02d" % i, (1700000000, v)) for i, v in enumerate(vals)]
    stamps = [-1, 1700000000.25, 2**31, 2**40, -(2**40), "1700000000", " 17e8 ", 1e20, float("inf"), None, True]
    items += [("edge.t%02d" % i, (t, 1.5)) for i, t in enumerate(stamps)]
    return items


def paths():
    names = ["ünï.cödé.日本", "a b", "", "a\nb", "tab\there", "x" * 5000, "y" * 4096, "back\\slash'quote\"dq",
             "percent%41.u\\u0041", "ctl\x00nul", "del\x7f", "surrogate\ud800", "emoji.😀", "end."]
    return [(n, (1700000000, float(i))) for i, n in enumerate(names)]


def shapes():
    return [
        ["list.item", [1700000000, 1.0]],
        ("tuple3", (1, 2), 3),
        None,
        ("a", 1),
        (1, (2, 3)),
        ("short.point", (1,)),
        ("long.point", (1, 2, 3)),
        ("ok.after", (1700000000, 2.0)),
    ]


def large(n):
    return [("large.m%05d" % i, (1700000000 + i, i * 0.5)) for i in range(n)]


def nested(depth):
    obj = [("inner", (1, 2.0))]
    for _ in range(depth):
        obj = [obj]
    return obj


def main():
    cases = []

    def add(name, protocol, data, refuse=False):
        if refuse:
            expected = []
        else:
            loaded = pickle.loads(data, encoding="utf-8")
            expected = [expect(item) for item in loaded]
        cases.append({"name": name, "protocol": protocol, "pickle": data.hex(), "refuse": refuse, "expect": expected})

    datasets = {
        "carbon": carbon_batch(),
        "edge": edge_values(),
        "paths": paths(),
        "shapes": shapes(),
        "large": large(2500),
        "empty": [],
        "tuple-top": tuple(carbon_batch()[:5]),
    }
    for protocol in range(0, 6):
        for name, data in datasets.items():
            add(name, protocol, pickle.dumps(data, protocol=protocol))
        if protocol >= 3:
            add("bytes", protocol, pickle.dumps([(b"bytes.path", (b"1700000000", b" 3.25 "))], protocol=protocol))
        refusals = {
            "os-system": [("a", (1, 2.0)), Evil()],
            "dict": {"a": (1, 2.0)},
            "set": [("a", (1, 2.0)), {1, 2}],
            "frozenset": frozenset([1]),
            "datetime": [("a", (datetime.datetime(2020, 1, 1), 1.0))],
            "deep": nested(100),
        }
        if protocol < 3:
            refusals["bytes-reduce"] = [(b"a", (1, 2.0))]
        if protocol == 5:
            refusals["bytearray"] = [("a", (1, bytearray(b"1")))]
        for name, data in refusals.items():
            raw = pickle.dumps(data, protocol=protocol)
            cases.append({"name": name, "protocol": protocol, "pickle": raw.hex(), "refuse": True, "expect": []})
    # Python 2 senders: str paths and values through the STRING opcodes.
    for protocol in range(0, 3):
        py2 = [(Py2Str(b"py2.m%d" % i), (1700000000 + i, float(i) / 3)) for i in range(20)]
        py2 += [(Py2Str(b"py2.quote'\"\\x"), (Py2Str(b"1700000000"), Py2Str(b" 4.5"))),
                (Py2Str("py2.utf8.é".encode("utf-8")), (1, 2)),
                (Py2Str(b"tab\tin.path"), (1, 2)),
                (Py2Str(b"z" * 300), (1, 2)),
                (Py2Str(b"py2.nan"), (1, Py2Str(b"nan")))]
        add("python2-str", protocol, py2_dumps(py2, protocol))
    json.dump({"python": sys.version, "cases": cases}, sys.stdout)


if __name__ == "__main__":
    main()
