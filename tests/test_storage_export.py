"""`python -m storage export`: a cache as one .npy per video, or one Parquet table, round-tripped."""

from __future__ import annotations

import json

import numpy as np
import pytest

import storage
from tests.testing import run_module

FP = {"model": "m", "fps": 1.0}
VIDEOS = [{"a/x.mp4": 3, "b/c/y.mp4": 20, "empty.mp4": 0}, {"ü z.mp4": 9, "x.mp4": 4}]


@pytest.fixture
def cache(tmp_path):
    """Two shards (zarr, hdf5) of float16 features; ids with folders, spaces, non-ASCII, no frames."""
    root, rng, data = tmp_path / "cache", np.random.default_rng(0), {}
    with storage.CacheWriter(root, dim=6, dtype="float16", fingerprint=FP) as w:
        for fmt, videos in zip(("zarr", "hdf5"), VIDEOS, strict=True):
            sw = w.shard_writer(w.allocate_shard(fmt))
            for vid, t in videos.items():
                data[vid] = (rng.standard_normal((t, 6)).astype("float16"),
                             np.sort(rng.uniform(0, 60, t)).astype("float32"))
                sw.add(vid, *data[vid])
            sw.commit()
    return root, data


def test_npy_round_trip(cache, tmp_path):
    root, data = cache
    out = tmp_path / "npy"
    proc = run_module("storage", "export", root, "--to", "npy", out, "--no-progress")
    assert f"{len(data)} videos exported as npy" in proc.stdout
    for vid, (feats, times) in data.items():
        f, t = np.load(out / f"{vid}.npy"), np.load(out / f"{vid}_timestamps.npy")
        assert f.dtype == np.float16 and f.shape == (len(times), 6)
        np.testing.assert_array_equal(f, feats)
        np.testing.assert_array_equal(t, times)
    assert (out / "b" / "c" / "y.mp4.npy").is_file()  # ids' folders are kept
    assert len(list(out.rglob("*.npy"))) == 2 * len(data) and not list(out.rglob("*.tmp"))


def check_parquet(path, data) -> int:
    """Every frame of `data` {id: (features, timestamps)} in the table at `path`; returns row groups."""
    import fastparquet

    parquet = fastparquet.ParquetFile(str(path))
    table = parquet.to_pandas()
    assert list(table.columns[:3]) == ["video_id", "frame", "timestamp"] and table.shape[1] == 3 + 6
    assert len(table) == sum(len(t) for _, t in data.values())
    for vid, (feats, times) in data.items():
        rows = table[table.video_id == vid]
        assert rows.frame.tolist() == list(range(len(times)))
        np.testing.assert_array_equal(rows[[f"f{j}" for j in range(6)]].to_numpy(), feats.astype(np.float32))
        np.testing.assert_array_equal(rows.timestamp.to_numpy(), times.astype(np.float64))
    meta = parquet.key_value_metadata
    assert json.loads(meta["stan_cache.fingerprint"]) == FP and meta["stan_cache.dtype"] == "float16"
    return len(parquet.row_groups)


def test_parquet_round_trip(cache, tmp_path, monkeypatch):
    from storage import export

    root, data = cache
    assert export.export(root, "parquet", tmp_path / "one.parquet", show_progress=False) == len(data)
    assert check_parquet(tmp_path / "one.parquet", data) == 1
    monkeypatch.setattr(export, "ROW_GROUP_FRAMES", 5)  # a row group every >= 5 frames
    export.export(root, "parquet", tmp_path / "f.parquet", show_progress=False)
    assert check_parquet(tmp_path / "f.parquet", data) == 3  # 3+20 | 0+9 | 4 frames
    assert not list(tmp_path.glob("*.tmp"))


def test_export_of_a_non_cache_is_a_clear_error(tmp_path):
    (tmp_path / "nothing").mkdir()
    proc = run_module("storage", "export", tmp_path / "nothing", "--to", "npy", tmp_path / "o", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
