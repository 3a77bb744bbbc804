"""Training: data sets and image folders, augmentation, backbones and the training loop.
Plain PyTorch: no Ray, so the trainable, the final test and the benchmarks share it."""
