"""The protocol every stage follows, in one place.

    run_stage(Stage(...), work) -> summary

1. claim: record the stage, its input fingerprint and config in run.json; a folder that
   still holds outputs of other inputs is refused (runs.claim_stage);
2. skip: a folder whose _SUCCESS carries the same fingerprint, with no planned shard
   missing, is complete: its summary comes back marked `skipped` and nothing runs;
3. work: the stage's own function, which returns its summary;
4. mark complete: `<out_dir>/_SUCCESS` with the summary and fingerprint, written last.

The run-root lock (one writer at a time) is taken around the whole stage by the
`@locked` decorator of each stage's entry point, before its inputs are read, so that
the fingerprint is computed from inputs no other headrot process is changing.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from headrot import runs, storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str                   # run.json key and log prefix
    root: str                   # the run root
    out_dir: str                # the folder the stage completes (its _SUCCESS)
    digest: str                 # fingerprint of every input (runs.fingerprint)
    config: Mapping[str, Any]   # recorded in run.json (credentials redacted there)
    count_key: str              # the summary's count a skip reports ("written", "rows", ...)
    noun: str                   # what count_key counts, for the log
    pending: Sequence[str] = field(default=())  # planned shards not yet written: a stage with any is not skipped
    replace: bool = False       # a record of other inputs is taken over, not refused (runs.claim_stage)


def run_stage(stage: Stage, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Claim, skip when complete, else work and mark complete; returns the stage's summary."""
    runs.claim_stage(stage.root, stage.name, stage.digest, dict(stage.config), stage.out_dir, stage.replace)
    if not stage.pending:
        skipped = runs.completed(stage.name, stage.out_dir, stage.digest, stage.count_key, stage.noun)
        if skipped is not None:
            return skipped
    summary = {"fingerprint": stage.digest, **work()}
    storage.mark_complete(stage.out_dir, summary)
    log.info("%s: done: %s", stage.name,
             json.dumps({k: v for k, v in summary.items() if k != "fingerprint"}, default=str))
    return summary
