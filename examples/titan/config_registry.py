"""torchtitan config registry: its llama3 debug model on an annealmix mixture."""

import os

from torchtitan.models.llama3.config_registry import llama3_debugmodel

from annealmix.titan import with_mixture


def llama3_debugmodel_annealmix():
    """llama3's debug model; data, batch, sequence length and steps from the mixture."""
    return with_mixture(llama3_debugmodel(), os.environ.get("ANNEALMIX_MIX", "mix.toml"))
