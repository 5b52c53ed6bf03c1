"""InstantMesh large reconstruction model (LRM)."""
