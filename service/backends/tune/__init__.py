"""The Tune backend: the trainable, warm trial processes, the controller host and result
guard, the shared driver that runs several cells in one Tune loop, and the experiment runner."""
