"""The recording layer every trainer and replay shares: the session row and its lock (``sessions``,
``session``), one recorded optimizer step (``step``), gradient capture and blobs, the background
writer, checkpoints, stored steps read back, the optimizer rebuilt from config, convergence."""
