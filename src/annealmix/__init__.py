"""annealmix: mix training-data sources with weights that anneal smoothly over training.

``import annealmix`` needs numpy alone; PyTorch, Hugging Face datasets and
matplotlib are imported only by the modules that use them.
"""

from .config import load_config
from .metrics import step_metrics
from .mixture import Mixture, Phase
from .online import OnlinePlan
from .order import indexed, sample_indices
from .plan import MODES, ORDERS, Batch, Plan, Point
from .post import MixtureSampler, make_schedule
from .ramp import BatchSizes
from .schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    Linear,
    PiecewiseLinear,
    Schedule,
    Sigmoid,
    Step,
    get_schedule,
    schedule_from_dict,
)
from .shard import Shard
from .sources import TokenWindows
from .stream import MicroBatch, Position, State, Stream
from .tokens import TokenPlan

__version__ = "0.2.0.dev0"

__all__ = [
    "Batch",
    "BatchSizes",
    "Constant",
    "Cosine",
    "Linear",
    "MODES",
    "MicroBatch",
    "Mixture",
    "MixtureSampler",
    "ORDERS",
    "OnlinePlan",
    "Phase",
    "PiecewiseLinear",
    "Plan",
    "Point",
    "Position",
    "SCHEDULES",
    "Schedule",
    "Shard",
    "Sigmoid",
    "State",
    "Step",
    "Stream",
    "TokenPlan",
    "TokenWindows",
    "__version__",
    "get_schedule",
    "indexed",
    "load_config",
    "make_schedule",
    "sample_indices",
    "schedule_from_dict",
    "step_metrics",
]
