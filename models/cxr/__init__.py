"""Chest X-ray findings: lung fields and five lesion classes (pre_process -> predict -> post_process)."""
