"""RL experiences: transitions built from consecutive predictions of a model on a symbol."""
