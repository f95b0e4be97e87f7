"""Reading workstation: ``core`` (Qt-free logic) and ``qt`` (PySide6 widgets only)."""
