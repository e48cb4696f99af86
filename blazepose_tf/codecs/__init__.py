"""Target encoding/decoding shared by the runtime, training and export: anchors, detections, ROI geometry,
landmark tensors and heatmaps. Nothing here depends on a model. Runtime decoding (anchors, detection, roi,
landmarks) is NumPy only; the training-side encoders (``heatmap``, ``targets``, ``detector_targets``) use
TensorFlow ops so they run inside tf.data and the training step."""
