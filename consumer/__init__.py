"""rnnwatch runtime: stream a Kafka topic through an ONNX step model, per key, and score every point."""
