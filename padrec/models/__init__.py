"""Recommenders behind one interface (see :mod:`padrec.models.base`); importing registers them."""

from padrec.models import mf, sequential, simple  # noqa: F401
from padrec.models.base import Recommender, get_model_class, model_names, register

__all__ = ["Recommender", "get_model_class", "model_names", "register"]
