"""What every stage shares: models, the runtime (device, processes, seeding), data and
augmentation, the training loop, checkpoints, inference, metrics and pictures."""
