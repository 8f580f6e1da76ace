"""Dataset loaders: one small module per family, each returning a raw :class:`SeqDataset`.

Raw means as in the files: no filtering, users by first appearance (MovieLens: by user id), each
user's interactions stably sorted by time. :func:`padrec.data.prepare.prepare` does the rest.
"""

from padrec.data.loaders._common import ratings_of
from padrec.data.loaders.amazon import load_amazon
from padrec.data.loaders.mind import load_mind
from padrec.data.loaders.movielens import load_movielens
from padrec.data.loaders.own import load_interactions, load_sequence_file
from padrec.data.loaders.recbole import load_recbole

__all__ = [
    "load_amazon",
    "load_interactions",
    "load_mind",
    "load_movielens",
    "load_recbole",
    "load_sequence_file",
    "ratings_of",
]
