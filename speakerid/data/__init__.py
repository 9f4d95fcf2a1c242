"""Data directories, training datasets, samplers and tar shards."""

from speakerid.data.datadir import DataDir, read_data_dir, write_data_dir

__all__ = ["DataDir", "read_data_dir", "write_data_dir"]
