"""Creates N empty .wsp files under ROOT in 10,000 directories, for the listing benchmarks.

usage: make-tree.py ROOT N
"""
import os
import sys

root, n = sys.argv[1], int(sys.argv[2])
dirs = 10000
per_dir = -(-n // dirs)
made = 0
for d in range(dirs):
    path = os.path.join(root, "servers", f"host{d // 100:03d}", f"cpu{d % 100:03d}")
    os.makedirs(path, exist_ok=True)
    for f in range(min(per_dir, n - made)):
        os.close(os.open(os.path.join(path, f"m{f:04d}.wsp"), os.O_CREAT | os.O_WRONLY, 0o644))
    made += min(per_dir, n - made)
    if made >= n:
        break
