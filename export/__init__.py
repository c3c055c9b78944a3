"""rnnwatch training side: reference recurrent models, trainer, ONNX step-graph exporter and checker."""
