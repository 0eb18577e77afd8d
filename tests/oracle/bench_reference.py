"""Times the reference implementations in-process, for bucky's side-by-side benchmarks.

usage: bench_reference.py fill SRC DST_TEMPLATE NOW REPEAT
       bench_reference.py update_many PATH_TEMPLATE POINTS_FILE NOW REPEAT
Prints one JSON object: {"seconds_per_op": <median>}. Each repetition works on a fresh copy of the template
(the copy is not timed).
"""
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

real_time = time.perf_counter


def pin(now):
    time.time = lambda: now


def time_on_copies(template, repeat, op):
    """Median seconds of op(path) over `repeat` runs, each on a fresh copy of `template` (copy not timed).
    The median, like the Rust side: a run preempted on a busy machine does not move it."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "work.wsp")
        for _ in range(repeat):
            shutil.copyfile(template, path)
            t0 = real_time()
            op(path)
            times.append(real_time() - t0)
    return statistics.median(times)


def main():
    op = sys.argv[1]
    if op == "fill":
        from carbonate.fill import fill_archives
        src, template, now, repeat = sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
        pin(now)
        seconds = time_on_copies(template, repeat, lambda dst: fill_archives(src, dst, startFrom=now))
    elif op == "update_many":
        import whisper
        template, points_file, now, repeat = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        points = []
        with open(points_file) as f:
            for line in f:
                t, v = line.split()
                points.append((int(t), float(v)))
        seconds = time_on_copies(template, repeat, lambda path: whisper.update_many(path, points, now=now))
    else:
        sys.exit("unknown op %r" % op)
    print(json.dumps({"seconds_per_op": seconds}))


if __name__ == "__main__":
    main()
