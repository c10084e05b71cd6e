"""DVC stage `extract`: stage one over the demo videos, resuming an interrupted cache (params: extract.*).

A cache of other settings is what DVC would delete before re-running the stage: so do we.
Videos that fail are listed in cache/failures.jsonl and the summary; the stage fails only
when nothing at all could be extracted, so one bad file does not block every experiment.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys

import extract
import storage
from pipeline.params import load_params, parse, stage_parser

# settings that cannot change the features: changing one must not re-run the stage
NOT_FEATURES = ("batch_size", "compile", "threads", "decoders", "videos_per_shard", "workers", "scheduler",
                "decode_timeout", "extensions", "progress")
PARAMS = [f"extract.{f.name}" for f in dataclasses.fields(extract.ExtractConfig)
          if f.name not in NOT_FEATURES]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("extract", __doc__)
    ap.add_argument("--videos", required=True,
                    help="folder of videos (or a text file listing them)")
    ap.add_argument("--out", required=True,
                    help="cache folder (created, resumed, or rebuilt when its settings differ)")
    a = parse(ap, argv)
    cfg = extract.ExtractConfig.from_dict(load_params(a.params).get("extract") or {})
    try:
        summary = extract.run(cfg, a.videos, a.out)
    except storage.FingerprintMismatch as e:
        print(f"note: {a.out} was extracted with other settings; starting it afresh\n{e}")
        shutil.rmtree(a.out)
        summary = extract.run(cfg, a.videos, a.out)
    print(summary.line())
    return 0 if summary.done + summary.skipped else 1


if __name__ == "__main__":
    sys.exit(main())
