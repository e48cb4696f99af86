"""Training (``python -m blazepose_tf.train``), one module per job:

* :mod:`~blazepose_tf.training.config` — every setting with its default and help (the flags are generated from it);
  :mod:`~blazepose_tf.training.preflight` — the run's checks that need no TensorFlow (run before it is imported);
* :mod:`~blazepose_tf.training.data`, :mod:`~blazepose_tf.training.detector_data`,
  :mod:`~blazepose_tf.training.augment` — TFRecord input pipelines and augmentation;
* :mod:`~blazepose_tf.training.registry` — preset → model views, which layers train;
* :mod:`~blazepose_tf.training.initialize` — initial weights (``--init_from``);
* :mod:`~blazepose_tf.training.tracker_targets` — tracker loss targets (heatmaps, offsets, masks);
* :mod:`~blazepose_tf.training.weighted_losses` — the weighted loss terms of each task;
* :mod:`~blazepose_tf.training.distillation` — teacher targets (``--distill_from``);
* :mod:`~blazepose_tf.training.evaluation`, :mod:`~blazepose_tf.training.drawing` — dev metrics and sample images;
* :mod:`~blazepose_tf.training.loop` — the resumable loop; :mod:`~blazepose_tf.training.debug` — a look at the
  augmented samples;
* :mod:`~blazepose_tf.training.refit_head` — closed-form refit of a tracker's landmark head (command), with
  :mod:`~blazepose_tf.training.head_residual` (ridge residual, heatmap channels), ``refit_crops`` (training and
  pipeline crops, features), ``refit_search`` (fits, per-group choice on dev) and ``refit_run`` (models, caches).
"""
