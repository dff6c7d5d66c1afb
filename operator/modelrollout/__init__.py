"""ModelRollout: a Kubernetes operator for progressive, autoscaled ONNX model deployments."""

__version__ = "0.1.0"
