"""Stores: SQLite (truth), the PDF files (truth) and ChromaDB (index)."""
