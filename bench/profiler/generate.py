"""Write the benchmark model: python -m bench.profiler.generate PATH LAYERS

Runs in its own process so the benchmark's parent stays small (a child's ru_maxrss starts
from its parent's peak on Linux). Prints {"parameters": N, "seconds": S} as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.unit.hardware import onnxgen


def main() -> None:
    path, layers = Path(sys.argv[1]), int(sys.argv[2])
    start = time.perf_counter()
    g = onnxgen.transformer(d_model=1024, layers=layers, heads=16, vocab=32000)
    g.write(path, chunk_elems=1 << 22)  # 16 MiB of random weights at a time
    seconds = time.perf_counter() - start
    print(json.dumps({"parameters": g.expected.parameters, "seconds": seconds}))


if __name__ == "__main__":
    main()
