"""iv2-align: InternVideo2 stage 2: video/audio/speech/text contrastive, matching and MLM alignment; retrieval eval."""


from importlib.metadata import version as _version

__version__ = _version("iv2-align")
