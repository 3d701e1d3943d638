"""Retention of gradients and checkpoints: what to keep (v_sessions_protected, policy), `trainsrv gc`."""
