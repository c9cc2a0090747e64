"""Errors a user can act on. Each message names the file or folder and the problem."""


class ModelFileError(ValueError):
    """A model folder or ONNX file that cannot be used (missing, wrong kind, untrained)."""
