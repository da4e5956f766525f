"""iv2-train: Training runtime shared by the iv2 stages: configs, torchrun/DeepSpeed start-up, resume, logging."""
