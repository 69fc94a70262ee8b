"""Data: interactions, id vocabularies, datasets, readers, splits and synthetic data."""

from recfunnel.data.dataset import Dataset
from recfunnel.data.interactions import Interactions
from recfunnel.data.io import Columns, dataset_from_files, read_interactions
from recfunnel.data.splits import holdout_users, random_split, temporal_split
from recfunnel.data.synthetic import checkerboard, power_law
from recfunnel.data.vocab import Vocabulary

__all__ = [
    "Columns",
    "Dataset",
    "Interactions",
    "Vocabulary",
    "checkerboard",
    "dataset_from_files",
    "holdout_users",
    "power_law",
    "random_split",
    "read_interactions",
    "temporal_split",
]
