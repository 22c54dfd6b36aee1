"""Local Frog (Llama-3) provider: optimum export and ONNX Runtime generation."""
