"""workstation/qt package."""
