"""Feature extraction: per-modality extractors and the L-step alignment."""
