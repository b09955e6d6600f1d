"""Per-document filters: pure Python, no Ray. Each implements refine.document.Filter."""
