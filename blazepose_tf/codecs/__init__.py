"""Target encoding/decoding shared by the runtime, training and export: anchors, detections, ROI geometry,
landmark tensors and heatmaps. Nothing here depends on a model or on TensorFlow."""
