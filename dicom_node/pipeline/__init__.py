"""Command-line and demo glue of the analysis pipeline (:mod:`dicom_node.analysis`)."""
