"""FlexiCubes mesh extraction for the InstantMesh LRM (own implementation, tables generated in code)."""

from .extract import flexicubes_extract
from .geometry import FlexiCubesGeometry, build_grid
from .tables import build_tables

__all__ = ["FlexiCubesGeometry", "build_grid", "build_tables", "flexicubes_extract"]
