"""The Qt side of the LiverUNet module: parameter node, panels, QTimer scheduler, torch setup.

Only imported inside the Slicer application (it needs qt, ctk and slicer.parameterNodeWrapper).
"""
