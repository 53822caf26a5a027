"""The accelerator as hardware: folding, cycle and resource models, performance model."""
