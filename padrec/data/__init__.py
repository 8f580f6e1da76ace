"""Data layer: loaders, preprocessing, cache, registry, download; the canonical form is ``SeqDataset``."""

from padrec.data.dataset import SeqDataset, from_sequences
from padrec.data.errors import DataError
from padrec.data.prepare import BENCHMARK_OPTIONS, PrepOptions, prepare
from padrec.data.registry import DATASETS, dataset_names, load_dataset, load_raw

__all__ = [
    "BENCHMARK_OPTIONS",
    "DATASETS",
    "DataError",
    "PrepOptions",
    "SeqDataset",
    "dataset_names",
    "from_sequences",
    "load_dataset",
    "load_raw",
    "prepare",
]
