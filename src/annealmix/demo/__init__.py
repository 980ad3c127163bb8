"""The demo: a small byte-level language model trained under several mixing schedules.

``data`` builds the two domains every Python installation carries; ``model`` is a
small GPT-style causal transformer (needs torch).
"""
