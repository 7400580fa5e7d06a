"""Keep the garbage collector's full passes short in the long-running commands.

A full (generation 2) collection walks every object the collector tracks. After start-up a
``serve`` process holds some hundreds of thousands of them (FastAPI, pydantic, asyncpg,
apprise, their modules and caches), and a full pass took 18-78 ms in the fan-out benchmark
(``gc.callbacks``), the simulator's ~45 ms: landing during a fan-out, it delayed the last
orders by as much. ``gc.freeze()`` moves what start-up built out of the collector's sight
(it lives as long as the process anyway), so a full pass walks only what serving created.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then freeze every object alive now.

    Called twice by ``serve`` and ``up``: before the event loop runs (the imports: ~110,000
    objects, a 55 ms pass, out of the way before the first request), and once serving (what
    start-up built since: a short pass).
    """
    gc.collect()
    gc.freeze()
