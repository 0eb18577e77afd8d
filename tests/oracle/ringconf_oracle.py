#!/usr/bin/env python3
"""Ring-config oracle: where carbon 1.1.10 and carbonate 1.1.10 place metrics, read from their own files.

bucky's agreement tests (crates/ringconf/tests/agreement.rs) compare the ringconf crate against this script,
which only calls the peers' own code and reports what it answers; it parses and hashes nothing itself.

    ringconf_oracle.py --batch < jobs.jsonl > results.jsonl

Each input line is a JSON object {"kind": "carbon" | "carbonate", "path": FILE, "cluster": NAME or null,
"names": [...]}:

* carbon: carbon's own settings reader, exactly as ``carbon-relay [--instance NAME]`` runs it
  (``carbon.conf.read_config('carbon-relay', ...)``: ``[relay]``, then ``[relay:NAME]`` over it), the router
  class RELAY_METHOD names, and the destinations of ``util.parseDestinations(DESTINATIONS)`` added in order,
  each once (``CarbonClientManager.startClient`` skips one it already has).
* carbonate: ``carbonate.config.Config(FILE)`` and ``carbonate.cluster.Cluster(config, NAME or 'main')``,
  which is what ``carbon-lookup -c FILE -C NAME`` runs.

Each output line is {"placements": [[[server, port, instance], ...] per name]} or {"error": "message"}.
carbonate jobs also report "diverse_raw", the value carbonate hands to the router as DIVERSE_REPLICAS
(carbonate passes the configured string on, so "false" is truthy), and, when that value is a non-empty
string configparser reads as false, "placements_boolean": the same Cluster with DIVERSE_REPLICAS set to
that boolean (what the relay the file describes does).
"""

import json
import sys

from carbon import util
from carbon.conf import read_config
from carbon.routers import DatapointRouter
from carbonate.cluster import Cluster
from carbonate.config import Config

FALSE_WORDS = ('0', 'no', 'false', 'off')


def carbon_router(path, instance):
    options = {'config': path, 'instance': instance, 'pidfile': None, 'logdir': None}
    settings = read_config('carbon-relay', options, ROOT_DIR='/nonexistent-graphite-root')
    router = DatapointRouter.plugins[settings.RELAY_METHOD](settings)
    seen = set()
    for destination in util.parseDestinations(settings.DESTINATIONS):
        if destination not in seen:
            seen.add(destination)
            router.addDestination(destination)
    return router


def place(router, names):
    return [[list(d) for d in router.getDestinations(name)] for name in names]


def run_job(job):
    names = job['names']
    if job['kind'] == 'carbon':
        return {'placements': place(carbon_router(job['path'], job['cluster']), names)}
    config = Config(job['path'])
    cluster_name = job['cluster'] or 'main'
    cluster = Cluster(config, cluster_name)
    raw = config.diverse_replicas(cluster_name)
    result = {'placements': place(cluster.ring, names), 'diverse_raw': raw}
    if isinstance(raw, str) and raw.strip().lower() in FALSE_WORDS:
        cluster.ring.diverse_replicas = False
        result['placements_boolean'] = place(cluster.ring, names)
    return result


def main():
    if sys.argv[1:] != ['--batch']:
        sys.stderr.write(__doc__)
        return 2
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            result = run_job(job)
        except BaseException as err:  # the peers' refusals, SystemExit included
            result = {'error': '%s: %s' % (type(err).__name__, err)}
        sys.stdout.write(json.dumps(result) + '\n')
        sys.stdout.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main())
