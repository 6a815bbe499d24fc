"""Components used only by tests (loaded via MMGRPO_COMPONENT_PREFIXES=helpers.)."""
