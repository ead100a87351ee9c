"""stgraph: graph-based spatiotemporal modelling of monitoring-station data.

Stations are nodes of a PyTorch Geometric graph; every experiment assigns them the roles
``train`` / ``val`` / ``test``, and a hidden station's values never reach a model, a scaler or a
graph weight before it is scored.
"""

from stgraph.data import StationData
from stgraph.datasets import list_datasets, load_dataset

__version__ = "0.1.0"

__all__ = ["StationData", "load_dataset", "list_datasets", "__version__"]
