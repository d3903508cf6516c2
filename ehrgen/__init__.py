"""ehrgen: synthetic longitudinal EHR generation (prepare -> train -> generate -> evaluate)."""

__version__ = "0.1.0"
