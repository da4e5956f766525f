"""iv2-distill: InternVideo2 stage 1: unmasked token reconstruction from two frozen teachers."""
