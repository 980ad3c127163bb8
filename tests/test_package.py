import subprocess
import sys

import annealmix


def test_import_needs_numpy_and_the_standard_library_only():
    code = (
        "import sys; before = set(sys.modules); import annealmix; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(m for m in new - set(sys.stdlib_module_names) "
        "if m not in ('annealmix', 'numpy') and not m.startswith('_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_frozen_and_sorted():
    assert annealmix.__all__ == sorted(annealmix.__all__)
    assert annealmix.__all__ == [
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
    for name in annealmix.__all__:
        assert hasattr(annealmix, name)
