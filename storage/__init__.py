"""The feature cache format: shard writers and readers, the index, the fingerprint, `verify`.

Knows nothing of models: features are arrays, a fingerprint is a dict. Also home to the few
helpers both stages share (`storage.settings`, `storage.device`, `storage.files`; see
docs/architecture.md); torch is imported only inside `storage.device.pick_device`.
"""

from storage.cache import (
    CacheReader,
    CacheWriter,
    Video,
    open_cache,
    read_failures,
    shard_paths,
)
from storage.errors import CacheBusy, CacheError, CorruptShardError, FingerprintMismatch
from storage.ids import check_video_id, video_id
from storage.shard import Shard, ShardWriter
from storage.verify import Report, quarantine, rebuild_index, verify, verify_shard

__all__ = [
    "CacheBusy", "CacheError", "CacheReader", "CacheWriter", "CorruptShardError",
    "FingerprintMismatch", "Report", "Shard", "ShardWriter", "Video", "check_video_id",
    "open_cache", "quarantine", "read_failures", "rebuild_index", "shard_paths", "verify",
    "verify_shard", "video_id",
]
