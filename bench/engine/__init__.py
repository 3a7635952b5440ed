"""The engine: models and their checks, one cell, parallel backends, the suite runner."""
