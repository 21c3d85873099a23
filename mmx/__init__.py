"""mmx: live multi-camera AI photoshoot toolkit (see DESIGN.md)."""

__version__ = "0.1.0"
