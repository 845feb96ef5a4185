"""HJCAG: hierarchical joint cross-modal attention and gating for multimodal emotion recognition."""
__version__ = "0.1.0"
