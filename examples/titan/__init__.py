"""torchtitan's llama3 debug model, its data an annealing mixture of two domains.

    python examples/titan/prepare.py data/titan          # token files + mix.toml
    ANNEALMIX_MIX=data/titan/mix.toml torchrun --nproc_per_node 8 -m torchtitan.train \\
        --module examples.titan --config llama3_debugmodel_annealmix

(from the repository's root, so that ``examples.titan`` imports). torchtitan finds
``config_registry`` here; the data, the anneal, the global batch, the sequence
length and the steps all come from the mixture config.
"""
