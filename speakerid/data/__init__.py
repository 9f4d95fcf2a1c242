"""Data directories, training datasets, samplers and tar shards.

The dataset, sampler and shard names are loaded lazily (PEP 562) so that importing
``speakerid.data.datadir`` stays free of torch (``speakerid.scoring`` imports no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from speakerid.data.datadir import DataDir, read_data_dir, write_data_dir

_LAZY = {
    "ChunkDataset": "speakerid.data.dataset",
    "BatchAugment": "speakerid.data.dataset",
    "collate": "speakerid.data.dataset",
    "ShuffleBatchSampler": "speakerid.data.sampler",
    "PKBatchSampler": "speakerid.data.sampler",
    "SampleKey": "speakerid.data.sampler",
    "ShardDataset": "speakerid.data.shards",
    "write_shards": "speakerid.data.shards",
}

__all__ = ["DataDir", "read_data_dir", "write_data_dir", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speakerid.data' has no attribute {name!r}")
