"""Predictions of a trained run on unlabelled videos: extract them as the run's cache was, then score.

    temporal.predict_videos("runs/stan", videos_dir="new/")          # -> predictions.csv
    temporal.predict_videos("runs/stan", cache_dir="cache_new/")     # an existing cache

The run records its cache's fingerprint (backbone, weights digest, preprocessing, sampling, compute
precision, dtype) and provenance (where the weights came from); `extract_config` turns them back
into extraction settings, and the backbone they load must give the very same fingerprint, or the
features would not mean what the model learnt.

The one place stage two calls stage one: `extract` is imported inside the functions that extract,
so training and evaluation never load it (and stage-two DVC stages do not depend on its code).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import storage
from storage.info import fingerprint_diff
from temporal.dataset import open_videos
from temporal.meta import RunMeta
from temporal.run import RunError, check_fingerprint, load_run, recorded_path
from temporal.scoring import write_scores


def extract_config(fp: dict, provenance: dict | None = None, weights: str | None = None,
                   device: str = "auto"):
    """The `extract.ExtractConfig` that reproduces `fp`, the fingerprint of the cache a run was trained on."""
    from extract.backbone import PRECISIONS, weights_from_text
    from extract.config import ExtractConfig

    if "model" not in fp or "sampling" not in fp:
        raise RunError("the run's cache was not made by `python -m extract` (its fingerprint names no "
                       "backbone): extract the videos the same way yourself and pass --cache")
    sampling = dict(fp["sampling"])
    policy = sampling.pop("policy")
    precision = {name: p for p, (_, name) in PRECISIONS.items()}[fp["compute"]]
    provenance = provenance or {}
    source = provenance.get("weights") or weights_from_text(provenance.get("weights_source", ""))
    kw: dict = {"model": fp["model"], "model_kwargs": fp["model_kwargs"], "dtype": fp["dtype"],
                "precision": precision, "max_frames": sampling.get("max_frames"), "device": device,
                "fps": sampling[policy] if policy == "fps" else None}
    if policy != "fps":
        kw[policy] = sampling[policy]
    if weights:
        kw["weights"] = weights
    elif source["kind"] == "file":  # the path as given at extraction
        kw["weights"] = source["path"]
    elif source["kind"] == "random":
        kw["pretrained"], kw["seed"] = False, source["seed"]
    return ExtractConfig(**kw)


def default_cache(run: Path, videos_dir: Path) -> Path:
    """RUN/predict-cache/<folder>-<hash of its absolute path>: video ids are paths inside the folder,
    so two folders holding a `clip.mp4` each must not share a cache."""
    where = videos_dir.resolve()
    tag = hashlib.sha1(str(where).encode()).hexdigest()[:8]
    return run / "predict-cache" / f"{where.name or 'videos'}-{tag}"


def provenance_of(run: Path, meta: RunMeta) -> dict:
    """How the training cache was made: recorded in the run, else read from that cache if it is here."""
    if meta.provenance:
        return meta.provenance
    try:
        return storage.open_cache(recorded_path(run, meta, "cache")).info.get("provenance") or {}
    except (FileNotFoundError, storage.CacheError):
        return {}


def extract_for_run(run: Path, meta: RunMeta, videos_dir: Path, cache_out: Path, weights: str | None = None,
                    device: str = "auto", log=print) -> list[str]:
    """Extract the videos under `videos_dir` into `cache_out` with the run's backbone and sampling
    (videos already there are kept); returns the ids of the folder's videos."""
    from extract.backbone import load_backbone
    from extract.config import ExtractError
    from extract.discover import find_videos
    from extract.engine import run as extract

    try:
        cfg = extract_config(meta.fingerprint, provenance_of(run, meta), weights, device)
        bb = load_backbone(cfg)
        diff = fingerprint_diff(meta.fingerprint, bb.fingerprint(cfg))
        if diff:
            raise RunError(f"extracting with {cfg.model} now would not give the features the run learnt "
                           "from:\n  " + "\n  ".join(diff)
                           + "\n(--weights FILE names the backbone weights used at training)")
        summary = extract(cfg, videos_dir, cache_out, backbone=bb)
    except ExtractError as e:
        raise RunError(f"cannot extract {videos_dir} as the run's cache was: {e}") from None
    log(summary.line())
    for vid, reason in sorted(summary.failures.items()):
        log(f"failed: {vid}: {reason}")
    return [v.id for v in find_videos(videos_dir, cfg.extensions)]


def predict_videos(run_dir: str | os.PathLike, videos_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, out: str | os.PathLike = "predictions.csv",
                   cache_out: str | os.PathLike | None = None, weights: str | None = None, log=print,
                   **overrides) -> Path:
    """Write `out`: video_id, predicted label(s) or value, one probability column per class, for
    the videos of `videos_dir` (a folder or a text file listing them; extracted first, into
    `cache_out`, default RUN/predict-cache/...) or of the existing cache `cache_dir`.
    `overrides`: eval_mode, eval_views, batch_size, device."""
    if (videos_dir is None) == (cache_dir is None):
        raise RunError("give either videos (a folder to extract) or a cache, not both")
    if cache_out is not None and videos_dir is None:
        raise RunError("--cache-out is where --videos are extracted to; with --cache nothing is extracted")
    run = Path(run_dir)
    model = load_run(run, **overrides)
    if videos_dir is not None:
        videos_dir = Path(videos_dir)
        if not videos_dir.exists():  # a folder, or a text file listing videos (as `python -m extract`)
            raise FileNotFoundError(f"videos folder or list {videos_dir} not found")
        cache_dir = Path(cache_out) if cache_out is not None else default_cache(run, videos_dir)
        wanted = extract_for_run(run, model.meta, videos_dir, cache_dir, weights, model.config.device, log)
    cache = storage.open_cache(cache_dir)
    check_fingerprint(cache_dir, cache.fingerprint, model.meta)
    ids = [v for v in (wanted if videos_dir is not None else cache.video_ids) if v in cache]
    empty = [v for v in ids if cache.num_frames(v) == 0]
    if empty:
        log(f"note: {len(empty)} video(s) have no frames and get no prediction: {empty[:5]}")
    ids = [v for v in ids if v not in set(empty)]
    if not ids:
        raise RunError(f"no video with frames to predict in {cache_dir}")
    scores = model.scores(open_videos(cache, ids, model.config, log), list(range(len(ids))))
    out = Path(out)
    write_scores(out, ids, model.task, model.classes, scores)
    log(f"predicted {len(ids)} video(s) with {run} -> {out}")
    return out
