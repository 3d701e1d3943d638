"""Training: the model-agnostic recording layer (session, capture, writer, blobs, checkpoints,
optim, loop) and the CNN trainer built on it (episodes, inputs, evaluate, cnn_train)."""
