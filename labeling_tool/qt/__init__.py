"""labeling_tool/qt package."""
