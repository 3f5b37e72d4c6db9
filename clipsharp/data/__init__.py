"""Datasets: specs (``SOURCE[:SPLIT]``), sources opened, labels checked, images streamed."""
