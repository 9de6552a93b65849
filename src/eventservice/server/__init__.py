"""HTTP layer: the PanDA dispatcher paths and the /api/v1 JSON API (FastAPI)."""
