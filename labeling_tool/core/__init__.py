"""labeling_tool/core package."""
