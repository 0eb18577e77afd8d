#!/usr/bin/env python3
"""Whisper oracle: PyPI whisper 1.1.10 and carbonate 1.1.10's fill, driven in batch with a pinned clock.

bucky's differential tests (crates/whisper/tests/it/oracle.rs, crates/bucky-cli/tests/it/whisper_cli.rs) run the
same operations through bucky and through this script, which only calls the reference packages and reports
what they did; it implements no whisper logic itself.

    whisper_oracle.py [--workdir DIR] < cases.jsonl > results.jsonl
    whisper_oracle.py --version

Each input line is one case, ``{"id": ..., "ops": [op, ...]}``. The case runs in a fresh directory (under
DIR, default a temp dir) and its files are named by the ops' ``file``/``src``/``dst`` fields (plain names,
no slashes). Each output line is ``{"id": ..., "results": [result per op]}``.

Values going in are JSON numbers or the strings "NaN", "Infinity", "-Infinity"; -0.0 is a number.
Fields an op does not name are ignored (the Rust side adds its own, such as ``"safe"`` on fill).

Ops and their results (every result may instead be ``{"error": class name, "message": str}``):
  {"op": "parse", "spec": "1m:30d"}                      -> {"result": [seconds_per_point, points]}
  {"op": "create", "file", "retentions": [spec, ...], "xff": x, "agg": name, "sparse": bool}
  {"op": "update_many", "file", "points": [[t, v], ...], "now": N}
  {"op": "update", "file", "t": T, "v": V, "now": N}
  {"op": "merge", "src", "dst", "from": T|null, "to": T|null, "now": N}
  {"op": "fill", "src", "dst", "now": F, "startFrom": F|null, "endAt": F, "overwrite": bool}
        carbonate.fill.fill_archives(src, dst, startFrom (default now), endAt, overwrite)
  {"op": "put", "file", "hex": "..."}                   write raw bytes (hand-made or hostile files)
  {"op": "fetch", "file", "from": T, "until": T|null, "now": N, "archive": spec|null}
        -> {"result": null | {"fromTime", "untilTime", "step", "values": [...], "bits": [...]}}
  {"op": "info", "file"}                                 -> {"result": whisper.info() dict or null}
  {"op": "resize", "file", "retentions": [spec, ...], "xff": x|null, "agg": name|null, "aggregate": bool,
   "nobackup": bool, "now": N}
        runs the installed bin/whisper-resize.py in-process (runpy, sys.argv set, output discarded)
        -> {"result": {"backup": hex of FILE.bak or null, "files": sorted names in the case directory}}
        Its "file does not exist" exit is reported as FileNotFoundError, any other exit as ScriptExit.
  {"op": "set_aggregation", "file", "agg": name, "xff": x|null}
        whisper.setAggregationMethod(file, agg, xff)   -> {"result": the old method}
Every op that writes a file (create, update_many, update, merge, fill, put) also reports that file's bytes
afterwards as ``"bytes": hex`` (null if it does not exist), on success and on error alike, so a caller can
see whether a refused operation changed the file. Fetch values are numbers, null for None, or the strings
"NaN"/"Infinity"/"-Infinity"; ``bits`` repeats them as the exact IEEE-754 bits (16 hex digits) so a
caller can compare bit for bit without trusting any JSON float parser.

The clock is pinned for every call: ``time.time = lambda: NOW`` (a float for fill, as carbonate reads a
float clock), and the ``now`` argument is also passed where whisper takes one.
"""

import argparse
import contextlib
import importlib.metadata
import io
import json
import math
import os
import runpy
import shutil
import struct
import sys
import sysconfig
import tempfile
import time

import whisper
import carbonate.fill


def value_in(v):
    if isinstance(v, str):
        return {'NaN': float('nan'), 'Infinity': float('inf'), '-Infinity': float('-inf')}[v]
    return float(v)


def number_in(v):
    """A time: int if it is integral JSON, float otherwise; strings for non-finite floats."""
    if isinstance(v, str):
        return value_in(v)
    return v


def value_out(v):
    if v is None:
        return None
    if math.isnan(v):
        return 'NaN'
    if math.isinf(v):
        return 'Infinity' if v > 0 else '-Infinity'
    return v


def bits_out(v):
    if v is None:
        return None
    return struct.pack('>d', v).hex()


def pin_clock(now):
    time.time = lambda: now


def file_hex(path):
    try:
        with open(path, 'rb') as fh:
            return fh.read().hex()
    except (IOError, OSError):
        return None


def fetch_out(res):
    if res is None:
        return None
    (start, end, step), values = res
    return {
        'fromTime': start,
        'untilTime': end,
        'step': step,
        'values': [value_out(v) for v in values],
        'bits': [bits_out(v) for v in values],
    }


class _Discard(io.TextIOBase):
    def write(self, s):
        return len(s)


class ScriptExit(Exception):
    """A reference script exited with a non-zero status; the class name is what the test compares."""


