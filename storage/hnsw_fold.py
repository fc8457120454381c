"""Fold an index's log into its file in a process of its own:
`python -m storage.hnsw_fold PATH DIM CONFIG_JSON TARGET`.

A whole write in the server copies the graph under the GIL (6.1 s at 1M vectors on a loaded machine); this
process loads the file and replays its log (`VectorIndex.load`, with its own GIL, at nice 10), writes the new
file to TARGET and prints its sidecar as JSON; the server only puts it in place (`VectorIndex.save`). It is
started by fork+exec (`subprocess`): no code of the server's runs in a forked child.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from appliance.config_sections import IndexConfig
from storage.vectors import VectorIndex


def main(argv: list[str]) -> int:
    path, dim, config, target = Path(argv[0]), int(argv[1]), IndexConfig(**json.loads(argv[2])), Path(argv[3])
    os.nice(10)  # the server's requests first
    index = VectorIndex(path, dim, config)
    problem = index.load()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    print(json.dumps(index.write_copy(target)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
