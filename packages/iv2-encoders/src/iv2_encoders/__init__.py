"""iv2-encoders: The InternVideo2 video encoder (ViT S14..6B with attention pooling): official weights, feature extraction."""
