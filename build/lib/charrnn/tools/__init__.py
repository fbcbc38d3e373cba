"""Tools beside the workflows: `charrnn bench` (throughput against a bare PyTorch loop) and ONNX export."""
