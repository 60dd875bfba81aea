"""campflow: marketing operations run as Prefect flows."""

__version__ = "0.1.0"
