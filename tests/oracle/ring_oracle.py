#!/usr/bin/env python3
"""Placement oracle: carbon 1.1.10's own ConsistentHashingRouter / ConsistentHashRing, driven in batch.

bucky's differential tests (crates/hashring/tests) compare the hashring crate against this script, which
only builds carbon's objects and reports what they answer; it implements no hashing itself.

Modes
-----
Human mode (the default):
    ring_oracle.py [--hash carbon_ch|fnv1a_ch] [--replicas N] [--diverse] [--walk] NODE... < names
  NODE is ``server[:port][=instance]`` or ``[v6][:port][=instance]`` (the port does not enter carbon's
  hash; default 2004). Prints ``metric<TAB>server:instance[,...]`` per name; a node without instance prints
  as ``server:``, the empty instance as ``server:''``. ``--walk`` prints ``ConsistentHashRing.get_nodes``
  instead of the router's destinations.

Batch mode (one process for many rings):
    ring_oracle.py --batch < jobs.jsonl > results.jsonl
  Each input line is a JSON object
    {"hash": "carbon_ch", "nodes": [[server, port, instance-or-null], ...], "replicas": N,
     "diverse": bool, "names": [...], "walk": bool (optional), "ring": bool (optional)}
  and each output line is {"placements": [[node index, ...] per name]}, plus "ring": [[position, node
  index], ...] when asked, or {"error": "message"} when carbon refuses the ring.

Bench mode:
    ring_oracle.py --bench [--hash H] [--replicas N] [--diverse] NODE... < names
  Times getDestinations over all names (after reading them) and prints ``names=N seconds=S rate=R``.
"""

import argparse
import importlib.metadata
import json
import sys
import time

from carbon.routers import ConsistentHashingRouter

CARBON_DEFAULT_PORT = 2004


class Settings(object):
    """The attributes ConsistentHashingRouter reads from carbon's settings object."""

    def __init__(self, hash_type, replicas, diverse):
        self.ROUTER_HASH_TYPE = hash_type
        self.REPLICATION_FACTOR = replicas
        self.DIVERSE_REPLICAS = diverse


def build_router(hash_type, nodes, replicas, diverse):
    """nodes: [(server, port, instance)] in DESTINATIONS order. Returns (router, {(server, instance): index})."""
    router = ConsistentHashingRouter(Settings(hash_type, replicas, diverse))
    index = {}
    for i, (server, port, instance) in enumerate(nodes):
        router.addDestination((server, port, instance))
        index[(server, instance)] = i
    return router, index


def place(router, index, name, walk):
    if walk:
        return [index[node] for node in router.ring.get_nodes(name)]
    return [index[(server, instance)] for (server, _port, instance) in router.getDestinations(name)]


def parse_node(spec):
    """buckyd / carbon-c-relay member syntax -> (server, port, instance)."""
    hostport, eq, instance = spec.partition('=')
    instance = instance if eq else None
    if hostport.startswith('['):
        server, _, rest = hostport[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else ''
    else:
        server, _, port = hostport.partition(':')
    if not server:
        raise ValueError('invalid node %r: empty host' % spec)
    return server, int(port) if port else CARBON_DEFAULT_PORT, instance


def run_batch(stdin, stdout):
    for line in stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            nodes = [tuple(node) for node in job['nodes']]
            router, index = build_router(job['hash'], nodes, job['replicas'], job['diverse'])
            walk = job.get('walk', False)
            result = {'placements': [place(router, index, name, walk) for name in job['names']]}
            if job.get('ring'):
                result['ring'] = [[pos, index[node]] for (pos, node) in router.ring.ring]
        except Exception as err:  # carbon's own refusals (duplicate destination, ...)
            result = {'error': '%s: %s' % (type(err).__name__, err)}
        stdout.write(json.dumps(result) + '\n')
        stdout.flush()


def show(node):
    server, _port, instance = node
    if instance is None:
        return '%s:' % server
    return '%s:%s' % (server, instance if instance != '' else "''")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', action='store_true', help='JSON lines jobs on stdin')
    parser.add_argument('--bench', action='store_true', help='time getDestinations over the names on stdin')
    parser.add_argument('--hash', default='carbon_ch', help='ROUTER_HASH_TYPE (default carbon_ch)')
    parser.add_argument('--replicas', type=int, default=1, help='REPLICATION_FACTOR (default 1)')
    parser.add_argument('--diverse', action='store_true', help='DIVERSE_REPLICAS = True')
    parser.add_argument('--walk', action='store_true', help='print get_nodes() instead of the destinations')
    parser.add_argument('--version', action='store_true', help="print carbon's version and exit")
    parser.add_argument('nodes', nargs='*', metavar='NODE')
    args = parser.parse_args()

    if args.version:
        print('carbon %s' % importlib.metadata.version('carbon'))
        return 0
    if args.batch:
        run_batch(sys.stdin, sys.stdout)
        return 0
    if not args.nodes:
        parser.error('at least one NODE is needed')
    nodes = [parse_node(spec) for spec in args.nodes]
    router, index = build_router(args.hash, nodes, args.replicas, args.diverse)
    names = [line.rstrip('\n') for line in sys.stdin]
    names = [name for name in names if name]
    if args.bench:
        start = time.perf_counter()
        for name in names:
            for _ in router.getDestinations(name):
                pass
        seconds = time.perf_counter() - start
        print('names=%d seconds=%.6f rate=%.1f' % (len(names), seconds, len(names) / seconds if seconds else 0.0))
        return 0
    out = sys.stdout
    for name in names:
        out.write('%s\t%s\n' % (name, ','.join(show(nodes[i]) for i in place(router, index, name, args.walk))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
