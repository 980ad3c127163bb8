"""annealmix: mix training-data sources with weights that anneal smoothly over training.

``import annealmix`` needs numpy alone; PyTorch, Hugging Face datasets and
matplotlib are imported only by the modules that use them.
"""

from .metrics import step_metrics
from .mixture import Mixture, Phase
from .order import ORDERS, sample_indices
from .plan import MODES, Batch, Plan, PlanIterator
from .post import MixtureSampler, make_schedule
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
from .shard import MicroBatch, Shard, ShardStream
from .sources import TokenWindows

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Constant",
    "Cosine",
    "Linear",
    "MODES",
    "MicroBatch",
    "Mixture",
    "MixtureSampler",
    "ORDERS",
    "Phase",
    "PiecewiseLinear",
    "Plan",
    "PlanIterator",
    "SCHEDULES",
    "Schedule",
    "Shard",
    "ShardStream",
    "Sigmoid",
    "Step",
    "TokenWindows",
    "__version__",
    "get_schedule",
    "make_schedule",
    "sample_indices",
    "schedule_from_dict",
    "step_metrics",
]
