#!/usr/bin/env python3
"""A carbon pickle sender for bucky-pickle-relay's end-to-end tests.

Frames are produced by carbon 1.1.10's own client code: CarbonPickleClientProtocol._sendDatapointsNow
(`pickle.dumps(datapoints, protocol=2)` through twisted's Int32StringReceiver.sendString), batched by
MAX_DATAPOINTS_PER_MESSAGE (500) like carbon's client, with float timestamps and values as carbon-relay
forwards them. `--protocol N` instead pickles with protocol N (other senders: collectors, Python 2
clients), framed the same way.

Writes the expected points, as carbon would parse them, to --expect: one line per point,
`path timestamp_bits value_bits` (IEEE-754 doubles in hex), so the comparison is exact.

`--check-whisper DIR --expect FILE` instead reads the expected points back from carbon-cache's whisper
files under DIR (with the whisper module), waiting up to --wait seconds for carbon to write them, and
prints a JSON report {"expected", "found", "missing", "mismatched"} (exit 1 unless all match).

Also: `--evil MARKER` sends one pickle that calls os.system("touch MARKER") when unpickled unsafely,
and exits.
"""
import argparse
import os
import pickle
import random
import socket
import struct
import sys
import threading

from carbon.client import CarbonPickleClientProtocol

MAX_DATAPOINTS_PER_MESSAGE = 500


class Capture:
    """A transport that keeps what carbon's protocol writes."""

    def __init__(self):
        self.chunks = []

    def write(self, data):
        self.chunks.append(data)

    def writeSequence(self, seq):
        self.chunks.extend(seq)


def carbon_frame(datapoints):
    proto = CarbonPickleClientProtocol()
    proto.transport = Capture()
    proto._sendDatapointsNow(datapoints)
    return b"".join(proto.transport.chunks)


def plain_frame(datapoints, protocol):
    data = pickle.dumps(datapoints, protocol=protocol)
    return struct.pack("!I", len(data)) + data


def value_for(rng, i):
    kind = i % 10
    if kind == 0:
        return rng.random() * 10 ** rng.randint(-30, 30)
    if kind == 1:
        return float(rng.randint(-(2**53), 2**53))
    if kind == 2:
        return rng.randint(0, 1000) / 10.0
    if kind == 3:
        return -rng.random()
    if kind == 4:
        return struct.unpack(">d", struct.pack(">Q", rng.getrandbits(64) & 0x7FEFFFFFFFFFFFFF))[0]
    if kind == 5:
        return rng.choice([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e16, 1e-5, 42.0])
    if kind == 6:
        return float(rng.randint(0, 100))
    if kind == 7:
        return 1.0 / rng.randint(1, 1000)
    if kind == 8:
        return rng.gauss(0, 1e6)
    return float(i)


def bits(x):
    return struct.pack(">d", float(x)).hex()


def check_whisper(root, expect, wait):
    import json
    import time

    import whisper

    want = {}
    for line in open(expect):
        path, ts, value = line.split()
        t = struct.unpack(">d", bytes.fromhex(ts))[0]
        want[(path, int(t))] = value
    deadline = time.time() + wait
    while True:
        found, missing, mismatched = 0, [], []
        by_path = {}
        for (path, t) in want:
            by_path.setdefault(path, []).append(t)
        for path, stamps in by_path.items():
            f = os.path.join(root, *path.split(".")) + ".wsp"
            stored = {}
            if os.path.exists(f):
                try:
                    (start, end, step), values = whisper.fetch(f, min(stamps) - 1, max(stamps) + 1, now=max(stamps) + 60)
                    stored = {start + i * step: v for i, v in enumerate(values) if v is not None}
                except whisper.CorruptWhisperFile:
                    # carbon-cache writes a new file in place: its header may not be complete yet.
                    # Counted as missing this round; a file still unreadable at the deadline fails.
                    pass
            for t in stamps:
                if t not in stored:
                    missing.append("%s@%d" % (path, t))
                elif bits(stored[t]) != want[(path, t)]:
                    mismatched.append("%s@%d: stored %r" % (path, t, stored[t]))
                else:
                    found += 1
        if found == len(want) or mismatched or time.time() > deadline:
            break
        time.sleep(0.5)
    print(json.dumps({"expected": len(want), "found": found, "missing": missing[:10], "mismatched": mismatched[:10]}))
    if found != len(want):
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefix", default="e2e")
    ap.add_argument("--metrics", type=int, default=100)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--protocol", default="carbon", help="carbon (carbon's client) or 0-5")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--expect")
    ap.add_argument("--evil")
    ap.add_argument("--start", type=float, default=1700000000.0, help="first timestamp")
    ap.add_argument("--check-whisper")
    ap.add_argument("--wait", type=float, default=60)
    args = ap.parse_args()

    if args.check_whisper:
        check_whisper(args.check_whisper, args.expect, args.wait)
        return

    if args.evil:
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch " + args.evil,))

        frame = plain_frame([("evil.metric", (1700000000.0, 1.0)), Evil()], 2)
        with socket.create_connection((args.host, args.port), timeout=10) as s:
            s.sendall(frame)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            while s.recv(4096):
                pass
        return

    rng = random.Random(args.seed)
    points = []
    i = 0
    for k in range(args.points):
        for m in range(args.metrics):
            points.append(("%s.metric%04d" % (args.prefix, m), (args.start + 60 * k, value_for(rng, i))))
            i += 1
    if args.expect:
        with open(args.expect, "w") as f:
            for path, (ts, value) in points:
                f.write("%s %s %s\n" % (path, bits(ts), bits(value)))

    def frame(batch):
        if args.protocol == "carbon":
            return carbon_frame(batch)
        return plain_frame(batch, int(args.protocol))

    shares = [points[c :: args.connections] for c in range(args.connections)]
    errors = []

    def send(share):
        try:
            with socket.create_connection((args.host, args.port), timeout=120) as s:
                for b in range(0, len(share), MAX_DATAPOINTS_PER_MESSAGE):
                    s.sendall(frame(share[b : b + MAX_DATAPOINTS_PER_MESSAGE]))
                # Half-close and wait for the relay to close: it has read every frame.
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
        except Exception as e:  # reported below, exit code 1
            errors.append(repr(e))

    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("sender errors: %s" % errors, file=sys.stderr)
        sys.exit(1)
    print("sent %d points" % len(points))


if __name__ == "__main__":
    main()
