"""``trainsrv demo``: the main job end to end on a real or simulated market."""
