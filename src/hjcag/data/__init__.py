"""Datasets: the features file format, dataset adapters and the synthetic demo generator."""
