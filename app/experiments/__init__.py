"""Walk-forward experiments: which replay policy makes better models, measured out of sample (docs/evidence.md)."""
