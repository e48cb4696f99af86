"""Training: TFRecord input pipelines, augmentation and the training loop (``python -m blazepose_tf.train``)."""
