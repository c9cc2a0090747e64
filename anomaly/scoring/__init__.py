"""Scoring folders of images with an exported model: `anomaly score`.

Two engines, one results store: `local` (this machine) and `ray_engine` (a Ray cluster)
both list inputs with `inputs`, call the model and build rows with `inference`, and write
the folder described by `schema` through `store`. Nothing here imports torch.
"""
