"""RefServer: a self-hosted server for a library of scientific-paper PDFs."""

__version__ = "0.1.0"