def run_script(name, argv):
    """Runs an installed whisper script in this process (so the pinned clock applies), output discarded."""
    script = os.path.join(sysconfig.get_path('scripts'), name)
    saved = sys.argv
    sys.argv = [script] + argv
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(_Discard()), contextlib.redirect_stderr(err):
            runpy.run_path(script, run_name='__main__')
    except SystemExit as exit:
        if exit.code not in (None, 0):
            message = (err.getvalue().strip() or str(exit.code)).splitlines()[0]
            if 'does not exist' in message:
                raise FileNotFoundError(message)
            raise ScriptExit(message)
    finally:
        sys.argv = saved


def run_op(op, where):
    path = lambda key: os.path.join(where, op[key])  # noqa: E731
    kind = op['op']
    if kind == 'parse':
        return {'result': list(whisper.parseRetentionDef(op['spec']))}
    if kind == 'create':
        archives = [whisper.parseRetentionDef(spec) for spec in op['retentions']]
        whisper.create(path('file'), archives, xFilesFactor=value_in(op['xff']),
                       aggregationMethod=op['agg'], sparse=op.get('sparse', False))
        return {}
    if kind == 'put':
        with open(path('file'), 'wb') as fh:
            fh.write(bytes.fromhex(op['hex']))
        return {}
    if kind == 'update_many':
        pin_clock(op['now'])
        points = [(number_in(t), value_in(v)) for t, v in op['points']]
        whisper.update_many(path('file'), points, now=op['now'])
        return {}
    if kind == 'update':
        pin_clock(op['now'])
        whisper.update(path('file'), value_in(op['v']), number_in(op['t']), now=op['now'])
        return {}
    if kind == 'fetch':
        pin_clock(op['now'])
        res = whisper.fetch(path('file'), number_in(op['from']), number_in(op.get('until')),
                            now=op['now'], archiveToSelect=op.get('archive'))
        return {'result': fetch_out(res)}
    if kind == 'merge':
        pin_clock(op['now'])
        whisper.merge(path('src'), path('dst'), time_from=op.get('from'), time_to=op.get('to'),
                      now=op['now'])
        return {}
    if kind == 'fill':
        now = op['now']
        pin_clock(now)
        start_from = op.get('startFrom')
        carbonate.fill.fill_archives(path('src'), path('dst'),
                                     startFrom=now if start_from is None else number_in(start_from),
                                     endAt=number_in(op.get('endAt', 0)),
                                     overwrite=op.get('overwrite', False), lock_writes=False)
        return {}
    if kind == 'resize':
        argv = [path('file')] + list(op['retentions'])
        if op.get('xff') is not None:
            argv.append('--xFilesFactor=%r' % value_in(op['xff']))
        if op.get('agg') is not None:
            argv.append('--aggregationMethod=%s' % op['agg'])
        if op.get('aggregate'):
            argv.append('--aggregate')
        if op.get('nobackup'):
            argv.append('--nobackup')
        pin_clock(op['now'])
        run_script('whisper-resize.py', argv)
        return {'result': {'backup': file_hex(path('file') + '.bak'), 'files': sorted(os.listdir(where))}}
    if kind == 'set_aggregation':
        xff = op.get('xff')
        old = whisper.setAggregationMethod(path('file'), op['agg'], None if xff is None else value_in(xff))
        return {'result': old}
    if kind == 'info':
        info = whisper.info(path('file'))
        if info is not None:
            info = dict(info, xFilesFactor=value_out(info['xFilesFactor']))
        return {'result': info}
    raise ValueError('unknown op %r' % kind)


WRITES = {'create': 'file', 'put': 'file', 'update_many': 'file', 'update': 'file', 'merge': 'dst',
          'fill': 'dst', 'resize': 'file', 'set_aggregation': 'file'}


def run_case(case, base):
    where = tempfile.mkdtemp(dir=base)
    results = []
    real_time = time.time
    try:
        for op in case['ops']:
            try:
                result = run_op(op, where)
            except Exception as err:  # the reference's refusal (or crash): report its class
                result = {'error': type(err).__name__, 'message': str(err)}
            finally:
                time.time = real_time
            target = WRITES.get(op['op'])
            if target is not None:
                result['bytes'] = file_hex(os.path.join(where, op[target]))
            results.append(result)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return {'id': case.get('id'), 'results': results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workdir', help='directory for the cases\' files (default: a temp dir)')
    parser.add_argument('--version', action='store_true', help='print the reference versions and exit')
    args = parser.parse_args()
    if args.version:
        print('whisper %s carbonate %s' % (importlib.metadata.version('whisper'),
                                           importlib.metadata.version('carbonate')))
        return 0
    base = tempfile.mkdtemp(prefix='whisper-oracle-', dir=args.workdir)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            sys.stdout.write(json.dumps(run_case(json.loads(line), base)) + '\n')
            sys.stdout.flush()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
