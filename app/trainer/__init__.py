"""The trainers: the CNN on profitable episodes (``cnn_train``, ``episodes``, ``evaluate``) and the RL
agent with profit-weighted replay (``rl_train``), both recorded through ``app.recording``."""
