"""recfunnel: PyTorch-native recommender systems.

Two-tower retrieval as in TensorFlow Recommenders, matrix factorization, ranking, and an HTTP
service, all behind one ``recommend()`` contract. Start with :func:`recfunnel.experiment.train`
or the ``recfunnel`` command line.
"""

__version__ = "0.1.0"

from recfunnel.data import Dataset, Interactions, Vocabulary  # noqa: E402
from recfunnel.errors import RecfunnelError  # noqa: E402

__all__ = ["Dataset", "Interactions", "RecfunnelError", "Vocabulary", "__version__"]
