"""iv2-data: Video/audio decoding, datasets, shards, synthetic corpus and curation for InternVideo2."""
