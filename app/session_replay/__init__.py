"""Exact session replay: a recorded session's stored gradients re-applied step by step and checked
bit for bit against its checkpoints (``exact``), applied onto another checkpoint as a new session
(``onto``), the model rebuilt from the session row (``rebuild``) and integrity checks (``verify``)."""
