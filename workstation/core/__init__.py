"""workstation/core package."""
