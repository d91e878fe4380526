"""Models and what calls them.

The model ``store``, ``registration`` of a SavedModel, the model contract (``signature``),
the runtimes (``tf_model``, ``inference``), model feeds (``feeds``, ``dataset_feeds``,
``image_features``), ``quantize`` and ``quality``.
"""
