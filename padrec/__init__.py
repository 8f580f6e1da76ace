"""padrec: sequential recommendation made better with language models (PAD, PALR) and baselines."""

__version__ = "0.1.0"
