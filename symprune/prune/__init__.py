"""The pruning core: calibration statistics, scores, sparsity patterns, refinements and the layer-wise driver."""
