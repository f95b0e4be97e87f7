"""medws command-line entry point (dispatches to the packages)."""
