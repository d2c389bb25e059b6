"""The single-process reference: train one task, extract features, evaluate, run the whole protocol."""
