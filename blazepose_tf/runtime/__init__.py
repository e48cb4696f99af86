"""The detector→tracker runtime: model runners and the PoseTracker pipeline."""
