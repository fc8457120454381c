"""Fold an index's log into its file in a process of its own:
`python -m storage.hnsw_fold PATH DIM CONFIG_JSON TARGET [compact]`.

A whole write in the server copies the graph under the GIL (6.1 s at 1M vectors on a loaded machine); this
process loads the file and replays its log (`VectorIndex.load`, with its own GIL, at nice 10), with `compact`
rebuilds it from its live vectors without the deleted slots (after the reindex job's compaction, which rebuilt
the server's graph the same way: `IndexMirror.compact`), writes the new file to TARGET and prints its sidecar as
JSON; the server only puts it in place (`VectorIndex.save`). It is started by fork+exec (`subprocess`): no code
of the server's runs in a forked child.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from appliance.config_sections import IndexConfig
from storage.vectors import VectorIndex

COMPACT_CHUNK = 8192  # vectors read from the loaded index and added to the new one at a time


def main(argv: list[str]) -> int:
    path, dim, config, target = Path(argv[0]), int(argv[1]), IndexConfig(**json.loads(argv[2])), Path(argv[3])
    os.nice(10)  # the server's requests first
    index = VectorIndex(path, dim, config)
    problem = index.load()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    if argv[4:] == ["compact"]:
        index = compacted(index)
    print(json.dumps(index.write_copy(target)))
    return 0


def compacted(index: VectorIndex) -> VectorIndex:
    """The live vectors of `index` in a new graph (its twin), without the deleted slots."""
    fresh = index.twin()
    ids = index.ids()
    for start in range(0, len(ids), COMPACT_CHUNK):
        chunk = ids[start:start + COMPACT_CHUNK]
        fresh.upsert(chunk, index.get(chunk), threads=os.cpu_count() or 1)
    fresh.synced_until = index.synced_until
    return fresh


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
