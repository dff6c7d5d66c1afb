"""Hardware selection: model profiling, the tier policy and cluster capacity checks."""
