"""iv2-distill: InternVideo2 stage 1: unmasked token reconstruction from two frozen teachers."""


from importlib.metadata import version as _version

__version__ = _version("iv2-distill")
