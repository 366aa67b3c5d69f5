"""Reports of validated models: plots (and, later, model cards). Reads results; computes no model."""
