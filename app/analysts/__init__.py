"""The analysts' side: similar setups, session reports."""
